"""Re-score the 20 real GPT-4o airline trajectories against the original tau-bench (a local check, not CI).

    .venv/bin/python scripts/rescore_v1_sample.py /path/to/tau-bench-checkout [--report REPORT.json]

The tau-bench checkout (github.com/sierra-research/tau-bench) is put on the
Python path read-only for this run; it is never installed or committed here.
Prints the agreement table; exit 0 when all 20 agree with their recorded rewards.
"""

import argparse
import json
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tau-bench-v1" / "gpt-4o-airline-sample.json"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("tau_bench_source", help="a checkout of the original tau-bench (holds tau_bench/)")
parser.add_argument("--sample", default=str(SAMPLE), help="the v1 results file (default: %(default)s)")
parser.add_argument("--report", help="write the per-trajectory report here")
args = parser.parse_args()
sys.path.insert(0, str(Path(args.tau_bench_source).resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rollout.interop.rescoring import format_agreement, rescore_files  # noqa: E402  (after the path is set)

reads, report = rescore_files([args.sample], backend="tau_bench")
for read in reads:
    for problem in read.problems:
        print(f"refused: {problem}", file=sys.stderr)
print(format_agreement(report))
for entry in report:
    if not entry.agree:
        print(
            f"{entry.task_id} trial {entry.trial}: recorded {entry.recorded_reward}, now {entry.reward}: {entry.reason}"
        )
if args.report:
    Path(args.report).write_text(json.dumps([e.as_dict() for e in report], indent=1), encoding="utf-8")
agreed = sum(e.agree for e in report)
print(f"{agreed}/{len(report)} agree")
sys.exit(0 if report and agreed == len(report) else 1)
