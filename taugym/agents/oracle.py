"""OraclePolicy: replays the task's ground truth. A reference, not an agent.

It calls every gold tool call of the task in order (``[answer]``); a gold
action that is the user's to do (tau2 telecom: toggling airplane mode on the
user's phone) is asked of the user instead (``[action]`` naming the user's
tool and its JSON arguments, which the scripted user performs). Then it
tells the user every piece of information the task requires to be
communicated (``[action]``) and sends ``[finish]``. It reads the ground truth from
``info["task"]``, which a learning policy must never do: use it to check the
reward pipeline end to end and to produce demonstrations, labelled as such.
"""

from __future__ import annotations

import json

from taugym.agents.base import Policy


class OraclePolicy(Policy):
    """Ground-truth replay (see the module docstring)."""

    name = "oracle"

    def __init__(self) -> None:
        self._episode: str | None = None
        self._plan: list[str] = []

    def plan(self, task: dict) -> list[str]:
        """The whole action sequence for a task (``TaskSpec.to_dict()``)."""
        actions = [
            "[answer] " + json.dumps({"name": a["name"], "arguments": a["arguments"]})
            if a.get("requestor", "assistant") == "assistant"
            else _ask_user_to(a["name"], a["arguments"])
            for a in task["gold_actions"]
        ]
        if task["communicate_info"]:
            actions.append("[action] " + " ".join(f"{info}." for info in task["communicate_info"]))
        actions.append("[finish]")
        return actions

    def act(self, observation: dict, info: dict) -> str:
        if "task" not in info:
            raise ValueError("OraclePolicy needs info['task'] from TauEnv.reset/step")
        episode = info.get("episode_id")
        if episode != self._episode or int(observation["step_count"]) == 0:
            self._episode = episode
            self._plan = self.plan(info["task"])
        return self._plan.pop(0) if self._plan else "[finish]"


def _ask_user_to(tool: str, arguments: dict) -> str:
    """The message asking the user to run one of their own tools."""
    with_arguments = f" with {json.dumps(arguments)}" if arguments else ""
    return f"[action] Could you please do this on your phone: {tool}{with_arguments}?"
