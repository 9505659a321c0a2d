"""``taugym import``: benchmark results files into the rollout datasets.

Each good record becomes one episode row (built by
:func:`rollout.dataset.episode_row_from_info`, so it has the one schema) and
its step rows: one per agent action of the recorded conversation, the action
written in TauEnv's protocol (``[action] <message>`` or ``[answer] {"name":
..., "arguments": {...}}``), the observation the text the env would have
shown (``User: ...``, ``Tool <name>: ...``), the recorded reward on the last
step. Messages the agent did not choose (tau2's greeting) are no actions.

The row keeps the file's reward (``reward``), its models (``agent_model``,
``user_model``: tau2 files name them, v1 files do not, pass them), its
reward info (``reward_breakdown``) and where it came from (``source_format``,
``source_file``, ``source_position``). Every record is checked before
anything is written, and all rows are published in one commit at the end:
an import that fails or is stopped leaves nothing visible.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import taugym
from rollout.dataset import (
    ParquetEpisodeWriter,
    completed_keys,
    episode_row_from_info,
    step_row,
)
from rollout.interop.records import FileRead, Problem, Trajectory, read_results_files

_NEVER = 2**62  # publish once, at close


@dataclass
class ImportResult:
    """What an import read and wrote."""

    out: str
    run_id: str
    reads: list[FileRead] = field(default_factory=list)
    written: int = 0
    problems: list[Problem] = field(default_factory=list)


def agent_turns(messages: list[dict]) -> list[tuple[Any, str, list[dict], list[dict]]]:
    """``(action, observation after it, prompt, completion)`` for each agent action of an OpenAI conversation.

    ``action`` is an OpenAI tool call dict or the text of a message to the
    user; ``prompt`` is the conversation before the assistant message and
    ``completion`` that message with just this action. Assistant messages
    before the first user message are the benchmark's greeting, not the
    agent's choice.
    """
    turns: list[tuple[Any, str, list[dict], list[dict]]] = []
    results = {m.get("tool_call_id"): m for m in messages if m["role"] == "tool"}
    seen_user = False
    for index, message in enumerate(messages):
        if message["role"] == "user" and not message.get("tool_calls"):
            seen_user = True
            continue
        if message["role"] != "assistant" or not seen_user:
            continue
        for call in message.get("tool_calls") or []:
            result = results.get(call.get("id"))
            name = call["function"]["name"]
            completion = [{"role": "assistant", "content": None, "tool_calls": [call]}]
            turns.append(
                (call, f"Tool {name}: {result.get('content') if result else ''}", messages[:index], completion)
            )
        if message.get("content") and not message.get("tool_calls"):
            reply = next((m for m in messages[index + 1 :] if m["role"] == "user" and not m.get("tool_calls")), None)
            completion = [{"role": "assistant", "content": message["content"]}]
            turns.append(
                (message["content"], f"User: {reply['content']}" if reply else "", messages[:index], completion)
            )
    return turns


def action_text(action: Any) -> str:
    """An agent action in TauEnv's protocol, as the steps dataset stores actions."""
    if isinstance(action, str):
        return f"[action] {action}"
    arguments = action["function"].get("arguments")
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    return "[answer] " + json.dumps({"name": action["function"]["name"], "arguments": arguments}, ensure_ascii=False)


def first_observation(messages: list[dict]) -> str:
    """What the agent saw before its first action: the user's opening turn."""
    opening = next((m for m in messages if m["role"] == "user" and not m.get("tool_calls")), None)
    return f"User: {opening['content']}" if opening else ""


def rows_for(trajectory: Trajectory, run_id: str) -> tuple[dict, list[dict]]:
    """The episode row and step rows of one trajectory."""
    turns = agent_turns(trajectory.messages)
    info = {
        "task_id": trajectory.task_id,
        "domain": trajectory.domain,
        "backend": trajectory.backend,
        "messages": trajectory.messages,
        "tools": trajectory.tools,
        "termination": trajectory.termination,
        "evaluation": trajectory.reward_info,
    }
    truncated = trajectory.termination == "max_steps"
    row = episode_row_from_info(
        info,
        run_id=run_id,
        trial=trajectory.trial,
        seed=trajectory.seed,
        agent="llm",
        agent_model=trajectory.agent_model,
        user_model=trajectory.user_model,
        user_strategy="llm",
        duration_s=trajectory.duration_s,
        reward=trajectory.reward,
        terminated=not truncated,
        truncated=truncated,
        num_steps=len(turns),
        taugym_version=taugym.__version__,
        llm_usage={"cost_usd": trajectory.cost_usd},
        episode_id=f"{run_id}:{trajectory.domain}:{trajectory.task_id}:{trajectory.trial}",
        source={"format": trajectory.format, "file": trajectory.file, "position": trajectory.position},
    )
    steps = []
    observation = first_observation(trajectory.messages)
    for index, (action, after, prompt, completion) in enumerate(turns):
        last = index == len(turns) - 1
        steps.append(
            step_row(
                row,
                step_index=index,
                observation=observation,
                action=action_text(action),
                reward=float(trajectory.reward or 0.0) if last else 0.0,
                next_observation=after,
                terminated=last and not truncated,
                truncated=last and truncated,
                prompt=prompt,
                completion=completion,
            )
        )
        observation = after
    return row, steps


def import_files(
    paths: list[str],
    out: str,
    *,
    format: str = "auto",
    domain: str | None = None,
    agent_model: str | None = None,
    user_model: str | None = None,
    run_id: str | None = None,
) -> ImportResult:
    """Import ``paths`` into ``out`` (see the module docstring); bad records are returned, not raised."""
    run_id = run_id or time.strftime("import-%Y%m%d-%H%M%S")
    existing = completed_keys(out) if (Path(out) / "_manifest").is_dir() else set()
    reads = read_results_files(
        paths, format=format, domain=domain, agent_model=agent_model, user_model=user_model, seen=existing
    )
    result = ImportResult(out=str(out), run_id=run_id, reads=reads)
    rows = []
    for read in reads:
        for trajectory in read.trajectories:
            try:
                rows.append(rows_for(trajectory, run_id))
            except (ValueError, KeyError, TypeError) as exc:
                read.problems.append(Problem(read.file, trajectory.position, f"cannot be stored: {exc}"))
        result.problems.extend(read.problems)
    if rows:
        with ParquetEpisodeWriter(
            out,
            run_id,
            writer_id="import",
            max_rows_per_file=_NEVER,
            max_seconds_per_file=float(_NEVER),
        ) as writer:
            for row, steps in rows:
                writer.write(row, steps)
        result.written = len(rows)
    return result


def format_import(result: ImportResult) -> str:
    """The import's report: per file, format and counts, each bad record with its position, notes."""
    lines = []
    for read in result.reads:
        lines.append(
            f"{read.file}: {read.format or 'unreadable'}, {len(read.trajectories)} record(s) read, "
            f"{len(read.problems)} refused"
        )
        lines += [f"  refused: {problem}" for problem in read.problems]
        lines += [f"  note: {note}" for note in read.notes]
    lines.append(f"imported {result.written} episode(s) into {result.out} (run_id {result.run_id})")
    return "\n".join(lines)
