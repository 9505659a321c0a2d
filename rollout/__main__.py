"""``python -m rollout --config configs/rollout/default.yaml [--out DIR] [--resume] [key=value ...]``"""

import sys

from rollout.cli import rollout_parser, run_rollout_command

sys.exit(run_rollout_command(rollout_parser().parse_args()))
