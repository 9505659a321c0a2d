"""The command lines ``taugym import``, ``taugym rescore`` and ``taugym export`` (and ``python -m rollout ...``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rollout.interop.records import FORMATS


def _results_files_parser(
    parser: argparse.ArgumentParser | None, command: str, description: str, files: str
) -> argparse.ArgumentParser:
    """The parser of a command that reads results files: ``FILE...``, ``--format`` and ``--domain``."""
    parser = parser or argparse.ArgumentParser(prog=f"python -m rollout {command}")
    parser.description = description
    parser.add_argument("files", nargs="+", metavar="FILE", help=files)
    parser.add_argument(
        "--format", default="auto", choices=["auto", *FORMATS], help="the files' format (default: %(default)s)"
    )
    parser.add_argument("--domain", help="v1 files: the domain, where the system prompt does not say it")
    return parser


def import_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = _results_files_parser(
        parser,
        "import",
        "Import tau-bench v1 results files and tau2 Results files into DIR/episodes and DIR/steps. "
        "Exit status: 0 every record imported, 1 some records refused (the rest imported), 2 misuse.",
        "results files (JSON)",
    )
    parser.add_argument("--out", required=True, help="dataset folder (new, or one to add to)")
    parser.add_argument("--agent-model", help="the agent's model, for files that do not name it (v1)")
    parser.add_argument("--user-model", help="the user simulator's model, for files that do not name it (v1)")
    parser.add_argument("--run-id", help="the run_id of the imported rows (default: import-<time>)")
    return parser


def run_import_command(args: argparse.Namespace) -> int:
    from rollout.cli import check_out_folder
    from rollout.interop.importing import format_import, import_files

    try:
        out = check_out_folder(args.out, args.out)
        result = import_files(
            args.files,
            str(out),
            format=args.format,
            domain=args.domain,
            agent_model=args.agent_model,
            user_model=args.user_model,
            run_id=args.run_id,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_import(result))
    if not result.written and result.problems:
        return 2 if all(p.position is None for p in result.problems) else 1
    return 1 if result.problems else 0


def rescore_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = _results_files_parser(
        parser,
        "rescore",
        "Replay recorded trajectories through TauEnv (recorded agent actions, replay user) and score "
        "them again. Exit status 0 when the input could be processed, 2 when none of it could.",
        "results files (v1 or tau2 JSON)",
    )
    parser.add_argument("--backend", required=True, choices=["tau_bench", "tau2"], help="the backend that scores them")
    parser.add_argument("--report", help="write the per-trajectory report here (a JSON list)")
    return parser


def run_rescore_command(args: argparse.Namespace) -> int:
    from rollout.interop.rescoring import format_agreement, rescore_files

    try:
        reads, report = rescore_files(args.files, backend=args.backend, format=args.format, domain=args.domain)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for read in reads:
        for problem in read.problems:
            print(f"refused: {problem}", file=sys.stderr)
        for note in read.notes:
            print(f"note: {read.file}: {note}", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(
            json.dumps([entry.as_dict() for entry in report], indent=1) + "\n", encoding="utf-8"
        )
    print(format_agreement(report))
    return 0 if report or not any(r.problems for r in reads) else 2


def export_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m rollout export")
    parser.description = (
        "Write a TauGym run (DIR/episodes) as tau2 Results files, one per domain, for tau2 view and tau2 submit."
    )
    parser.add_argument("dir", metavar="DIR", help="the run's dataset folder")
    parser.add_argument("--format", default="tau2", choices=["tau2"], help="the file format (default: %(default)s)")
    parser.add_argument("--out", required=True, help="folder for the files (<domain>.json each)")
    return parser


def run_export_command(args: argparse.Namespace) -> int:
    from rollout.interop.exporting import export_tau2

    try:
        written = export_tau2(args.dir, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, count, warnings in written:
        print(f"{path}: {count} simulation(s)")
        for warning in warnings:
            print(f"  note: {warning}")
    return 0
