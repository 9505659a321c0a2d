"""Playing one work item to the end, as a Parquet episode row plus step rows."""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import taugym
from rollout.dataset import episode_row_from_info, step_row
from taugym import TauEnv
from taugym.agents import Policy
from taugym.env import CONTEXT_LENGTH
from taugym.llm import LLMCallError, LLMUsage
from taugym.llm.text import valid_unicode


@dataclass(frozen=True)
class WorkItem:
    """One episode to run: a task of a domain, one trial, with its seed."""

    domain: str
    task_id: str
    trial: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.domain, self.task_id, self.trial)

    def to_dict(self) -> dict:
        return asdict(self)


def item_seed(base_seed: int, domain: str, task_id: str, trial: int) -> int:
    """A stable seed per (domain, task, trial): reruns and resumes replay the same episode."""
    return zlib.crc32(f"{base_seed}/{domain}/{task_id}/{trial}".encode())


def merge_usage(*usages: dict) -> dict:
    """Sum LLM accounting dicts (user and agent) with the one accounting type, :class:`LLMUsage`."""
    counted = [field.name for field in fields(LLMUsage)]
    total = LLMUsage()
    for usage in usages:
        total.add(LLMUsage(**{name: usage.get(name) or 0 for name in counted}))
    return total.as_dict()


#: How ``messages`` shows an episode the agent ended: its ``[finish]`` as an assistant
#: turn (what a native-tools ``LLMAgent`` replies to finish; the env keeps no turn for it).
FINISH_TURN = {"role": "assistant", "content": "[finish]"}


def _completion(action: Any, added: list[dict]) -> dict:
    """The assistant message of an action: the turn it added to the conversation, else
    (``[finish]``, ``[search]``, a refused action) the action's text as an assistant turn."""
    if added and added[0]["role"] == "assistant":
        return added[0]
    return {"role": "assistant", "content": _action_text(action)}


def _behaviour(agent: Policy) -> dict:
    """The step row's behaviour-policy columns: the action's token ids and log-probs, or None."""
    sampled = getattr(agent, "behaviour", lambda: None)() or {}
    return {"completion_token_ids": sampled.get("token_ids"), "completion_logprobs": sampled.get("logprobs")}


def _action_text(action: Any) -> str:
    """The action as the steps dataset stores it (storable text, whatever the agent returned)."""
    return valid_unicode(action if isinstance(action, str) else json.dumps(action, default=str))


async def play_episode(
    env: TauEnv,
    agent: Policy,
    item: WorkItem,
    *,
    run_id: str,
    agent_name: str,
    agent_model: str | None,
    retry: bool = False,
) -> dict:
    """Run ``item`` to the end on ``env`` with ``agent``; return ``{"episode": row, "steps": rows}``.

    A failure of the user or the agent (e.g. a provider down after all
    retries) ends the episode as an error row with its cause: recorded, not
    dropped. A conversation that no longer fits the agent's model ends the
    episode as truncated with the termination ``context_length``, not as an
    error (a retry would overflow again).
    """
    started = time.monotonic()
    config = env.config
    transitions: list[dict] = []
    info: dict[str, Any] = {}
    terminated, truncated = False, False
    error: dict | None = None
    try:
        observation, info = await env.reset_async(seed=item.seed, options={"task_id": item.task_id})
        while True:
            try:
                action = await agent.aact(observation, info)
            except LLMCallError as exc:
                if not exc.context_overflow:
                    raise
                # the agent's model cannot take the conversation any more: the episode ends there, scored
                observation, reward, terminated, truncated, info = env.truncate(CONTEXT_LENGTH)
                if transitions:  # the last step row is where the episode ended
                    transitions[-1].update(reward=transitions[-1]["reward"] + float(reward), truncated=True)
                break
            before, prompt = observation["feedback"], info["messages"]
            observation, reward, terminated, truncated, info = await env.step_async(action)
            transitions.append(
                {
                    "step_index": len(transitions),
                    "observation": before,
                    "action": _action_text(action),
                    "reward": float(reward),
                    "next_observation": observation["feedback"],
                    "terminated": bool(terminated),
                    "truncated": bool(truncated),
                    "prompt": prompt,
                    "completion": [_completion(action, info["messages"][len(prompt) :])],
                    **_behaviour(agent),
                }
            )
            if terminated or truncated:
                break
    except Exception as exc:  # recorded as an error episode with its cause
        source = getattr(exc, "source", None) or ("agent" if info else "env")  # reset names setup or user
        error = {"source": source, "type": type(exc).__name__, "message": str(exc)[:2000]}
    if error is not None:
        info = {
            **error_info(env.config.backend, item, env.domain.tool_schemas),
            **info,
            "error": error,
            "termination": "error",
        }
        terminated, truncated = True, False
    elif info.get("termination") == "agent":  # the agent's [finish] ends the episode: shown as its last turn
        info = {**info, "messages": [*info["messages"], FINISH_TURN]}
    row = episode_row_from_info(
        info,
        run_id=run_id,
        trial=item.trial,
        seed=item.seed,
        agent=agent_name,
        agent_model=agent_model,
        user_model=config.user_model if config.user_strategy == "llm" else None,
        user_strategy=config.user_strategy,
        duration_s=time.monotonic() - started,
        reward=None if info.get("error") else float(info.get("benchmark_reward") or 0.0),
        terminated=bool(terminated),
        truncated=bool(truncated),
        num_steps=len(transitions),
        taugym_version=taugym.__version__,
        llm_usage=merge_usage(env.user.usage(), agent.usage()),  # the env's, also when reset failed
        episode_id=episode_id(run_id, item, retry=retry),
    )
    return {"episode": row, "steps": [step_row(row, **t) for t in transitions]}


def episode_id(run_id: str, item: WorkItem, retry: bool = False) -> str:
    """The dataset's id of an episode: unique per run, domain, task and trial (and re-run of an error row)."""
    base = f"{run_id}:{item.domain}:{item.task_id}:{item.trial}"
    return f"{base}:retry-{time.strftime('%Y%m%dT%H%M%S')}" if retry else base


def error_info(backend: str, item: WorkItem, tools: list) -> dict[str, Any]:
    """The info of an episode that failed before the env could report one."""
    return {"task_id": item.task_id, "domain": item.domain, "backend": backend, "messages": [], "tools": tools}
