"""RolloutConfig: what a rollout job runs, read from ``configs/rollout/*.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taugym.agents import AGENTS
from taugym.backends import get_backend
from taugym.backends.base import Domain
from taugym.config import TauGymConfig, apply_overrides, check_options, load_yaml_mapping
from taugym.llm.settings import LLMSettings, is_finite_number, options_dataclass


@dataclass
class RolloutConfig:
    """A rollout job: tasks × trials × one agent, over Ray actors.

    Attributes:
        domains: the domains to run (``task_category`` of each env).
        tasks: None (default: the backend's default split, ``base`` on tau2
            as ``tau2 run``, ``test`` on v1), a split name (``"train"``,
            ``"test"``, ``"base"``, telecom's ``"full"``), ``"all"`` (every
            task of the domain's task list) or a list of task ids.
        trials: episodes per task (pass^k is reported for k = 1..trials).
        seed: base seed; each (domain, task, trial) gets its own seed from it.
        agent: ``{"name": "oracle" | "random" | "llm", ...options}``; an LLM
            agent's timeout, attempts, backoff and limits default to the env's
            ``llm_*`` options (see :meth:`agent_options`).
        env: TauGymConfig options shared by every env (backend, user, limits).
        actors: Ray actors, each holding its own envs and agent.
        cpus_per_actor: Ray CPUs reserved per actor.
        episodes_per_actor: episodes one actor runs concurrently (async envs
            overlap their LLM waits).
        ramp_s: seconds over which the first ``actors × episodes_per_actor``
            episodes start, evenly (0: all at once). Episodes started
            together call their LLMs together and end together (scoring,
            results through Ray, writing, the next reset), round after
            round, in bursts that queue on the CPUs and at the provider; a
            ramp of about one episode's duration spreads them for the run.
        max_attempts_per_episode: how often a work item is re-run after its
            actor died before it is recorded as an error.
        rows_per_file: episodes per Parquet file before it is published.
        max_cost_usd: stop starting episodes once the dataset's LLM cost
            (litellm's accounting, earlier runs included) reaches this; None:
            no cap. Resume with a higher cap to go on.
        out: output directory (``--out`` overrides).
    """

    domains: list[str] = field(default_factory=lambda: ["retail", "airline"])
    tasks: str | list[str] | None = None
    trials: int = 1
    seed: int = 0
    agent: dict = field(default_factory=lambda: {"name": "oracle"})
    env: dict = field(default_factory=lambda: {"user_strategy": "scripted"})
    actors: int = 2
    cpus_per_actor: float = 1.0
    episodes_per_actor: int = 1
    ramp_s: float = 0.0
    max_attempts_per_episode: int = 3
    rows_per_file: int = 256
    max_cost_usd: float | None = None
    out: str = "runs/default"

    def validate(self) -> RolloutConfig:
        """Check the values; raise ``ValueError`` saying what to write instead.

        Everything an actor would refuse is refused here, before any work
        starts: each domain's env is built once and the task ids are looked up.
        """
        if not isinstance(self.domains, list) or not self.domains or not all(isinstance(d, str) for d in self.domains):
            raise ValueError("domains must be a non-empty list such as [retail, airline]")
        tasks = self.tasks
        if not (
            tasks is None
            or isinstance(tasks, str)
            and tasks
            or isinstance(tasks, list)
            and tasks
            and all(isinstance(t, str) for t in tasks)
        ):
            raise ValueError(
                "tasks must be null (the backend's default split), 'all', a split name, or a list of task ids "
                f"such as [retail-000, airline-001], got {tasks!r}"
            )
        check_options(
            self,
            counts=("seed",),
            positive_ints=("trials", "actors", "episodes_per_actor", "max_attempts_per_episode", "rows_per_file"),
        )
        if self.max_cost_usd is not None and not (is_finite_number(self.max_cost_usd) and self.max_cost_usd > 0):
            raise ValueError(
                f"max_cost_usd must be a number of dollars > 0 (or null for no cap), got {self.max_cost_usd!r}"
            )
        if not is_finite_number(self.ramp_s) or self.ramp_s < 0:
            raise ValueError(
                f"ramp_s must be a number of seconds >= 0 (0: start every slot at once), got {self.ramp_s!r}"
            )
        if not is_finite_number(self.cpus_per_actor) or self.cpus_per_actor < 0:
            raise ValueError(f"cpus_per_actor must be a number >= 0, got {self.cpus_per_actor!r}")
        if not isinstance(self.out, str) or not self.out.strip():
            raise ValueError(f"out must be a folder path such as runs/default, got {self.out!r}")
        if not isinstance(self.env, dict):
            raise ValueError(
                f"env must be a mapping of TauGymConfig options such as {{user_strategy: scripted}}, got {self.env!r}"
            )
        name = self.agent.get("name") if isinstance(self.agent, dict) else None
        if name not in AGENTS and not (isinstance(name, str) and ":" in name):
            raise ValueError(
                f"agent must be a mapping with name one of {list(AGENTS)} or a package.module:Class, got {self.agent!r}"
            )
        self._check_agent_options()
        self._check_domains_and_tasks()
        return self

    def _check_agent_options(self) -> None:
        """Refuse agent options the agent does not take, or values it would refuse, before any actor starts."""
        import inspect

        from taugym.agents import agent_class, make_agent

        cls = agent_class(self.agent["name"])
        parameters = inspect.signature(cls).parameters.values()
        accepted = {p.name for p in parameters if p.kind is not p.VAR_KEYWORD} - {"self", "client"}
        accepted |= set(getattr(cls, "settings_options", ()))
        unknown = sorted(set(self.agent) - accepted - {"name"})
        if unknown:
            raise ValueError(
                f"agent {self.agent['name']!r} has no option(s) {unknown}; its options are {sorted(accepted)}"
            )
        try:
            make_agent(self.agent["name"], **self.agent_options())  # what each actor builds; it calls no model
        except (TypeError, ValueError) as exc:
            raise ValueError(f"agent option {exc}") from None

    def agent_options(self) -> dict[str, Any]:
        """The agent's options. An LLM agent's call settings (timeout, deadline, attempts, backoff and
        rate limits) default to the env's ``llm_*`` ones, so a YAML writes its limits once."""
        options = {k: v for k, v in self.agent.items() if k != "name"}
        if self.agent["name"] == "llm":
            env_llm = self.env_config().user_llm
            options = {**{name: getattr(env_llm, name) for name in LLMSettings.CALL_OPTIONS}, **options}
        return options

    def _check_domains_and_tasks(self) -> None:
        """Build each domain's env (as the actors do) and look the tasks up in it."""
        from taugym import TauEnv

        if isinstance(self.tasks, list):
            stray = [t for t in self.tasks if t.rpartition("-")[0] not in self.domains]
            if stray:
                raise ValueError(
                    f"task id {stray[0]!r} is not of a domain in domains {self.domains}; "
                    "add its domain to domains or remove the task"
                )
        for domain in self.domains:
            self.task_ids(TauEnv(self.env_config(domain)).domain)

    def task_ids(self, loaded: Domain) -> list[str]:
        """The ids of the tasks ``tasks`` names in the loaded domain; ValueError for a split or id it lacks."""
        domain, tasks = loaded.name, self.tasks
        if isinstance(tasks, list):
            valid = {task.task_id for task in loaded.tasks}
            chosen = [t for t in tasks if t.rpartition("-")[0] == domain]
            unknown = [t for t in chosen if t not in valid]
            if unknown:
                raise ValueError(
                    f"unknown task id(s) {unknown}; valid: {domain}-000 … {domain}-{len(loaded.tasks) - 1:03d}"
                )
            return chosen
        if tasks == "all":
            return [task.task_id for task in loaded.tasks]
        split = loaded.default_split if tasks is None else tasks
        if split not in loaded.splits:
            raise ValueError(f"tasks: {split!r} is not a split of {domain}; valid: {sorted(loaded.splits)} or 'all'")
        return [loaded.tasks[i].task_id for i in loaded.splits[split]]

    def env_config(self, domain: str | None = None) -> TauGymConfig:
        """The TauGymConfig of the envs (for ``domain`` when given).

        A rollout resets each episode with its task id, so the env's
        ``task_split`` is not used; when ``env`` does not set one and the
        default is not a split of ``domain`` (tau2's mock has only ``base``),
        the domain's own split is taken instead of failing.
        """
        values = dict(self.env)
        if domain is None:
            return TauGymConfig.from_dict(values)
        values["task_category"] = domain
        config = TauGymConfig.from_dict(values)
        if "task_split" not in self.env and config.task_split is not None:
            splits = get_backend(config.backend).load_domain(domain).splits
            if config.task_split not in splits:
                chosen = self.tasks if isinstance(self.tasks, str) and self.tasks in splits else next(iter(splits))
                config = config.replace(task_split=chosen)
        return config

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RolloutConfig:
        """Build a config from a mapping; unknown keys raise ``ValueError``."""
        return options_dataclass(cls, values, "rollout").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> RolloutConfig:
        """Load a rollout config from a YAML file."""
        values = load_yaml_mapping(path, "rollout config", "configs/rollout/")
        try:
            return cls.from_dict(values)
        except ValueError as exc:
            raise ValueError(f"rollout config {path}: {exc}") from None

    def with_overrides(self, overrides: list[str]) -> RolloutConfig:
        """Apply ``key=value`` overrides (YAML values; ``env.max_steps=10`` reaches into a mapping)."""
        return RolloutConfig.from_dict(apply_overrides(dataclasses.asdict(self), overrides, "actors=4"))
