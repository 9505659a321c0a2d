"""Training data from a rollout dataset: its published rows as the datasets TRL and RLlib read.

:func:`load_sft` (episodes filtered by reward, a ``datasets.Dataset`` for
chat fine-tuning), :func:`load_prompt_completion` (step rows for TRL),
:func:`load_preferences` (chosen/rejected pairs from repeated trials) and
:func:`load_steps_ray` (step rows as a Ray ``Dataset`` for offline RL). They
read only what is published (see :mod:`rollout.dataset`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rollout.dataset import (
    JSON,
    MESSAGE_TYPE,
    STEP_SCHEMA,
    STEPS_DIR,
    PathLike,
    checked_table,
    column_names,
    published_files,
    read_episodes,
    read_steps,
)
from rollout.store import Store

__all__ = ["load_sft", "load_prompt_completion", "load_preferences", "load_steps_ray"]


def _hf_dataset(table: pa.Table) -> Any:
    """An Arrow table as a Hugging Face ``datasets.Dataset`` (JSON columns decode to dicts and lists)."""
    import datasets

    return datasets.Dataset(table)


def load_sft(out_dir: PathLike, min_reward: float | None = 1.0) -> Any:
    """Episodes for chat fine-tuning (TRL ``SFTTrainer``) as a ``datasets.Dataset``.

    Rows are the episodes scored at least ``min_reward`` (None: every
    episode that did not fail), with ``messages`` and ``tools`` (what TRL
    reads) and ``domain``, ``task_id``, ``trial``, ``reward``. Tool-call
    arguments and tool schemas are dicts and lists. Mind TRL's
    ``SFTConfig(max_length=1024)`` default: the system prompt and tools alone
    are longer, so set ``max_length`` (about 8192 tokens for tau2 episodes).
    """
    table = read_episodes(out_dir, columns=["domain", "task_id", "trial", "reward", "error", "messages", "tools"])
    keep = pc.invert(table["error"]) if min_reward is None else pc.greater_equal(table["reward"], min_reward)
    return _hf_dataset(table.filter(pc.fill_null(keep, False)).drop_columns(["error"]))


def load_prompt_completion(out_dir: PathLike, min_reward: float | None = 1.0) -> Any:
    """Step rows as a TRL prompt-completion ``datasets.Dataset`` (``prompt``, ``completion``, ``tools``).

    Only the steps of episodes scored at least ``min_reward`` (None: all
    steps); ``episode_id``, ``step_index`` and ``reward`` come along. Every
    action is one row: the conversation so far is the prompt, the agent's
    next assistant message the completion.
    """
    steps = read_steps(out_dir, columns=["episode_id", "step_index", "reward", "prompt", "completion", "tools"])
    if min_reward is not None:
        episodes = read_episodes(out_dir, columns=["episode_id", "reward"])
        good = episodes.filter(pc.fill_null(pc.greater_equal(episodes["reward"], min_reward), False))["episode_id"]
        steps = steps.filter(pc.is_in(steps["episode_id"], good))
    return _hf_dataset(steps)


def load_preferences(out_dir: PathLike) -> Any:
    """Chosen/rejected pairs from repeated trials (``trials > 1``) in TRL's preference format.

    For each task, the first best-scored trial is ``chosen`` and every trial
    scored lower is ``rejected`` in one pair each (error rows are left out).
    Columns: ``prompt`` (the turns both conversations share, up to where they
    part), ``chosen`` and ``rejected`` (the rest of each), ``tools``,
    ``domain``, ``task_id``, ``score_chosen``, ``score_rejected``: what TRL's
    ``DPOTrainer`` and (unpaired) ``KTOTrainer`` read. A ``datasets.Dataset``,
    empty when no task has two different scores.
    """
    table = read_episodes(out_dir, columns=["domain", "task_id", "trial", "reward", "error", "messages", "tools"])
    by_task: dict[tuple[str, str], list[dict]] = {}
    for row in table.filter(pc.invert(table["error"])).to_pylist():
        if row["reward"] is not None:
            by_task.setdefault((row["domain"], row["task_id"]), []).append(row)
    pairs = []
    for (domain, task_id), rows in sorted(by_task.items()):
        rows.sort(key=lambda r: (-r["reward"], r["trial"]))
        best = rows[0]
        for worse in rows[1:]:
            if worse["reward"] >= best["reward"]:
                continue
            shared = 0
            for a, b in zip(best["messages"], worse["messages"]):
                if a != b:
                    break
                shared += 1
            while shared and best["messages"][shared - 1]["role"] == "assistant":  # a completion starts with the agent
                shared -= 1
            pairs.append(
                {
                    "prompt": best["messages"][:shared],
                    "chosen": best["messages"][shared:],
                    "rejected": worse["messages"][shared:],
                    "tools": best["tools"],
                    "domain": domain,
                    "task_id": task_id,
                    "score_chosen": best["reward"],
                    "score_rejected": worse["reward"],
                }
            )
    messages = pa.list_(MESSAGE_TYPE)
    schema = pa.schema(
        [
            ("prompt", messages),
            ("chosen", messages),
            ("rejected", messages),
            ("tools", JSON),
            ("domain", pa.string()),
            ("task_id", pa.string()),
            ("score_chosen", pa.float64()),
            ("score_rejected", pa.float64()),
        ]
    )
    return _hf_dataset(checked_table(pairs, schema, "preference"))


def load_steps_ray(out_dir: PathLike, columns: Iterable[str] | None = None, concurrency: int = 1) -> Any:
    """The published step rows as a Ray ``Dataset`` (offline RL), read by at most ``concurrency`` tasks.

    ``concurrency`` bounds the read tasks: Ray Data's default takes every
    CPU, which on a small machine starves the actors that consume the rows.
    Starts Ray locally if it is not running.
    """
    import ray

    names = column_names(STEP_SCHEMA, columns, STEPS_DIR)
    paths = published_files(out_dir, STEPS_DIR)
    if not paths:
        return ray.data.from_arrow(read_steps(out_dir, columns=names))
    return ray.data.read_parquet(
        paths, columns=names, concurrency=concurrency, partitioning=None, filesystem=Store(out_dir).fs
    )
