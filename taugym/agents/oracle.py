"""OraclePolicy: the task's ground truth, played as a demonstration. A reference, not an agent.

It makes every gold tool call of the task in order (``[answer]``), tells the
user every piece of information the task requires to be communicated
(``[action]``) and sends ``[finish]``. A gold action that is the user's to
do (tau2 telecom: toggling airplane mode on the user's phone) is asked of
the user instead (``[action]`` naming the user's tool and its JSON
arguments, which the scripted user performs).

It does so as a demonstration a model can learn from: before a call, every
string argument value comes from the user's words or an earlier tool
result. For a value it does not have yet, it

* asks the user about it when the user's scenario holds it ("Could you tell
  me your first name, last name and zip?"),
* offers the allowed values as quoted choices when the tool's schema lists
  them (an ``enum``, or quoted values in the argument's description:
  "'no longer needed' or 'ordered by mistake'?"),
* otherwise looks it up with a read-only tool whose one argument it already
  has (order details, product details, user details, ...).

It finds those steps by rehearsing the episode in a private env of the same
backend and domain with the scripted user, so with the scripted user the
demonstration is the rehearsal. A value none of these reveals (an
expression for ``calculate``, a summary for a transfer) is used as the
ground truth has it. ``OraclePolicy(grounded=False)`` replays the bare gold
sequence.

It reads the ground truth from ``info["task"]``, which a learning policy must
never do: use it to check the reward pipeline end to end and to produce
demonstrations, labelled as such.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from taugym.agents.base import Policy

MAX_PROBES_PER_VALUE = 2000
"""Read-only calls the rehearsal may try to find one value (rehearsal only: never in the demonstration)."""


class OraclePolicy(Policy):
    """Ground-truth demonstration (see the module docstring)."""

    name = "oracle"

    def __init__(self, grounded: bool = True) -> None:
        self.grounded = grounded
        self._episode: str | None = None
        self._plan: list[str] = []

    def plan(self, task: dict, info: dict | None = None) -> list[str]:
        """The whole action sequence for a task (``TaskSpec.to_dict()``); grounded when
        ``info`` (the env's info at reset) says where to rehearse it."""
        if self.grounded and info is not None and task["gold_actions"]:
            return _Rehearsal(task, info).run()
        actions = [_gold_action(action) for action in task["gold_actions"]]
        return actions + _closing(task)

    def act(self, observation: dict, info: dict) -> str:
        if "task" not in info:
            raise ValueError("OraclePolicy needs info['task'] from TauEnv.reset/step")
        episode = info.get("episode_id")
        if episode != self._episode or int(observation["step_count"]) == 0:
            self._episode = episode
            self._plan = self.plan(info["task"], info)
        return self._plan.pop(0) if self._plan else "[finish]"


def _gold_action(action: dict) -> str:
    if action.get("requestor", "assistant") == "assistant":
        return "[answer] " + json.dumps({"name": action["name"], "arguments": action["arguments"]})
    with_arguments = f" with {json.dumps(action['arguments'])}" if action["arguments"] else ""
    return f"[action] Could you please do this on your phone: {action['name']}{with_arguments}?"


def _closing(task: dict) -> list[str]:
    actions = []
    if task["communicate_info"]:
        actions.append("[action] " + " ".join(f"{info}." for info in task["communicate_info"]))
    return actions + ["[finish]"]


def heard_texts(messages: list[dict]) -> list[str]:
    """What the user said and the tools returned in a conversation: where an argument may come from."""
    return [m["content"] for m in messages if m["role"] in ("user", "tool") and isinstance(m.get("content"), str)]


def ungrounded_values(arguments: Any, heard: list[str]) -> list[tuple[str, str]]:
    """(argument name, value) of each string in a call's arguments that appears in none of ``heard``."""
    return [(name, value) for name, value in _strings(arguments) if value and not any(value in text for text in heard)]


def grounded_calls(messages: list[dict]) -> tuple[int, int]:
    """(grounded, total) tool calls of a conversation (OpenAI chat format): a call is grounded
    when every string value of its arguments appears verbatim earlier in a user turn or a
    tool result (the agent's own messages do not count)."""
    grounded = total = 0
    for position, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
            total += 1
            grounded += not ungrounded_values(arguments, heard_texts(messages[:position]))
    return grounded, total


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(argument name, string value) for every string in an argument structure."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)


_REHEARSAL_ENVS: dict[tuple[str, str], Any] = {}


class _Rehearsal:
    """One task played in a private env to find the grounded action sequence."""

    def __init__(self, task: dict, info: dict):
        from taugym.env import TauEnv  # the env module imports the agents package: import here

        key = (info["backend"], info["domain"])
        if key not in _REHEARSAL_ENVS:
            _REHEARSAL_ENVS[key] = TauEnv(
                backend=info["backend"],
                task_category=info["domain"],
                user_strategy="scripted",
                max_steps=100_000,
                max_errors=0,
            )
        self.env = _REHEARSAL_ENVS[key]
        self.task = task
        self.actions: list[str] = []
        self.known_text = " ".join(task[k] for k in ("known_info", "reason_for_call", "task_instructions"))
        _, self.info = self.env.reset(seed=0, options={"task_id": task["task_id"]})
        self.ended = False

    def heard(self) -> list[str]:
        return heard_texts(self.info["messages"])

    def missing(self, arguments: dict) -> list[tuple[str, str]]:
        return ungrounded_values(arguments, self.heard())

    def step(self, action: str) -> None:
        self.actions.append(action)
        if self.ended:
            return
        _, _, terminated, truncated, self.info = self.env.step(action)
        self.ended = terminated or truncated

    def run(self) -> list[str]:
        for action in self.task["gold_actions"]:
            if action.get("requestor", "assistant") == "assistant" and not self.ended:
                self.ground(action["name"], action["arguments"])
            self.step(_gold_action(action))
        for action in _closing(self.task):
            self.step(action)
        return self.actions

    def ground(self, tool: str, arguments: dict) -> None:
        """Add the steps that make every string argument of a call come from the user or a tool."""
        missing = self.missing(arguments)
        known = [(name, value) for name, value in missing if value in self.known_text]
        if known:
            names = list(dict.fromkeys(name.replace("_", " ") for name, _ in known))
            self.step(f"[action] Could you tell me your {_join(names)}?")
        for name, value in missing:
            if self.ended or (name, value) not in self.missing(arguments):
                continue  # an earlier step brought it
            options = self.enum_options(tool, name)
            if value in options:
                quoted = " or ".join(f"'{option}'" for option in options)
                self.step(f"[action] Which {name.replace('_', ' ')} is it: {quoted}?")
            elif value in self.known_text:
                hint = _hint(self.known_text, value)
                if hint:
                    self.step(f"[action] Could you tell me more about the {hint}?")
            else:
                call = self.lookup(value)
                if call is not None:
                    self.step("[answer] " + json.dumps(call))

    def enum_options(self, tool: str, argument: str) -> list[str]:
        for schema in self.env.domain.tool_schemas:
            if schema["function"]["name"] == tool:
                spec = ((schema["function"].get("parameters") or {}).get("properties") or {}).get(argument) or {}
                if spec.get("enum"):
                    return [str(option) for option in spec["enum"]]
                quoted = re.findall(r"'([^']+)'", str(spec.get("description", "")))
                return quoted if len(quoted) >= 2 else []
        return []

    def lookup(self, value: str) -> dict | None:
        """A read-only call, with one argument the episode already has, whose result shows ``value``."""
        domain, session = self.env.domain, self.env.session
        candidates = list(dict.fromkeys(v for text in self.heard() for v in _json_strings(text)))
        tried = 0
        for schema in domain.tool_schemas:
            function = schema["function"]
            parameters = function.get("parameters") or {}
            required = parameters.get("required") or []
            if len(required) != 1 or not domain.is_read_only(function["name"]):
                continue
            for candidate in candidates:
                arguments = {required[0]: candidate}
                if domain.check_tool_call(function["name"], arguments) is not None:
                    continue
                tried += 1
                if tried > MAX_PROBES_PER_VALUE:
                    return None
                # a read changes nothing: probing on the rehearsal's own state is safe (and never shown)
                result = session.call_tool(function["name"], arguments, "probe")
                if not result.error and value in result.content:
                    return {"name": function["name"], "arguments": arguments}
        return None


def _json_strings(text: str) -> list[str]:
    """The string values inside a tool result (JSON), or the words of a user message."""
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return [word.strip(".,;:!?()'\"") for word in text.split() if len(word) > 2]
    return [value for _, value in _strings(parsed)] + [key for key in _keys(parsed)]


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _hint(text: str, value: str) -> str:
    """A few words of the scenario sentence that holds ``value`` (not the value's own words)."""
    sentence = next((s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if value in s), "")
    own = set(re.findall(r"[a-z0-9]+", value.lower()))
    words = [w for w in re.findall(r"[A-Za-z]{4,}", sentence) if w.lower() not in own and w.lower() not in _VAGUE]
    return " ".join(dict.fromkeys(w.lower() for w in words[:3]))


_VAGUE = frozenset("your you have want would will that this with from they them their also".split())


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
