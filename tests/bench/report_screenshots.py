"""Screenshots of ``taugym report`` in headless Chromium (not in CI: a person looks at them).

Renders the report of two runs and saves, for each, the overview and one
conversation (a failed episode where there is one):

* the default run: ``configs/rollout/default.yaml`` (oracle agent, scripted
  user; every retail and airline task of tau2's base split), run here with
  the rollout job unless ``--default-run DIR`` names one already made;
* a run with errors and mixed rewards: a synthetic LLM-like run
  (``tests/synthetic_runs.py``) with a ``--compare`` run beside it.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). Run::

    .venv/bin/python tests/bench/report_screenshots.py [--out FOLDER] [--default-run DIR]

and open the PNG files it prints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from synthetic_runs import write_synthetic_run  # noqa: E402

from rollout.report import build_report  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=8000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium on PATH: apt-get install -y chromium")


def screenshot(page: Path, fragment: str, target: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:
        url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
        subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--screenshot={target}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    print(target)


def a_failed_episode(page: Path) -> str:
    """The id of a failed episode of the page's index (else the longest)."""
    text = page.read_text()
    start = text.index('<script type="application/json" id="episode-index">') + len(
        '<script type="application/json" id="episode-index">'
    )
    index = json.loads(text[start : text.index("</script>", start)])
    rows = [dict(zip(index["columns"], row)) for row in index["rows"]]
    failed = [r for r in rows if r["failed"] and r["failed"] != "error"]
    return (failed or sorted(rows, key=lambda r: -(r["steps"] or 0)))[0]["id"]


def shoot(page: Path, name: str, out: Path) -> None:
    screenshot(page, "", out / f"{name}-overview.png", "1400,2400")
    screenshot(page, "episode=" + quote(a_failed_episode(page), safe=""), out / f"{name}-conversation.png", "1400,1600")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="runs/report-screenshots", help="folder for the PNG files (default: %(default)s)"
    )
    parser.add_argument("--default-run", help="a run of configs/rollout/default.yaml already made (else one is made)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        default_run = Path(args.default_run) if args.default_run else scratch / "default"
        if not args.default_run:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rollout",
                    "--config",
                    "configs/rollout/default.yaml",
                    "--out",
                    str(default_run),
                    "--no-progress",
                ],
                cwd=REPO,
                check=True,
            )
        shoot(build_report(default_run, path=out / "default-report.html"), "default", out)
        mixed, before = scratch / "mixed", scratch / "before"
        write_synthetic_run(mixed, {"retail": 40, "airline": 20}, trials=4, run_id="after", seed=1)
        write_synthetic_run(before, {"retail": 40, "airline": 20}, trials=4, run_id="before", seed=2)
        shoot(build_report(mixed, compare=before, path=out / "mixed-report.html"), "mixed", out)


if __name__ == "__main__":
    main()
