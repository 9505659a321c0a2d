"""Dataset benchmark: the default run (`make rollout`'s config), before and after dataset schema 2.

Prints, for the default run (tau2 retail + airline, oracle, scripted user):
* rewards: episodes at 1.0 of all (goal: every one);
* groundedness of the demonstrations: the share of tool calls whose string
  argument values all appear verbatim earlier in a user turn or a tool
  result (:func:`taugym.agents.oracle.grounded_calls`; goal >= 0.95);
* bytes on disk per step (``steps/``) and per episode (``episodes/``);
  goal: bytes per step within 3x of schema 1's.

"Before" is the same run written by the code at ``BEFORE_REF`` (schema 1,
checked out with ``git archive`` into a temporary folder); "after" is this
working tree. Either can be an existing run folder instead:
``bench_dataset.py [--before DIR] [--after DIR]``.

Run: ``make bench`` (or ``.venv/bin/python tests/bench/bench_dataset.py``); ~10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[2]
BEFORE_REF = os.environ.get("BENCH_DATASET_BEFORE_REF", "f90c8a3")  # main before dataset schema 2
CONFIG = ROOT / "configs/rollout/default.yaml"


def run_default(out: Path, code: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "rollout", "--config", str(CONFIG), "--out", str(out), "--no-progress"],
        cwd=code,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def figures(out: Path) -> dict:
    from taugym.agents.oracle import grounded_calls

    episodes = ds.dataset(out / "episodes", format="parquet", partitioning="hive")
    table = episodes.to_table(columns=["reward", "messages"])
    grounded = total = 0
    for messages in table["messages"].to_pylist():
        g, t = grounded_calls(messages)
        grounded, total = grounded + g, total + t
    steps = ds.dataset(out / "steps", format="parquet", partitioning="hive")
    size = {kind: sum(f.stat().st_size for f in (out / kind).rglob("*.parquet")) for kind in ("episodes", "steps")}
    n_steps = steps.count_rows()
    return {
        "episodes": table.num_rows,
        "reward_1": sum(r == 1.0 for r in table["reward"].to_pylist()),
        "grounded": grounded,
        "tool_calls": total,
        "steps": n_steps,
        "bytes_per_step": size["steps"] / max(n_steps, 1),
        "bytes_per_episode": size["episodes"] / max(table.num_rows, 1),
        "steps_bytes_per_episode": size["steps"] / max(table.num_rows, 1),
    }


def show(label: str, f: dict) -> None:
    print(
        f"{label}: {f['reward_1']}/{f['episodes']} episodes at reward 1.0; groundedness "
        f"{f['grounded']}/{f['tool_calls']} = {f['grounded'] / max(f['tool_calls'], 1):.3f} (goal >= 0.95); "
        f"{f['steps']} steps, {f['bytes_per_step']:.0f} B/step (steps/), {f['bytes_per_episode']:.0f} B/episode "
        f"(episodes/), {f['steps_bytes_per_episode']:.0f} B of steps/ per episode"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an existing schema-1 run of the default config")
    parser.add_argument("--after", type=Path, help="an existing run of the default config by this tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before, after = args.before, args.after
        if before is None:
            code = Path(tmp) / "before-code"
            code.mkdir()
            archive = subprocess.run(["git", "archive", BEFORE_REF], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
            before = Path(tmp) / "before"
            run_default(before, code)
        if after is None:
            after = Path(tmp) / "after"
            run_default(after, ROOT)
        b, a = figures(before), figures(after)
        show(f"before ({BEFORE_REF if args.before is None else args.before})", b)
        show("after (this tree)", a)
        ratio = a["bytes_per_step"] / b["bytes_per_step"]
        print(f"bytes per step after/before: {ratio:.2f}x (goal <= 3x)")
        print(json.dumps({"before": b, "after": a}))
        ok = a["reward_1"] == a["episodes"] and ratio <= 3.0
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
