"""``python -m rollout`` and ``taugym rollout``: run a rollout job from a YAML config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def rollout_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m rollout", description="Generate TauGym episodes on Ray and write them to Parquet.")
    parser.add_argument("--config", default="configs/rollout/default.yaml", help="rollout YAML (default: %(default)s)")
    parser.add_argument("--out", help="output directory (default: the config's out)")
    parser.add_argument("--resume", action="store_true", help="skip episodes already in --out and complete the rest")
    parser.add_argument("--retry-errors", action="store_true",
                        help="with --resume: run the episodes whose row is an error row again; the new rows replace them")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. actors=4 env.max_steps=10")
    return parser


def run_rollout_command(args: argparse.Namespace) -> int:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # a local Ray of our own listens on loopback only (ray reads this when imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from rollout.config import RolloutConfig
    from rollout.job import RolloutJob
    from rollout.summary import format_summary

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = RolloutConfig.from_yaml(args.config).with_overrides(args.overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.retry_errors and not args.resume:
        print("error: --retry-errors completes an existing run; pass it with --resume", file=sys.stderr)
        return 2
    job = RolloutJob(config, out=args.out, resume=args.resume, address=args.address, progress=not args.no_progress,
                     retry_errors=args.retry_errors)
    try:
        summary = job.run()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"datasets: {job.out / 'episodes'}, {job.out / 'steps'}; summary: {job.out / 'summary.json'}")
    if summary.get("stopped"):
        print(f"stopped: {summary['stopped']}. To go on, raise the cap: python -m rollout --config {args.config} "
              f"--out {job.out} --resume max_cost_usd=<more dollars>", file=sys.stderr)
        return 3
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``taugym rollout ...`` (the console script)."""
    parser = argparse.ArgumentParser(prog="taugym", description="TauGym command line")
    commands = parser.add_subparsers(dest="command", required=True)
    rollout_parser(commands.add_parser("rollout", help="run a rollout job"))
    args = parser.parse_args(argv)
    return run_rollout_command(args)


if __name__ == "__main__":
    sys.exit(main())
