"""The end-of-run summary: episodes, errors, mean reward and pass^k per domain,
counted as the benchmarks count them (an errored episode is a failed run)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from math import comb
from pathlib import Path

from rollout.dataset import read_episodes


def is_success(reward: float | None) -> bool:
    """tau-bench counts an episode a success when its reward is 1 (within 1e-6)."""
    return reward is not None and reward >= 1 - 1e-6


def pass_hat_k(successes_per_task: Iterable[tuple[int, int]], k: int) -> float:
    """tau-bench's pass^k: the mean over tasks of C(c, k) / C(n, k),
    for a task run n times with c successes (every task must have n >= k)."""
    values = [comb(c, k) / comb(n, k) for n, c in successes_per_task]
    return sum(values) / len(values) if values else float("nan")


def summarize(out_dir: Path) -> dict:
    """Summary of every episode in the dataset at ``out_dir`` (all runs, resumes included)."""
    table = read_episodes(out_dir).select(["domain", "task_id", "trial", "reward", "error"])
    return summarize_rows(table.to_pylist())


def summarize_rows(rows: Iterable[dict]) -> dict:
    """Episodes, errors, mean reward and pass^k per domain, counted as tau-bench and tau2 count.

    An errored episode (a provider down, an actor lost) is a failed run: it
    scores 0 in the mean and in pass^k, as v1's ``run.py`` and tau2's
    ``compute_metrics`` score it, and the ``errors`` count says how many
    there were. pass^k is given for k = 1 … the fewest trials any task of
    the domain has (tau2's rule). ``rows`` are episode rows (``domain``,
    ``task_id``, ``reward``, ``error``).
    """
    per_domain: dict[str, dict] = defaultdict(
        lambda: {"episodes": 0, "errors": 0, "rewards": [], "tasks": defaultdict(lambda: [0, 0])}
    )
    for row in rows:
        entry = per_domain[row["domain"]]
        reward = 0.0 if row["error"] else (row["reward"] or 0.0)
        entry["episodes"] += 1
        entry["errors"] += bool(row["error"])
        entry["rewards"].append(reward)
        counts = entry["tasks"][row["task_id"]]
        counts[0] += 1
        counts[1] += is_success(reward)
    summary: dict = {"episodes": 0, "errors": 0, "domains": {}}
    for domain, entry in sorted(per_domain.items()):
        trials = min((n for n, _ in entry["tasks"].values()), default=0)
        summary["domains"][domain] = {
            "episodes": entry["episodes"],
            "errors": entry["errors"],
            "mean_reward": sum(entry["rewards"]) / len(entry["rewards"]) if entry["rewards"] else None,
            "pass^k": {str(k): pass_hat_k(entry["tasks"].values(), k) for k in range(1, trials + 1)},
        }
        summary["episodes"] += entry["episodes"]
        summary["errors"] += entry["errors"]
    return summary


def format_summary(summary: dict) -> str:
    """The summary as a few lines for the terminal."""
    lines = [f"episodes {summary['episodes']}, errors {summary['errors']}"]
    for domain, entry in summary["domains"].items():
        mean = entry["mean_reward"]
        passes = ", ".join(f"pass^{k} {v:.3f}" for k, v in entry["pass^k"].items())
        lines.append(
            f"  {domain}: {entry['episodes']} episodes, {entry['errors']} errors (scored 0), mean reward {mean:.3f}"
        )
        if passes:
            lines[-1] += f", {passes}"
    return "\n".join(lines)
