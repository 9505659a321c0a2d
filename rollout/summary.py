"""The end-of-run summary: episodes, errors, mean reward and pass^k per domain,
counted as the benchmarks count them (an errored episode is a failed run),
for the terminal (:func:`format_summary`) and as the dataset card, the
output folder's ``README.md`` (:func:`dataset_card`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from math import comb
from pathlib import Path
from typing import Any

import pyarrow as pa

from rollout.dataset import EPISODE_SCHEMA, JSON, SCHEMA_VERSION, STEP_SCHEMA, read_episodes


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


_CARD_GOOD_FOR = {
    "oracle": (
        "Demonstrations of tau2's ground truth: the oracle makes every gold tool call of the task, asks the user for "
        "what it needs first (identification, order ids, choices) and tells the user what the task requires. Good "
        "for checking a training pipeline end to end, for supervised warm starts on tool use and for step-level "
        "behaviour cloning. Not good for: preference or reward learning (every episode scores 1.0, there are no "
        "negatives), natural dialogue (the scripted user answers in templated sentences) or measuring an agent. "
        "About 3% of tool calls use a value that is the agent's own (a transfer summary, a date worked out from "
        "the user's words, an id said in another form) and appears nowhere earlier in the conversation."
    ),
    "llm": (
        "Rollouts of an LLM agent: filter by `reward` for supervised fine-tuning, pair trials of the same task "
        "for preference learning (`load_preferences`), or use the step rows (with the behaviour policy's "
        "log-probs where the server returned them) for off-policy RL."
    ),
}


def dataset_card(results: Mapping[str, Any], summary: Mapping[str, Any], run_id: str) -> str:
    """The ``README.md`` a rollout writes into its output folder: what the data is and how to load it.

    ``results`` is the run's ``run.json`` record of what defines the results,
    ``summary`` the run's summary (episodes, errors, rewards per domain).
    """
    agent = dict(results.get("agent") or {})
    env = dict(results.get("env") or {})
    name = agent.get("name", "?")
    domains = "\n".join(
        f"| {d} | {e['episodes']} | {e['errors']} | {'' if e['mean_reward'] is None else format(e['mean_reward'], '.3f')} |"
        for d, e in (summary.get("domains") or {}).items()
    )

    def columns(schema: pa.Schema) -> str:
        return ", ".join(f"`{f.name}` ({'JSON' if f.type == JSON else f.type})" for f in schema)

    return f"""---
configs:
- config_name: episodes
  data_files: "episodes/*/*.parquet"
  default: true
- config_name: steps
  data_files: "steps/*/*.parquet"
tags: [tau-bench, tool-use, agents, conversational]
---
# TauGym rollouts `{run_id}`

Episodes of tau-bench tool-agent-user tasks played in TauGym, written by
`python -m rollout` (TauGym {(results.get("versions") or {}).get("taugym", "?")}), dataset schema
version **{SCHEMA_VERSION}** (in each file's metadata, `taugym.dataset_schema_version`).

## How it was produced
- agent: `{name}`{f" (model `{agent['model']}`)" if agent.get("model") else ""}; user: `{env.get("user_strategy", "?")}`{f" (model `{env.get('user_model')}`)" if env.get("user_strategy") == "llm" else ""}; backend `{env.get("backend", "?")}`
- domains {", ".join(results.get("domains") or [])}; tasks `{results.get("tasks")}`; trials {results.get("trials")}; seed {results.get("seed")}
- the whole record of what defines the results is `run.json`; counts and pass^k are in `summary.json`

| domain | episodes | errors | mean reward |
|---|---|---|---|
{domains}

## What it is good for
{_CARD_GOOD_FOR.get(name, _CARD_GOOD_FOR["llm"])}

## Layout and columns
- `episodes/<domain>/*.parquet`: one row per episode: {columns(EPISODE_SCHEMA)}.
- `steps/<domain>/*.parquet`: one row per action: {columns(STEP_SCHEMA)}.

`messages` is the conversation in OpenAI / Hugging Face chat format, system prompt
first; tool calls are `{{id, type, function: {{name, arguments}}}}` with `arguments` a
JSON object. An episode the agent ended shows its `[finish]` as the last assistant
turn; one the user ended shows the user's last turn (`###STOP###`, `###TRANSFER###`).
JSON columns (`arguments`, `tools`, `reward_breakdown`) are Arrow's `arrow.json` type
(Parquet's JSON logical type): Hugging Face `datasets` gives dicts and lists, pyarrow,
pandas and Ray Data give the text (`json.loads` it).

A step row's `prompt` is the conversation the agent acted on and `completion` the
assistant message of its action (an action that added no turn, such as `[finish]` or a
refused action, is shown as its text); `completion_token_ids` / `completion_logprobs`
are the behaviour policy's tokens and log-probs where its server returned them, else
null. `observation` / `next_observation` are the env's feedback text before and after.

## Loading
```python
import datasets
sft = datasets.load_dataset("parquet", data_files="episodes/*/*.parquet", split="train")
# TRL: SFTTrainer(model, train_dataset=sft, args=SFTConfig(max_length=8192, assistant_only_loss=True))
# TRL's default max_length=1024 drops every episode: the system prompt and tools alone are longer.
steps = datasets.load_dataset("parquet", data_files="steps/*/*.parquet", split="train")  # prompt/completion
import pandas; df = pandas.read_parquet("episodes", dtype_backend="pyarrow")  # cells as lists of dicts
from rollout.training_data import load_sft, load_prompt_completion, load_preferences, load_steps_ray
```
"""
