"""Every episode of a run through every tool-capable chat template TRL ships (the full sweep).

The fast test (``tests/test_training_data.py``) renders five episodes; this
renders all of a run (default: a new default run, ~164 episodes x 44
templates, a few minutes) as loaded by ``datasets.load_dataset("parquet")``
and prints, per template, the episodes rendered and the problems found
(a template that raised, arguments loaded as text, arguments rendered as a
JSON string).

Run: ``make bench`` (or ``.venv/bin/python tests/bench/render_chat_templates.py [RUN_DIR]``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/

from test_training_data import load_parquet, render_problems, tool_capable_trl_templates  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main(run: Path | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if run is None:
            run = Path(tmp) / "run"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rollout",
                    "--config",
                    str(ROOT / "configs/rollout/default.yaml"),
                    "--out",
                    str(run),
                    "--no-progress",
                ],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        rows = list(load_parquet(run / "episodes", Path(tmp) / "cache"))
        templates = tool_capable_trl_templates()
        problems = render_problems(rows, templates)
        for name in templates:
            found = problems.get(name, [])
            print(f"{name}: {len(rows)} episodes, {len(found)} problems" + (f" (first: {found[0]})" if found else ""))
        print(
            f"{len(templates)} tool-capable templates x {len(rows)} episodes: "
            f"{'all rendered, arguments as JSON objects' if not problems else f'{len(problems)} templates with problems'}"
        )
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
