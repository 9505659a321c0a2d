"""``taugym export --format tau2``: a TauGym run as tau2 ``Results`` files, one per domain.

tau2's ``Results`` holds one domain, and its submission tooling refuses a
domain twice, so each domain of the run becomes ``<out>/<domain>.json``.
What goes in:

* ``info``: the run's agent (``llm_agent`` with its model for TauGym's LLM
  agent, else TauGym's agent name) and user (``user_simulator`` with its
  model and the backend's default sampling for the LLM user, else the
  strategy), ``num_trials`` (trials per task), tau2's own ``max_errors``,
  the domain's policy and tools (``Environment.get_info``), and
  ``git_commit`` naming the TauGym version;
* ``tasks``: tau2's own task objects of the tasks the run covers, in the
  domain's order (tau2's submission check wants all of the ``base`` split:
  a run over fewer tasks exports, with a note saying so);
* ``simulations``: one ``SimulationRun`` per episode row, its messages
  converted to tau2's message types (through tau2's ``to_tau2_messages``;
  the system prompt is left out, as tau2 records it in ``info``), the
  recorded ``reward_info`` (tau2's ``RewardInfo`` from the backend's
  breakdown), the termination in tau2's words, ``agent_cost`` the row's
  ``cost_usd`` (TauGym counts agent and user together).

Only tau2-backend rows export (a v1 run has no tau2 tasks). Each file is
written whole under a hidden name, then moved into place.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import taugym
from rollout.dataset import read_episodes

TERMINATIONS_TO_TAU2 = {
    "user": "user_stop",
    "agent": "agent_stop",
    "max_steps": "max_steps",
    "max_errors": "too_many_errors",
}


def tau2_messages(messages: list[dict]) -> list:
    """OpenAI chat messages (TauGym's ``messages`` column) as tau2 messages, system prompt left out.

    Tool calls become tau2 ``ToolCall``s (arguments as objects, the caller as
    ``requestor``), tool results ``ToolMessage``s keyed by the call's id,
    flagged ``error`` where the result is tau2's ``Error: ...`` text.
    """
    from tau2.utils.llm_utils import to_tau2_messages

    requestors: dict[str, str] = {}
    converted = []
    for message in messages:
        role = message["role"]
        if role == "system":
            continue
        if role == "tool":
            content = message.get("content")
            call_id = message.get("tool_call_id") or ""
            converted.append(
                {
                    "role": "tool",
                    "id": call_id,
                    "content": content,
                    "requestor": requestors.get(call_id, "assistant"),
                    "error": isinstance(content, str) and content.startswith("Error"),
                }
            )
            continue
        entry: dict[str, Any] = {"role": role, "content": message.get("content")}
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                arguments = call["function"].get("arguments")
                if isinstance(arguments, str):
                    arguments = json.loads(arguments) if arguments.strip() else {}
                requestors[call["id"]] = role
                calls.append(
                    {"id": call["id"], "name": call["function"]["name"], "arguments": arguments, "requestor": role}
                )
            entry["tool_calls"] = calls
        converted.append(entry)
    return to_tau2_messages(converted)


def _termination(row: dict) -> str:
    if row["termination"] == "error":
        return "user_error" if str(row.get("error_cause") or "").startswith("user") else "agent_error"
    return TERMINATIONS_TO_TAU2.get(row["termination"], "agent_error")


def _reward_info(row: dict) -> Any:
    from tau2.data_model.simulation import RewardInfo

    breakdown = json.loads(row["reward_breakdown"]) if row["reward_breakdown"] else None
    if row["reward"] is None or not isinstance(breakdown, dict):
        note = row.get("error_cause") or "no evaluation"
        return RewardInfo(reward=float(row["reward"] or 0.0), reward_basis=None, info={"note": note})
    info = RewardInfo.model_validate(breakdown)
    return info.model_copy(update={"reward": float(row["reward"])})


def export_tau2(run_dir: str, out: str) -> list[tuple[str, int, list[str]]]:
    """Write ``run_dir``'s episodes as ``out/<domain>.json``; returns (path, simulations, notes) per file."""
    from tau2.data_model.simulation import (
        AgentInfo,
        Info,
        Results,
        SimulationRun,
        UserInfo,
    )

    from taugym.backends import get_backend

    table = read_episodes(run_dir)
    if table.num_rows == 0:
        raise ValueError(f"{run_dir} holds no published episodes to export")
    rows = table.to_pylist()
    backends = sorted({row["backend"] for row in rows})
    if backends != ["tau2"]:
        raise ValueError(f"only tau2-backend runs export to tau2 Results; {run_dir} holds {backends} rows")
    by_domain: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_domain[row["domain"]].append(row)
    Path(out).mkdir(parents=True, exist_ok=True)
    written = []
    for domain_name in sorted(by_domain):
        domain_rows = sorted(by_domain[domain_name], key=lambda r: (r["task_id"], r["trial"]))
        domain = get_backend("tau2").load_domain(domain_name)
        notes: list[str] = []
        first = domain_rows[0]
        agent = AgentInfo(
            implementation="llm_agent" if first["agent"] == "llm" else first["agent"], llm=first["agent_model"]
        )
        llm_user = first["user_strategy"] == "llm"
        user = UserInfo(
            implementation="user_simulator" if llm_user else first["user_strategy"],
            llm=first["user_model"],
            llm_args=dict(domain.default_user_llm_args) if llm_user else None,
            global_simulation_guidelines=domain.user_guidelines,
        )
        trials: dict[str, int] = defaultdict(int)
        for row in domain_rows:
            trials[row["task_id"]] += 1
        if len(set(trials.values())) > 1:
            notes.append(
                f"tasks have different numbers of trials ({sorted(set(trials.values()))}); "
                "tau2's submission check wants the same number for every task"
            )
        index_of = {spec.task_id: spec.index for spec in domain.tasks}
        covered = sorted({index_of[row["task_id"]] for row in domain_rows})
        base = set(domain.splits.get("base", []))
        if set(covered) != base:
            notes.append(
                f"the run covers {len(covered)} task(s), tau2's base split has {len(base)}: "
                "tau2 view opens the file, its submission check wants every base task"
            )
        info = Info(
            git_commit=f"taugym-{taugym.__version__}",
            num_trials=max(trials.values()),
            max_steps=_max_steps(run_dir),
            max_errors=int(domain.default_max_errors or 0),
            user_info=user,
            agent_info=agent,
            environment_info=domain.episode_environment(0).get_info(include_tool_info=True),
            seed=None,
        )
        simulations = []
        for row in domain_rows:
            end = dt.datetime.now()
            simulations.append(
                SimulationRun(
                    id=row["episode_id"],
                    task_id=domain.tasks[index_of[row["task_id"]]].native_id,
                    start_time=(end - dt.timedelta(seconds=row["duration_s"])).isoformat(),
                    end_time=end.isoformat(),
                    duration=row["duration_s"],
                    termination_reason=_termination(row),
                    agent_cost=row["cost_usd"],
                    reward_info=_reward_info(row),
                    messages=tau2_messages(row["messages"]),
                    trial=row["trial"],
                    seed=row["seed"],
                )
            )
        results = Results(info=info, tasks=[domain.native_task(i) for i in covered], simulations=simulations)
        path = Path(out) / f"{domain_name}.json"
        hidden = path.with_name(f".{path.name}.tmp")
        results.save(hidden)
        os.replace(hidden, path)
        written.append((str(path), len(simulations), notes))
    return written


def _max_steps(run_dir: str) -> int:
    """The run's ``max_steps`` from ``DIR/run.json`` where it says, else TauGym's default."""
    from taugym.config import TauGymConfig

    record: dict | None = None
    try:
        record = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    found = _find(record, "max_steps") if isinstance(record, dict) else None
    return int(found) if isinstance(found, int) else TauGymConfig().max_steps


def _find(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        if key in data and not isinstance(data[key], (dict, list)):
            return data[key]
        for value in data.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
