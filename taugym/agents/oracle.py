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
* otherwise looks it up with a chain of read-only calls, each using only
  values it already has: user id from email or from name and zip, then
  user details, then order details (``_Rehearsal.lookup``). When nothing
  leads to the value and no tool has answered yet, it first asks the user
  once who they are ("Could you tell me your name, zip code, email or user
  id, ...?") and looks again. A value inside a record (a flight's number
  and date) must be shown with the record's other values, so a flight of
  another day is no lookup for it.

It finds those steps by rehearsing the episode in a private env of the same
backend and domain with the scripted user, so with the scripted user the
demonstration is the rehearsal. A value none of these reveals is used as
the ground truth has it: a summary for a transfer (the agent's own prose),
a date the agent works out from the user's words ("May 26", "the day
after"), an id the user says in another form ("9502126" for "#9502126").
An arithmetic expression for ``calculate`` counts as grounded when its
numbers are (:func:`ungrounded_values`). ``OraclePolicy(grounded=False)``
replays the bare gold sequence.

It reads the ground truth from ``info["task"]``, which a learning policy must
never do: use it to check the reward pipeline end to end and to produce
demonstrations, labelled as such.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from taugym.agents.base import Policy

MAX_PROBES_PER_VALUE = 2000
"""Read-only calls the rehearsal may try to find one value (rehearsal only: never in the demonstration)."""

IDENTITY_QUESTION = "Could you tell me your name, zip code, email or user id, so that I can find your account?"
"""What the oracle asks before looking up an account's ids that nothing heard so far leads to."""

PROSE_WORDS = 8
"""A value of more words than this (a transfer's summary) is the agent's prose: never looked up."""

MAX_LOOKUP_CHAIN = 3
"""Read-only calls in a row the demonstration may make to find one value (user id, user details, order)."""


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
    """(argument name, value) of each string in a call's arguments that appears in none of ``heard``.

    An arithmetic expression (``"652.61 + 473.43"``: numbers, operators with spaces or
    parentheses, for a calculator tool) is the agent's own arithmetic over facts: it counts
    as heard when each of its numbers appears in ``heard`` as a number of its own (``2.5``
    is not heard in ``12.5`` or ``2.55``).
    """
    return [(name, value) for name, value in _strings(arguments) if value and not _is_heard(value, heard)]


def _is_heard(value: str, heard: list[str]) -> bool:
    if _ARITHMETIC.fullmatch(value) and _OPERATOR.search(value):
        return all(
            any(re.search(rf"(?<![\d.]){re.escape(number)}(?!\d|\.\d)", text) for text in heard)
            for number in re.findall(r"\d+(?:\.\d+)?", value)
        )
    return any(value in text for text in heard)


_ARITHMETIC = re.compile(r"[\d\s.+\-*/()]+")
_OPERATOR = re.compile(r"\s[+\-*/]\s|[()]")  # an operator set apart: a date (2024-05-20) is no expression


def grounded_calls(messages: list[dict]) -> tuple[int, int]:
    """(grounded, total) tool calls of a conversation (OpenAI chat format): a call is grounded
    when every string value of its arguments appears verbatim earlier in a user turn or a
    tool result (the agent's own messages do not count); an arithmetic expression, when each
    of its numbers does (see :func:`ungrounded_values`)."""
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
        self.asked_identity = False

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
            elif not _is_prose_or_arithmetic(value):  # no tool result shows the agent's own words
                together = _record_of(arguments, value)
                chain = self.lookup(value, together)
                if (
                    not chain
                    and not self.asked_identity
                    and not any(m["role"] == "tool" for m in self.info["messages"])
                ):
                    # nothing found yet: the account's ids come from the user's own details (asked once)
                    self.asked_identity = True
                    self.step(f"[action] {IDENTITY_QUESTION}")
                    chain = self.lookup(value, together)
                for call in chain:
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

    def lookup(self, value: str, together: Sequence[str] = ()) -> list[dict]:
        """The shortest chain of read-only calls (at most ``MAX_LOOKUP_CHAIN``) whose last
        result shows ``value``; [] when there is none. A value of a record (a flight's number
        in ``flights: [{flight_number, date}]``) must be shown with the record's other
        strings (``together``: its date), in the same object of the result or in the call's
        own arguments: flight HAT100 of another day is no grounds for HAT100 on the 28th.

        Every argument of a call in the chain was heard in the episode or shown by an
        earlier call of the chain. A tool of no argument (list everything) is tried once; a
        tool of one argument with every value at hand; a tool of several (a name and a zip;
        an origin, a destination and a date) only first in the chain, with the user's
        identifier-like words (names, numbers, codes) in the order the user said them, and
        with the values earlier tool results showed under the arguments' own names (a
        reservation's ``origin``).
        """
        domain, session = self.env.domain, self.env.session
        reveal: dict[str, list[dict]] = {}  # a value at hand -> the calls that bring it ([]: heard)
        named: dict[str, dict[str, None]] = {}  # a key of a tool result -> the values shown under it
        fresh = _learn(self.heard(), [], reveal, named)
        spoken = list(dict.fromkeys(w for m in self.info["messages"] if m["role"] == "user" for w in _identifiers(m)))
        tried: set[str] = set()
        for depth in range(MAX_LOOKUP_CHAIN):
            shown: list[tuple[str, list[dict]]] = []
            for tool, required in self.read_tools():
                for values in _argument_choices(required, fresh, spoken, named, first=depth == 0):
                    if len(set(values)) < len(values):
                        continue  # one value for two arguments (from IAH to IAH): no real question
                    arguments = dict(zip(required, values, strict=True))
                    key = json.dumps([tool, arguments], sort_keys=True)
                    if key in tried or domain.check_tool_call(tool, arguments) is not None:
                        continue
                    tried.add(key)
                    if len(tried) > MAX_PROBES_PER_VALUE:
                        return []
                    # a read changes nothing: probing on the rehearsal's own state is safe (and never shown)
                    result = session.call_tool(tool, arguments, "probe")
                    if result.error:
                        continue
                    chain = [
                        json.loads(c) for c in dict.fromkeys(json.dumps(c) for v in values for c in reveal.get(v, []))
                    ]
                    chain.append({"name": tool, "arguments": arguments})
                    if len(chain) > MAX_LOOKUP_CHAIN:
                        continue
                    if _shows(result.content, value, together, arguments):
                        return chain
                    shown.append((result.content, chain))
            fresh = [v for content, chain in shown for v in _learn([content], chain, reveal, named)]
            if not fresh:
                return []
        return []

    def read_tools(self) -> list[tuple[str, list[str]]]:
        """(name, required arguments) of the domain's read-only tools."""
        tools = []
        for schema in self.env.domain.tool_schemas:
            function = schema["function"]
            if self.env.domain.is_read_only(function["name"]):
                tools.append((function["name"], list((function.get("parameters") or {}).get("required") or [])))
        return tools


def _is_prose_or_arithmetic(value: str) -> bool:
    return len(value.split()) > PROSE_WORDS or bool(_ARITHMETIC.fullmatch(value) and _OPERATOR.search(value))


def _record_of(arguments: dict, value: str) -> list[str]:
    """The other strings of the record (an object inside the arguments) that holds ``value``."""
    for record in _objects(list(arguments.values())):
        fields = [v for v in record.values() if isinstance(v, str)]
        if value in fields:
            return [v for v in fields if v != value]
    return []


def _shows(content: str, value: str, together: Sequence[str], arguments: dict) -> bool:
    """Whether a tool result shows ``value``, with ``together`` in the same object or the call's arguments."""
    if value not in content:
        return False
    if not together:
        return True
    try:
        parsed = json.loads(content)
    except (json.JSONDecodeError, ValueError):
        return False
    at_hand = {v for _, v in _strings(arguments)}
    for record in _objects(parsed):
        if value in record.values():
            strings = {v for _, v in _strings(record)} | at_hand
            if all(other in strings for other in together):
                return True
    return False


def _objects(value: Any) -> Iterator[dict]:
    """Every JSON object inside ``value``."""
    if isinstance(value, dict):
        yield value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _objects(item)


def _learn(texts: list[str], chain: list[dict], reveal: dict, named: dict) -> list[str]:
    """Record the values ``texts`` show (brought by ``chain``); the ones new to ``reveal``."""
    new = []
    for text in texts:
        for value in _json_strings(text):
            if value not in reveal:
                reveal[value] = chain
                new.append(value)
        for key, value in _named_strings(text):
            named.setdefault(key, {})[value] = None
    return new


def _argument_choices(
    required: list[str], fresh: list[str], spoken: list[str], named: dict[str, dict[str, None]], first: bool
) -> Iterator[tuple[str, ...]]:
    """Argument values to try for a tool with these required arguments (see ``_Rehearsal.lookup``):
    a tool of several arguments only first in the chain, with values heard before it."""
    if not required:
        yield ()
    elif len(required) == 1:
        yield from ((value,) for value in fresh)
    elif first:
        yield from itertools.combinations(spoken, len(required))
        yield from itertools.product(*(list(named.get(name, {})) for name in required))


def _named_strings(text: str) -> list[tuple[str, str]]:
    """(key, string value) pairs of a tool result (JSON); [] for other text."""
    try:
        return [(key, value) for key, value in _strings(json.loads(text)) if key]
    except (json.JSONDecodeError, ValueError):
        return []


def _identifiers(message: dict) -> list[str]:
    """The words of a user message that can identify something: a name, a number, a code."""
    words = (word.strip(".,;:!?()'\"") for word in str(message.get("content") or "").split())
    return [word for word in words if len(word) > 1 and re.search(r"[A-Z0-9@#_]", word) and word not in _STARTERS]


_STARTERS = frozenset("I I'm I've My Hi Hello Yes No The This That Could Can Please Thank Thanks".split())


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
