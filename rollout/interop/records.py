"""Reading tau-bench v1 and tau2 results files into :class:`Trajectory` records.

Formats
-------
* ``tau-bench-v1``: what v1's ``run.py`` writes, a JSON list of
  ``{task_id: int, trial: int, reward: float, traj: [OpenAI chat messages,
  system prompt first], info: {task, reward_info, user_cost, ...}}``. v1
  records name neither the domain nor the models: the domain is read from
  the system prompt's title (``# Airline Agent Policy``) unless ``domain`` is
  given; the task ids are v1's indices in its ``test`` split (v1's
  default) unless the loaded backend finds the recorded task's instruction
  in another split at that index.
* ``tau2``: tau2's ``Results`` JSON (``info``, ``tasks``, ``simulations``),
  one domain per file, task ids are tau2's own. Messages are converted to
  OpenAI chat format with the tau2 backend's own conversion, the agent's
  system prompt (tau2's, with the file's policy) first.

Untrusted input
---------------
Every record is checked before anything is kept: a bad one becomes a
:class:`Problem` naming the file and the record's position, and the other
records are still read. A truncated v1 list keeps the records before the
cut. Checked: the JSON itself, records that are not objects, a missing
``traj``/``messages``, ``reward``/``trial``/``task_id`` of the wrong type,
messages of unknown roles or shapes, tool calls to tools the domain lacks or
whose arguments are not a JSON object, task ids the backend lacks, a
(domain, task, trial) seen twice, and a file of the other format than the
one asked for. Tool names and task ids are checked against the backend's
domain when it can be loaded here; when it cannot (v1's airline without
tau-bench installed), :attr:`FileRead.notes` says they were not checked.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

V1 = "tau-bench-v1"
TAU2 = "tau2"
FORMATS = (V1, TAU2)
BACKEND_OF = {V1: "tau_bench", TAU2: "tau2"}
V1_DOMAINS = ("airline", "retail")
ROLES = ("system", "user", "assistant", "tool")
TERMINATIONS_FROM_TAU2 = {
    "user_stop": "user",
    "agent_stop": "agent",
    "max_steps": "max_steps",
    "too_many_errors": "max_errors",
    "agent_error": "error",
    "user_error": "error",
}
V1_TERMINATE_TOOLS = ("transfer_to_human_agents",)
"""v1 ends an episode when the agent calls one of these (both v1 domains name it so)."""


@dataclass
class Trajectory:
    """One recorded episode of a results file, in TauGym's terms.

    ``messages`` are OpenAI chat messages, system prompt first, tool-call
    ``arguments`` as JSON text. ``termination`` is TauGym's (``user``,
    ``agent``, ``max_steps``, ``max_errors``, ``error``), read from the
    record (v1 records do not say: a last user turn with a stop token is
    ``user``, a last call of a terminate tool ``agent``, else ``max_steps``).
    """

    format: str
    file: str
    position: int
    backend: str
    domain: str
    task_id: str
    native_task_id: str
    trial: int
    reward: float | None
    messages: list[dict]
    termination: str
    reward_info: Any = None
    agent_model: str | None = None
    user_model: str | None = None
    seed: int = 0
    duration_s: float = 0.0
    cost_usd: float = 0.0
    tools: list[dict] = field(default_factory=list)
    max_steps: int | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.domain, self.task_id, self.trial)


@dataclass
class Problem:
    """A record (or a whole file, ``position`` None) that could not be read."""

    file: str
    position: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: record {self.position}" if self.position is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class FileRead:
    """What one results file gave: its format, the good records, the bad ones, and notes."""

    file: str
    format: str | None = None
    trajectories: list[Trajectory] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Bad(ValueError):
    """One record's problem (caught per record)."""


# ------------------------------------------------------------------ reading
def read_results_files(
    paths: list[str],
    *,
    format: str = "auto",
    domain: str | None = None,
    agent_model: str | None = None,
    user_model: str | None = None,
    seen: set[tuple[str, str, int]] | None = None,
) -> list[FileRead]:
    """Read every file; a (domain, task, trial) already in ``seen`` (or met before) is a duplicate."""
    seen = set() if seen is None else set(seen)
    domains = _Domains()
    reads = []
    for path in paths:
        read = _read_file(str(path), format, domain, domains)
        kept = []
        for trajectory in read.trajectories:
            if agent_model is not None and trajectory.agent_model is None:
                trajectory.agent_model = agent_model
            if user_model is not None and trajectory.user_model is None:
                trajectory.user_model = user_model
            if trajectory.key in seen:
                read.problems.append(
                    Problem(
                        read.file,
                        trajectory.position,
                        f"duplicate (task, trial): {trajectory.task_id} trial {trajectory.trial} "
                        "is already imported or earlier in the input",
                    )
                )
                continue
            seen.add(trajectory.key)
            kept.append(trajectory)
        read.trajectories = kept
        read.problems.sort(key=lambda p: -1 if p.position is None else p.position)
        reads.append(read)
    return reads


def _read_file(path: str, wanted: str, domain: str | None, domains: _Domains) -> FileRead:
    read = FileRead(file=path)
    if wanted not in ("auto", *FORMATS):
        raise ValueError(f"format must be 'auto', {V1!r} or {TAU2!r}, got {wanted!r}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        read.problems.append(Problem(path, None, f"cannot read the file: {exc}"))
        return read
    stripped = text.lstrip()
    found = V1 if stripped.startswith("[") else TAU2 if stripped.startswith("{") else None
    if found is None:
        read.problems.append(
            Problem(
                path, None, "not a results file: expected a JSON list (tau-bench v1) or a JSON object (tau2 Results)"
            )
        )
        return read
    if wanted != "auto" and found != wanted:
        read.problems.append(
            Problem(path, None, f"this is a {found} results file, not {wanted}; pass --format {found} or --format auto")
        )
        return read
    read.format = found
    if found == V1:
        _read_v1(read, stripped, domain, domains)
    else:
        _read_tau2(read, stripped, domains)
    return read


def _json_list_items(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(position, value, error) for each element of a JSON list; a cut list ends with an error."""
    decoder = json.JSONDecoder()
    index = 1
    position = 0
    length = len(text)

    def skip(i: int) -> int:
        while i < length and text[i] in " \t\r\n":
            i += 1
        return i

    index = skip(index)
    if index < length and text[index] == "]":
        return
    while True:
        index = skip(index)
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            yield (
                position,
                None,
                f"invalid or truncated JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); the records before it are read",
            )
            return
        yield position, value, None
        position += 1
        index = skip(index)
        if index < length and text[index] == ",":
            index += 1
            continue
        if index < length and text[index] == "]":
            if skip(index + 1) < length:
                yield position, None, "text after the end of the list"
            return
        yield position, None, "invalid or truncated JSON: the list is not closed; the records before it are read"
        return


def _read_v1(read: FileRead, text: str, domain: str | None, domains: _Domains) -> None:
    for position, record, error in _json_list_items(text):
        if error is not None:
            read.problems.append(Problem(read.file, position, error))
            continue
        try:
            read.trajectories.append(_v1_trajectory(read, position, record, domain, domains))
        except _Bad as exc:
            read.problems.append(Problem(read.file, position, str(exc)))


def _v1_trajectory(read: FileRead, position: int, record: Any, domain: str | None, domains: _Domains) -> Trajectory:
    _check_record(record, "a v1 record", "traj", "messages", "a tau2 simulation: pass the tau2 Results file")
    task_number = _count(record, "task_id", None)
    trial = _count(record, "trial", 0)
    reward = record.get("reward")
    if not _is_number(reward):
        raise _Bad(f"'reward' must be a number, got {_json_type(reward)} {reward!r:.40}")
    traj = record["traj"]
    if not isinstance(traj, list) or not traj:
        raise _Bad(f"'traj' must be a non-empty list of messages, got {_json_type(traj)}")
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    name = domain or _v1_domain(traj, domains, read)
    if name is None:
        raise _Bad("cannot tell the domain from the system prompt; pass --domain airline or --domain retail")
    loaded = domains.get("tau_bench", name, read)
    task = info.get("task") if isinstance(info.get("task"), dict) else {}
    task_id, native = _v1_task_id(loaded, name, task_number, task)
    tools = loaded.tool_schemas if loaded is not None else []
    messages = _check_messages(traj, tools if loaded is not None else None)
    return Trajectory(
        format=V1,
        file=read.file,
        position=position,
        backend="tau_bench",
        domain=name,
        task_id=task_id,
        native_task_id=native,
        trial=int(trial),
        reward=float(reward),
        messages=messages,
        termination=_v1_termination(messages),
        reward_info=info.get("reward_info"),
        cost_usd=float(info["user_cost"]) if _is_number(info.get("user_cost")) else 0.0,
        tools=list(tools),
        max_steps=30,
    )


def _v1_domain(traj: list, domains: _Domains, read: FileRead) -> str | None:
    """The domain whose policy is the system prompt (where tau_bench loads), else the one its title names."""
    first = traj[0] if isinstance(traj[0], dict) else {}
    if first.get("role") != "system" or not isinstance(first.get("content"), str):
        return None
    for name in V1_DOMAINS:
        loaded = domains.peek("tau_bench", name)
        if loaded is not None and loaded.policy == first["content"]:
            return name
    title = first["content"].strip().splitlines()[0].lower() if first["content"].strip() else ""
    found = [d for d in V1_DOMAINS if d in title]
    return found[0] if len(found) == 1 else None


def _v1_task_id(loaded: Any, domain: str, number: int, task: dict) -> tuple[str, str]:
    """(TauGym task id, v1 ``split/index``) of a v1 record's task."""
    if loaded is None:
        return f"{domain}-{number:03d}", f"test/{number}"
    instruction = task.get("instruction")
    candidates = []
    for split in ("test", "train", "dev"):
        indices = loaded.splits.get(split, [])
        if number < len(indices):
            candidates.append((split, indices[number]))
    for split, index in candidates:
        spec = loaded.tasks[index]
        if instruction is None or spec.user_instructions == instruction:
            return spec.task_id, f"{split}/{number}"
    # tau-bench edited some task texts after runs were recorded ("You amelia_..." became "Your user id is
    # amelia_..."): the same user, gold actions and outputs are the same task
    actions = [
        (a.get("name"), a.get("kwargs", a.get("arguments"))) for a in task.get("actions") or [] if isinstance(a, dict)
    ]
    outputs = tuple(str(o) for o in task.get("outputs") or [])
    user = f"My user id is {task.get('user_id')}." if task.get("user_id") else ""
    for split, index in candidates:
        spec = loaded.tasks[index]
        same_actions = actions == [(a["name"], a["arguments"]) for a in spec.gold_actions]
        if user and spec.known_info == user and same_actions and spec.communicate_info == outputs:
            return spec.task_id, f"{split}/{number}"
    if not candidates:
        raise _Bad(f"unknown task id {number}: tau_bench {domain} has {len(loaded.splits.get('test', []))} test tasks")
    raise _Bad(f"unknown task: no split of tau_bench {domain} has task {number} with the recorded instruction")


def _v1_termination(messages: list[dict]) -> str:
    from taugym.backends.base import USER_STOP_TOKENS

    last = messages[-1]
    if last["role"] == "user" and any(token in (last["content"] or "") for token in USER_STOP_TOKENS):
        return "user"
    if last["role"] == "tool" and last.get("name") in V1_TERMINATE_TOOLS:
        return "agent"
    return "max_steps"


def _read_tau2(read: FileRead, text: str, domains: _Domains) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        read.problems.append(
            Problem(
                read.file,
                None,
                f"invalid or truncated JSON ({exc.msg} at line {exc.lineno} "
                f"column {exc.colno}); a tau2 Results file is read whole",
            )
        )
        return
    simulations = data.get("simulations")
    info = data.get("info")
    if not isinstance(simulations, list) or not isinstance(info, dict):
        read.problems.append(
            Problem(read.file, None, "not a tau2 Results file: it needs 'info' (an object) and 'simulations' (a list)")
        )
        return
    environment = info.get("environment_info") if isinstance(info.get("environment_info"), dict) else {}
    name = environment.get("domain_name")
    if not isinstance(name, str):
        read.problems.append(Problem(read.file, None, "info.environment_info.domain_name is missing"))
        return
    loaded = domains.get("tau2", name, read)
    if loaded is None:
        return
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT

    policy = environment.get("policy") if isinstance(environment.get("policy"), str) else loaded.policy
    system = SYSTEM_PROMPT.format(agent_instruction=AGENT_INSTRUCTION, domain_policy=policy)
    agent = info.get("agent_info") if isinstance(info.get("agent_info"), dict) else {}
    user = info.get("user_info") if isinstance(info.get("user_info"), dict) else {}
    by_native = {spec.native_id: spec for spec in loaded.tasks}
    for position, simulation in enumerate(simulations):
        try:
            trajectory = _tau2_trajectory(read, position, simulation, loaded, by_native, system)
        except _Bad as exc:
            read.problems.append(Problem(read.file, position, str(exc)))
            continue
        trajectory.agent_model = agent.get("llm") if isinstance(agent.get("llm"), str) else None
        trajectory.user_model = user.get("llm") if isinstance(user.get("llm"), str) else None
        trajectory.max_steps = info.get("max_steps") if _is_int(info.get("max_steps")) else None
        read.trajectories.append(trajectory)


def _check_record(record: Any, what: str, key: str, other_key: str, other: str) -> None:
    """Refuse a record that is not a JSON object holding ``key``, saying when it looks like the other format's."""
    if not isinstance(record, dict):
        raise _Bad(f"{what} must be a JSON object, got {_json_type(record)}")
    if key not in record:
        hint = f" (it looks like {other})" if other_key in record else ""
        raise _Bad(f"the {what.split()[-1]} has no {key!r}{hint}")


def _count(record: dict, key: str, default: Any, optional: bool = False) -> Any:
    """``record[key]`` (or ``default`` where absent), refused unless an integer >= 0 (or None, if ``optional``)."""
    value = record.get(key, default)
    if not (optional and value is None) and (not _is_int(value) or value < 0):
        raise _Bad(f"{key!r} must be a non-negative integer, got {_json_type(value)} {value!r:.40}")
    return value


def _tau2_trajectory(
    read: FileRead, position: int, simulation: Any, loaded: Any, by_native: dict, system: str
) -> Trajectory:
    from pydantic import ValidationError
    from tau2.data_model.simulation import SimulationRun

    from taugym.backends.tau2_backend import openai_messages

    _check_record(simulation, "a tau2 simulation", "messages", "traj", "a v1 record: pass the v1 results file")
    _count(simulation, "trial", None, optional=True)  # checked here; the trial is read from the parsed run
    reward_info = simulation.get("reward_info")
    if reward_info is not None and (not isinstance(reward_info, dict) or not _is_number(reward_info.get("reward"))):
        raise _Bad("'reward_info.reward' must be a number")
    for i, message in enumerate(simulation["messages"] if isinstance(simulation["messages"], list) else []):
        if isinstance(message, dict) and message.get("role") not in ROLES:
            raise _Bad(f"messages[{i}] has unknown role {message.get('role')!r}; roles are {list(ROLES)}")
    try:
        run = SimulationRun.model_validate(simulation)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _Bad(f"not a tau2 SimulationRun: {where}: {first['msg']}") from None
    spec = by_native.get(str(run.task_id))
    if spec is None:
        raise _Bad(f"unknown task id {run.task_id!r}: tau2 {loaded.name} has no such task")
    messages = [{"role": "system", "content": system}, *openai_messages(run.messages)]
    messages = _check_messages(messages, loaded.tool_schemas + loaded.user_tool_schemas)
    termination = TERMINATIONS_FROM_TAU2.get(run.termination_reason.value, "error")
    return Trajectory(
        format=TAU2,
        file=read.file,
        position=position,
        backend="tau2",
        domain=loaded.name,
        task_id=spec.task_id,
        native_task_id=str(run.task_id),
        trial=int(run.trial or 0),
        reward=None if run.reward_info is None else float(run.reward_info.reward),
        messages=messages,
        termination=termination,
        reward_info=simulation.get("reward_info"),
        seed=int(run.seed or 0),
        duration_s=float(run.duration),
        cost_usd=float((run.agent_cost or 0.0) + (run.user_cost or 0.0)),
        tools=list(loaded.tool_schemas),
    )


# ----------------------------------------------------------------- checking
def _check_messages(messages: list, tools: list[dict] | None) -> list[dict]:
    """The messages as OpenAI chat messages; raises _Bad naming the first bad one.

    ``tools`` None: tool names are not checked (the domain could not be loaded).
    """
    names = None if tools is None else {schema["function"]["name"] for schema in tools}
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _Bad(f"messages[{i}] must be an object, got {_json_type(message)}")
        role = message.get("role")
        if role not in ROLES:
            raise _Bad(f"messages[{i}] has unknown role {role!r}; roles are {list(ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise _Bad(f"messages[{i}].content must be text or null, got {_json_type(content)}")
        calls = message.get("tool_calls")
        if calls is not None:
            if role not in ("assistant", "user"):  # tau2's users call their own tools (telecom)
                raise _Bad(f"messages[{i}] ({role}) cannot hold tool_calls")
            if not isinstance(calls, list):
                raise _Bad(f"messages[{i}].tool_calls must be a list, got {_json_type(calls)}")
            for j, call in enumerate(calls):
                _check_call(call, names, f"messages[{i}].tool_calls[{j}]")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _Bad(f"messages[{i}] is a tool result without a tool_call_id")
        checked.append(
            {key: message[key] for key in ("role", "content", "tool_calls", "tool_call_id", "name") if key in message}
        )
    return checked


def _check_call(call: Any, names: set[str] | None, where: str) -> None:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise _Bad(f"{where} must be an OpenAI tool call {{id, type, function: {{name, arguments}}}}")
    function = call["function"]
    name = function.get("name")
    if not isinstance(name, str):
        raise _Bad(f"{where}.function.name must be text, got {_json_type(name)}")
    if names is not None and name not in names:
        raise _Bad(f"{where} calls unknown tool {name!r}; the domain's tools are {sorted(names)}")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise _Bad(f"{where}.function.arguments is not valid JSON: {function['arguments']!r:.60}") from None
    if not isinstance(arguments, dict):
        raise _Bad(f"{where}.function.arguments must be a JSON object, got {_json_type(arguments)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Domains:
    """Backends' domains, loaded once per (backend, domain); None where one cannot be loaded here."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], Any] = {}
        self._why: dict[tuple[str, str], str] = {}

    def peek(self, backend: str, domain: str) -> Any:
        """The domain, or None where it cannot be loaded (nothing reported)."""
        self._load(backend, domain)
        return self._loaded[(backend, domain)]

    def _load(self, backend: str, domain: str) -> None:
        key = (backend, domain)
        if key not in self._loaded:
            from taugym.backends import get_backend

            try:
                self._loaded[key] = get_backend(backend).load_domain(domain)
            except (ImportError, ValueError) as exc:
                self._loaded[key] = None
                self._why[key] = str(exc).split(";")[0]

    def get(self, backend: str, domain: str, read: FileRead) -> Any:
        key = (backend, domain)
        self._load(backend, domain)
        if self._loaded[key] is None:
            if backend == "tau2":
                read.problems.append(Problem(read.file, None, f"tau2 has no domain {domain!r}: {self._why[key]}"))
            else:
                note = (
                    f"{backend} {domain} cannot be loaded here ({self._why[key]}): tool names and task ids "
                    f"were not checked, task ids are v1's test-split indices"
                )
                if note not in read.notes:
                    read.notes.append(note)
        return self._loaded[key]


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """``text`` as a file-name-safe token."""
    return _SAFE.sub("-", text).strip("-.") or "x"
