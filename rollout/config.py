"""RolloutConfig: what a rollout job runs, read from ``configs/rollout/*.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from taugym.agents import AGENTS
from taugym.config import TauGymConfig, load_yaml_mapping, options_dataclass


@dataclass
class RolloutConfig:
    """A rollout job: tasks × trials × one agent, over Ray actors.

    Attributes:
        domains: the domains to run (``task_category`` of each env).
        tasks: ``"all"`` (every task of the domain), a split name
            (``"test"``, ``"train"``, ...) or a list of task ids.
        trials: episodes per task (pass^k is reported for k = 1..trials).
        seed: base seed; each (domain, task, trial) gets its own seed from it.
        agent: ``{"name": "oracle" | "random" | "llm", ...options}``.
        env: TauGymConfig options shared by every env (backend, user, limits).
        actors: Ray actors, each holding its own envs and agent.
        cpus_per_actor: Ray CPUs reserved per actor.
        episodes_per_actor: episodes one actor runs concurrently (async envs
            overlap their LLM waits).
        max_attempts_per_episode: how often a work item is re-run after its
            actor died before it is recorded as an error.
        rows_per_file: episodes per Parquet file before it is published.
        max_cost_usd: stop starting episodes once the dataset's LLM cost
            (litellm's accounting, earlier runs included) reaches this; None:
            no cap. Resume with a higher cap to go on.
        out: output directory (``--out`` overrides).
    """

    domains: list[str] = field(default_factory=lambda: ["retail", "airline"])
    tasks: Union[str, list[str]] = "all"
    trials: int = 1
    seed: int = 0
    agent: dict = field(default_factory=lambda: {"name": "oracle"})
    env: dict = field(default_factory=lambda: {"user_strategy": "scripted"})
    actors: int = 2
    cpus_per_actor: float = 1.0
    episodes_per_actor: int = 1
    max_attempts_per_episode: int = 3
    rows_per_file: int = 256
    max_cost_usd: Optional[float] = None
    out: str = "runs/default"

    def validate(self) -> "RolloutConfig":
        """Check the values; raise ``ValueError`` saying what to write instead."""
        if not isinstance(self.domains, list) or not self.domains:
            raise ValueError("domains must be a non-empty list such as [retail, airline]")
        if not (self.tasks == "all" or isinstance(self.tasks, (str, list))):
            raise ValueError("tasks must be 'all', a split name, or a list of task ids")
        for name in ("trials", "actors", "episodes_per_actor", "max_attempts_per_episode", "rows_per_file"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_cost_usd is not None and (isinstance(self.max_cost_usd, bool) or not isinstance(self.max_cost_usd, (int, float))
                                              or not self.max_cost_usd > 0 or self.max_cost_usd == float("inf")):
            raise ValueError(f"max_cost_usd must be a number of dollars > 0 (or null for no cap), got {self.max_cost_usd!r}")
        if not isinstance(self.cpus_per_actor, (int, float)) or self.cpus_per_actor < 0:
            raise ValueError(f"cpus_per_actor must be a number >= 0, got {self.cpus_per_actor!r}")
        if not isinstance(self.agent, dict) or self.agent.get("name") not in AGENTS:
            raise ValueError(f"agent must be a mapping with name one of {list(AGENTS)}, got {self.agent!r}")
        self._check_agent_options()
        self.env_config()  # raises on bad env options
        return self

    def _check_agent_options(self) -> None:
        """Refuse agent options the agent does not take, before any actor starts."""
        import inspect

        from taugym.agents import agent_class

        options = set(self.agent) - {"name"}
        accepted = set(inspect.signature(agent_class(self.agent["name"])).parameters) - {"self", "client"}
        unknown = sorted(options - accepted)
        if unknown:
            raise ValueError(f"agent {self.agent['name']!r} has no option(s) {unknown}; its options are {sorted(accepted)}")

    def env_config(self, domain: Optional[str] = None) -> TauGymConfig:
        """The TauGymConfig of the envs (for ``domain`` when given)."""
        values = dict(self.env)
        if domain is not None:
            values["task_category"] = domain
        return TauGymConfig.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RolloutConfig":
        """Build a config from a mapping; unknown keys raise ``ValueError``."""
        return options_dataclass(cls, values, "rollout").validate()

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "RolloutConfig":
        """Load a rollout config from a YAML file."""
        return cls.from_dict(load_yaml_mapping(path, "rollout config", "configs/rollout/"))

    def with_overrides(self, overrides: list[str]) -> "RolloutConfig":
        """Apply ``key=value`` overrides (YAML values; ``env.max_steps=10`` reaches into a mapping)."""
        values = dataclasses.asdict(self)
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value, e.g. actors=4 or env.max_steps=10")
            key, raw = item.split("=", 1)
            value = yaml.safe_load(raw)
            target = values
            *parents, leaf = key.strip().split(".")
            for parent in parents:
                if not isinstance(target.get(parent), dict):
                    raise ValueError(f"override {item!r}: {parent!r} is not a mapping option")
                target = target[parent]
            target[leaf] = value
        return RolloutConfig.from_dict(values)
