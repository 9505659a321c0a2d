"""The small interface every backend implements.

A backend turns a benchmark package into three things the env needs:

* :class:`Domain` — a loaded domain: its tasks (in the backend's order), its
  splits, the agent's policy text and the tool schemas, exactly as the
  benchmark gives them to its own agent;
* :class:`Session` — one episode's live state: tool calls against a fresh copy
  of the domain database, the conversation in the backend's own format, and
  scoring by the backend's own rules;
* :class:`TaskSpec` — a task described in backend-neutral terms, for the
  scripted user and the reference policies.

Adding a backend is one module that implements ``load_domain``.
"""

from __future__ import annotations

import ast
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

StopReason = Literal["agent", "user"]

USER_STOP_TOKENS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")
"""A user message containing one of these ends the conversation (tau-bench's own tokens)."""


@dataclass(frozen=True)
class TaskSpec:
    """A task, backend-neutral.

    ``user_instructions`` is the scenario text exactly as the backend's user
    simulator receives it. ``gold_actions`` and ``communicate_info`` are the
    task's ground truth: reference policies and analysis may read them; a
    learning policy must not.
    """

    task_id: str
    domain: str
    index: int
    native_id: str
    user_instructions: str
    reason_for_call: str
    known_info: str
    unknown_info: str
    task_instructions: str
    gold_actions: tuple[dict, ...] = ()
    communicate_info: tuple[str, ...] = ()
    reward_basis: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ToolResult:
    """What a tool call returned, as the text the agent sees."""

    content: str
    error: bool = False


@dataclass
class Evaluation:
    """The backend's verdict on a finished episode.

    ``reward`` is the benchmark's reward (1.0 or 0.0 on tau-bench);
    ``breakdown`` is the backend's own reward info (checks per basis), as
    plain JSON-able data.
    """

    reward: float
    breakdown: dict = field(default_factory=dict)


def verdict(breakdown: dict, stop: StopReason | None) -> Evaluation:
    """The benchmark's verdict from its own reward breakdown (with ``reward``): an episode that did
    not end properly (``stop`` None, truncated) scores 0, and the breakdown keeps what it would have scored."""
    if stop is None:
        breakdown["note"] = "Simulation terminated prematurely (max steps): the benchmark scores it 0"
        breakdown["reward_if_ended"] = breakdown["reward"]
        return Evaluation(reward=0.0, breakdown={**breakdown, "reward": 0.0})
    return Evaluation(reward=float(breakdown["reward"]), breakdown=breakdown)


def openai_tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """A tool call as an OpenAI chat message holds it, ``arguments`` as JSON text."""
    function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {"id": call_id, "type": "function", "function": function}


class Session(ABC):
    """One episode's live state in the backend.

    Nothing a session does is visible to another session: every piece of a
    domain's state (the agent's database, the user's database and device,
    a toolkit's counters) is the session's own copy or overlay.
    """

    @abstractmethod
    def call_tool(self, name: str, arguments: dict, call_id: str) -> ToolResult:
        """Run one tool call (already checked against the schema) and record it."""

    def call_user_tool(self, name: str, arguments: dict, call_id: str) -> ToolResult:
        """Run one call of the *user's* own tools (tau2 telecom's phone) and record it.

        Its result belongs to the user: it is in the scored trajectory, never
        in what the agent sees.
        """
        raise NotImplementedError("the users of this backend have no tools")

    def agent_history(self) -> list[dict]:
        """The task's initial conversation as the agent sees it (OpenAI chat format)."""
        return []

    def user_history(self) -> list[dict]:
        """The task's initial conversation as the user sees it, in the benchmark's roles
        (``user``: the user's own turns and tool calls; ``assistant``: the agent's
        messages; ``tool``: results of the user's own calls)."""
        return []

    @abstractmethod
    def record_agent_message(self, content: str) -> None:
        """Record a message the agent sent to the user."""

    @abstractmethod
    def record_user_message(self, content: str) -> None:
        """Record a message the user sent to the agent."""

    @abstractmethod
    def evaluate(self, stop: StopReason | None) -> Evaluation:
        """Score the episode by the backend's rules.

        ``stop`` says who ended it; ``None`` means it did not end properly
        (truncated), which the benchmark scores 0 — the breakdown still says
        how the trajectory would have scored.
        """


class Domain(ABC):
    """A loaded domain of a backend.

    The class attributes ``default_split``, ``default_user_llm_args`` and
    ``default_max_errors`` are what the backend's own runner uses when a
    config leaves them unset.
    """

    name: str
    policy: str
    tool_schemas: list[dict]
    user_tool_schemas: list[dict] = []
    tasks: list[TaskSpec]
    splits: dict[str, list[int]]
    first_agent_message: str | None
    user_guidelines: str
    default_split: str = "test"
    default_user_llm_args: dict = {}
    default_max_errors: int | None = None

    @abstractmethod
    def new_session(self, task_index: int) -> Session:
        """A fresh episode of task ``task_index`` (index into ``tasks``)."""

    def agent_system_prompt(self) -> str:
        """The agent's system prompt: the backend's instruction and policy text."""
        return self.policy

    @abstractmethod
    def user_system_prompt(self, task: TaskSpec) -> str:
        """The LLM user's system prompt for ``task``: the backend's own, with the task's scenario."""

    def is_read_only(self, tool_name: str) -> bool:
        """Whether the tool only reads (the backend says so; False when it cannot tell)."""
        return False

    def check_tool_call(self, name: str, arguments: dict) -> str | None:
        """Why this call must not reach the tools (None when it may).

        Checks the tool exists and the argument names and JSON types against
        its schema, and guards ``calculate`` (a bare ``eval`` in tau2 and
        tau-bench) against expressions that would never finish.
        """
        problem = check_call_against_schemas(self.tool_schemas, name, arguments)
        if problem is None and name == "calculate":
            problem = check_arithmetic_expression(str(arguments.get("expression", "")))
        return problem

    def check_user_tool_call(self, name: str, arguments: dict) -> str | None:
        """``check_tool_call`` for the user's own tools."""
        return check_call_against_schemas(self.user_tool_schemas, name, arguments)


def check_call_against_schemas(schemas: list[dict], name: str, arguments: dict) -> str | None:
    """Why a call of ``name`` with ``arguments`` does not fit ``schemas`` (None when it does)."""
    by_name = {schema["function"]["name"]: schema for schema in schemas}
    schema = by_name.get(name)
    if schema is None:
        return f"unknown tool {name!r}; the tools are: {', '.join(by_name)}"
    parameters = schema["function"].get("parameters") or {}
    properties = parameters.get("properties") or {}
    unknown = sorted(set(arguments) - set(properties))
    if unknown:
        return f"{name} has no argument(s) {unknown}; its arguments are {sorted(properties) or 'none'}"
    missing = [arg for arg in parameters.get("required", []) if arg not in arguments]
    if missing:
        return f"{name} needs the argument(s) {missing}; send [search] {name} for its parameters"
    for arg, value in arguments.items():
        expected = _json_types(properties.get(arg) or {})
        if expected and not any(_JSON_TYPE_CHECKS[t](value) for t in expected if t in _JSON_TYPE_CHECKS):
            return (
                f"argument {arg!r} of {name} must be of JSON type {' or '.join(expected)}, got {type(value).__name__}"
            )
    return None


_JSON_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _json_types(schema: dict) -> list[str]:
    """The JSON types a parameter schema admits ([] when it does not say)."""
    if "type" in schema:
        kind = schema["type"]
        return list(kind) if isinstance(kind, list) else [kind]
    types: list[str] = []
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        sub = _json_types(option)
        if not sub:
            return []
        types.extend(sub)
    return types


MAX_EXPRESSION_CHARS = 1000


def check_arithmetic_expression(expression: str) -> str | None:
    """Refuse expressions that a ``calculate`` tool (a bare ``eval``) could not finish.

    Only ``**`` can make an expression of bounded length explode; a power is
    allowed when its base and exponent are small literals.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        return f"the expression is longer than {MAX_EXPRESSION_CHARS} characters; split the calculation"
    if "**" not in expression:
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the tool reports the syntax error itself
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            base, exponent = _literal(node.left), _literal(node.right)
            if base is None or exponent is None or abs(exponent) > 100 or abs(base) > 1e6:
                return "the expression raises a large or computed number to a power; calculate it in smaller steps"
    return None


def _literal(node: Any) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _literal(node.operand)
        return None if inner is None else -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        try:
            return float(node.value)
        except OverflowError:
            return float("inf")
    return None


class Backend(ABC):
    """A benchmark package seen through TauGym."""

    name: str

    def set_verbose(self, verbose: bool) -> None:
        """Let the benchmark's own loggers speak (True) or keep them quiet (False, default)."""

    @abstractmethod
    def domains(self) -> list[str]:
        """The domain names this backend offers."""

    @abstractmethod
    def load_domain(self, domain: str) -> Domain:
        """Load (once per process) and return a domain."""
