"""``python -m rollout --config configs/rollout/default.yaml [--out DIR] [--resume] [key=value ...]``
and ``python -m rollout report DIR [--compare DIR2]``; ``python -m rollout import|rescore|export ...``."""

import sys

from rollout.cli import report_parser, rollout_parser, run_report_command, run_rollout_command

if sys.argv[1:2] in (["import"], ["rescore"], ["export"]):
    from rollout.interop import commands

    command = sys.argv[1]
    sys.exit(
        getattr(commands, f"run_{command}_command")(getattr(commands, f"{command}_parser")().parse_args(sys.argv[2:]))
    )
if sys.argv[1:2] == ["report"]:
    sys.exit(run_report_command(report_parser().parse_args(sys.argv[2:])))
sys.exit(run_rollout_command(rollout_parser().parse_intermixed_args()))  # overrides before and after flags
