"""``python -m rollout`` and ``taugym rollout``: run a rollout job from a YAML config."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import socket
import sys
from pathlib import Path

from rollout.store import Store, is_uri


def rollout_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m rollout", description="Generate TauGym episodes on Ray and write them to Parquet."
    )
    parser.add_argument("--config", default="configs/rollout/default.yaml", help="rollout YAML (default: %(default)s)")
    parser.add_argument("--out", help="output directory (default: the config's out)")
    parser.add_argument("--resume", action="store_true", help="skip episodes already in --out and complete the rest")
    parser.add_argument(
        "--retry-errors",
        action="store_true",
        help="with --resume: run the episodes whose row is an error row again; the new rows replace them",
    )
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. actors=4 env.max_steps=10"
    )
    return parser


def run_rollout_command(args: argparse.Namespace) -> int:
    """Run the job the arguments name; misuse is one line on stderr and rc 2, Ctrl-C rc 130."""
    started: list = []  # the job, once built, for the Ctrl-C message
    try:
        return _run(args, started)
    except KeyboardInterrupt:
        print(_interrupted_message(args, started[0] if started else None), file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, started: list) -> int:
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # a local Ray of our own listens on loopback only (ray reads this when imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from rollout.config import RolloutConfig

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = RolloutConfig.from_yaml(args.config).with_overrides(args.overrides)
        out = check_out_folder(args.out, config.out)
        check_ray_address(args.address or os.environ.get("RAY_ADDRESS"))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.retry_errors and not args.resume:
        print("error: --retry-errors completes an existing run; pass it with --resume", file=sys.stderr)
        return 2
    from rollout.job import RolloutJob
    from rollout.summary import format_summary

    job = RolloutJob(
        config,
        out=str(out),
        resume=args.resume,
        address=args.address,
        progress=not args.no_progress,
        retry_errors=args.retry_errors,
    )
    started.append(job)
    try:
        summary = job.run()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"datasets: {job.out}/episodes, {job.out}/steps; summary: {job.out}/summary.json")
    if summary.get("stopped"):
        print(
            f"stopped: {summary['stopped']}. To go on, raise the cap: python -m rollout --config {args.config} "
            f"--out {job.out} --resume max_cost_usd=<more dollars>",
            file=sys.stderr,
        )
        return 3
    return 0


def check_out_folder(out: str | None, default: str) -> Path | str:
    """The output folder, refused (``ValueError``) when it is empty, a file, or cannot be written; creates nothing.

    A URI (``s3://bucket/prefix``, ``gs://…``) is checked by asking its
    filesystem what is there: a missing package, bad credentials or an
    unreachable endpoint are refused here, before any work starts.
    """
    if out is not None and not out.strip():
        raise ValueError(
            "--out is empty; name an output folder such as runs/my-run (or leave --out out for the config's out)"
        )
    flag = "--out" if out is not None else "the config's out"
    location = out if out is not None else default
    if is_uri(location):
        return _check_out_uri(location, flag)
    path = Path(location)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; name a folder (new or holding a dataset to --resume)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {path} cannot be created: {existing} is a file; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{flag} {path} is not writable (no write permission in {existing}); name a folder you can write to"
        )
    return path


def _check_out_uri(location: str, flag: str) -> str:
    import pyarrow.fs as pafs

    store = Store(location)
    try:
        found = store.fs.get_file_info(store.root).type
    except OSError as exc:  # credentials, endpoint, permissions: the filesystem's own words, first line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{flag} {location} cannot be read ({reason}); check the credentials and endpoint "
            "(for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)"
        ) from None
    if found == pafs.FileType.File:
        raise ValueError(f"{flag} {location} is a file; name a folder (new or holding a dataset to --resume)")
    return location.rstrip("/")


def check_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse (``ValueError``) a cluster address nothing listens on, instead of waiting minutes in ``ray.init``."""
    if not address or address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address!r} must look like HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"cannot reach a Ray cluster at {address} ({reason}); check the address, start one with "
            "'ray start --head', or leave out --address and RAY_ADDRESS to run on a local Ray"
        ) from None


def _interrupted_message(args: argparse.Namespace, job) -> str:
    if job is None:
        return "interrupted before any episode ran; nothing was written"
    from rollout.dataset import completed_keys

    try:
        published = len(completed_keys(job.out))
    except Exception:  # a half-written folder must not hide the message
        published = 0
    parts = ["python", "-m", "rollout", "--config", args.config, "--out", str(job.out), "--resume"]
    parts += (["--address", args.address] if args.address else []) + list(args.overrides)
    command = " ".join(shlex.quote(part) for part in parts)
    return (
        f"interrupted: {published} episode(s) are published in {job.out} ({job.written} by this run); "
        f"the rest can be run with: {command}"
    )


def report_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    from rollout.report import report_parser as build

    return build(parser)


def run_report_command(args: argparse.Namespace) -> int:
    from rollout.report import run_report_command as run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    """``taugym rollout ...`` (the console script)."""
    parser = argparse.ArgumentParser(prog="taugym", description="TauGym command line")
    commands = parser.add_subparsers(dest="command", required=True)
    rollout_parser(commands.add_parser("rollout", help="run a rollout job"))
    report_parser(commands.add_parser("report", help="write DIR/report.html: figures and conversations of a run"))
    from rollout.interop import commands as interop

    interop.import_parser(commands.add_parser("import", help="import tau-bench v1 / tau2 results files into a dataset"))
    interop.rescore_parser(
        commands.add_parser("rescore", help="replay results files through TauEnv and score them again")
    )
    interop.export_parser(commands.add_parser("export", help="write a run as tau2 Results files"))
    commands.add_parser(
        "train", help="train, evaluate or export the chat policy (python -m train --help)", add_help=False
    )
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the train package parses its own arguments
        from train.cli import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["rollout"]:  # key=value overrides may come before and after the flags
        return run_rollout_command(commands.choices["rollout"].parse_intermixed_args(argv[1:]))
    args = parser.parse_args(argv)
    if args.command == "report":
        return run_report_command(args)
    if args.command in ("import", "rescore", "export"):
        return getattr(interop, f"run_{args.command}_command")(args)
    return run_rollout_command(args)


if __name__ == "__main__":
    sys.exit(main())
