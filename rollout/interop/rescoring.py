"""``taugym rescore``: replay recorded trajectories through TauEnv and score them again.

Each trajectory is played on a ``TauEnv`` of its domain with the replay user
(``user_strategy="replay"``, loaded with the record's user turns) and the
benchmark's own step limit (v1: 30 agent actions, as its ``run.py``; tau2:
the file's ``max_steps``, which counts more than TauEnv's steps, so it never
cuts a replay earlier than tau2 did). The agent's recorded actions are sent
in order (tool calls with their recorded ids); when they run out and the
conversation is not over, a record the agent ended (v1's transfer tool,
tau2's ``agent_stop``) sends ``[finish]``, and a record that ended early
(max steps, errors) scores 0, as both benchmarks score premature endings.

Where the new reward differs from the recorded one, ``reason`` says why:
the first tool result that differs from the record, the replay user's
notes, and the checks of the two verdicts that differ (v1: the gold data
hash, the data hash check, each output; tau2: the DB check, each action and
communicate check).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from rollout.interop.importing import agent_turns
from rollout.interop.records import FileRead, Problem, Trajectory, read_results_files

V1_MAX_STEPS = 30
"""tau-bench v1's ``run.py`` default ``--max-num-steps``: agent actions per episode."""


@dataclass
class Rescored:
    """One line of the report (``REPORT.json``)."""

    domain: str
    task_id: str
    trial: int
    recorded_reward: float | None
    reward: float | None
    agree: bool
    reason: str | None
    file: str
    position: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rescore_files(
    paths: list[str], *, backend: str, format: str = "auto", domain: str | None = None
) -> tuple[list[FileRead], list[Rescored]]:
    """Read and re-score every trajectory of ``paths`` on ``backend``."""
    if backend not in ("tau_bench", "tau2"):
        raise ValueError(f"backend must be 'tau_bench' or 'tau2', got {backend!r}")
    reads = read_results_files(paths, format=format, domain=domain)
    envs: dict[tuple[str, int], Any] = {}
    report = []
    for read in reads:
        for trajectory in read.trajectories:
            if trajectory.backend != backend:
                read.problems.append(
                    Problem(
                        read.file,
                        trajectory.position,
                        (f"a {trajectory.format} record is scored by backend {trajectory.backend!r}, not {backend!r}"),
                    )
                )
                continue
            report.append(rescore(trajectory, backend, envs))
    return reads, report


def _env(envs: dict, backend: str, domain: str, max_steps: int) -> Any:
    from taugym import TauEnv

    key = (domain, max_steps)
    if key not in envs:
        envs[key] = TauEnv(backend=backend, task_category=domain, user_strategy="replay", max_steps=max_steps)
    return envs[key]


def rescore(trajectory: Trajectory, backend: str, envs: dict | None = None) -> Rescored:
    """Replay one trajectory and compare its new reward with the recorded one."""
    envs = {} if envs is None else envs
    result = Rescored(
        domain=trajectory.domain,
        task_id=trajectory.task_id,
        trial=trajectory.trial,
        recorded_reward=trajectory.reward,
        reward=None,
        agree=False,
        reason=None,
        file=trajectory.file,
        position=trajectory.position,
    )
    limit = (
        V1_MAX_STEPS
        if backend == "tau_bench"
        else max(trajectory.max_steps or 0, len(agent_turns(trajectory.messages)) + 1)
    )
    try:
        env = _env(envs, backend, trajectory.domain, limit)
        reward, info, premature = _replay(env, trajectory)
    except Exception as exc:  # one trajectory that cannot be replayed must not stop the others
        result.reason = f"could not be replayed: {type(exc).__name__}: {str(exc)[:300]}"
        return result
    result.reward = reward
    result.agree = trajectory.reward is not None and abs(reward - trajectory.reward) < 1e-9
    if not result.agree:
        reasons = ([premature] if premature else []) + _tool_divergence(trajectory.messages, info.get("messages", []))
        reasons += info.get("user_notes", [])[:3]
        reasons += _verdict_differences(trajectory, info.get("evaluation"))
        result.reason = "; ".join(reasons) or "the verdicts differ without a check that says why"
    return result


def _replay(env: Any, trajectory: Trajectory) -> tuple[float, dict, str | None]:
    """(reward, final info, why it scored 0 without being scored) of one replay."""
    messages = trajectory.messages
    user_turns, agent_said = [], []
    last_agent_text: str | None = None
    seen_user = False
    for message in messages:
        if message["role"] == "assistant" and message.get("content") and not message.get("tool_calls"):
            last_agent_text = message["content"]
        elif message["role"] == "user" and not message.get("tool_calls"):
            user_turns.append(message.get("content") or "")
            agent_said.append(last_agent_text if seen_user or last_agent_text is not None else None)
            last_agent_text = None
            seen_user = True
    env.user.load(user_turns, agent_said)
    _, info = env.reset(options={"task_id": trajectory.task_id})
    done = False
    for action, *_ in agent_turns(messages):
        sent = (
            {"role": "assistant", "content": None, "tool_calls": [action]}
            if isinstance(action, dict)
            else f"[action] {action}"
        )
        _, _, terminated, truncated, info = env.step(sent)
        if terminated or truncated:
            done = True
            break
    if not done:
        if trajectory.termination in ("agent", "user"):
            _, _, _, _, info = env.step("[finish]")
        else:
            return (
                0.0,
                info,
                (
                    f"the record ended early ({trajectory.termination}) and is scored 0, as the "
                    "benchmark scores premature endings"
                ),
            )
    return float(info.get("benchmark_reward") or 0.0), info, None


def _tool_divergence(recorded: list[dict], replayed: list[dict]) -> list[str]:
    """The first tool result of the replay that differs from the record."""
    before = [m for m in recorded if m["role"] == "tool"]
    after = [m for m in replayed if m["role"] == "tool"]
    for index, (old, new) in enumerate(zip(before, after)):
        if _loose(old.get("content")) != _loose(new.get("content")):
            return [
                f"tool result {index} ({old.get('name') or new.get('name')}) differs: recorded "
                f"{str(old.get('content'))[:100]!r}, now {str(new.get('content'))[:100]!r}"
            ]
    if len(before) != len(after):
        return [f"the record has {len(before)} tool results, the replay {len(after)}"]
    return []


def _loose(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _verdict_differences(trajectory: Trajectory, now: Any) -> list[str]:
    """The checks of the recorded verdict and the new one that differ."""
    was = trajectory.reward_info if isinstance(trajectory.reward_info, dict) else {}
    now = now if isinstance(now, dict) else {}
    found = []
    if trajectory.format == "tau-bench-v1":
        old, new = was.get("info") or {}, now.get("info") or {}
        if old.get("gt_data_hash") != new.get("gt_data_hash"):
            found.append(
                f"gold data hash differs: recorded {str(old.get('gt_data_hash'))[:12]}…, now "
                f"{str(new.get('gt_data_hash'))[:12]}… (the task's data or gold actions changed)"
            )
        if "r_actions" in old and old.get("r_actions") != new.get("r_actions"):
            found.append(f"data hash check (r_actions): recorded {old.get('r_actions')}, now {new.get('r_actions')}")
        for output, met in (old.get("outputs") or {}).items():
            if (new.get("outputs") or {}).get(output) != met:
                found.append(f"output {output!r}: recorded found={met}, now {(new.get('outputs') or {}).get(output)}")
    else:
        old_db, new_db = (was.get("db_check") or {}), (now.get("db_check") or {})
        if old_db.get("db_match") != new_db.get("db_match"):
            found.append(f"DB hash check: recorded db_match={old_db.get('db_match')}, now {new_db.get('db_match')}")
        for kind, key in (("action_checks", "action_match"), ("communicate_checks", "met")):
            for old, new in zip(was.get(kind) or [], now.get(kind) or []):
                if old.get(key) != new.get(key):
                    what = (old.get("action") or {}).get("name") if kind == "action_checks" else old.get("info")
                    found.append(f"{kind[:-1].replace('_', ' ')} {what!r}: recorded {old.get(key)}, now {new.get(key)}")
    if now.get("note"):
        found.append(str(now["note"]))
    return found


def format_agreement(report: list[Rescored]) -> str:
    """The agreement table per domain."""
    by_domain: dict[str, list[Rescored]] = defaultdict(list)
    for entry in report:
        by_domain[entry.domain].append(entry)
    lines = [
        f"{'domain':<10} {'trajectories':>12} {'agree':>6} {'differ':>7} {'failed':>7} {'recorded':>9} {'rescored':>9}"
    ]
    for domain in sorted(by_domain):
        entries = by_domain[domain]
        failed = sum(e.reward is None for e in entries)
        agree = sum(e.agree for e in entries)
        recorded = [e.recorded_reward for e in entries if e.recorded_reward is not None]
        rescored = [e.reward for e in entries if e.reward is not None]
        lines.append(
            f"{domain:<10} {len(entries):>12} {agree:>6} {len(entries) - agree - failed:>7} {failed:>7} "
            f"{_mean_text(recorded):>9} {_mean_text(rescored):>9}"
        )
    if not by_domain:
        lines.append("(no trajectories)")
    return "\n".join(lines)


def _mean_text(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"
