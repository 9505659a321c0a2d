"""Policies that drive a TauEnv: oracle and random references, and the LLM agent."""

from __future__ import annotations

import inspect
from typing import Any

from taugym.agents.base import Policy
from taugym.agents.oracle import OraclePolicy
from taugym.agents.random_policy import RandomPolicy

__all__ = ["Policy", "OraclePolicy", "RandomPolicy", "agent_class", "make_agent", "AGENTS"]

AGENTS = ("oracle", "random", "llm")


def agent_class(name: str) -> type[Policy]:
    """The policy class called ``name`` (``oracle``, ``random`` or ``llm``), or a ``package.module:Class``
    of another package (e.g. ``train.agent:CheckpointPolicy``), imported when named."""
    if isinstance(name, str) and ":" in name:
        import importlib

        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"agent {name!r} cannot be imported ({exc}); name a package.module:Class") from None
        if not (isinstance(cls, type) and issubclass(cls, Policy)):
            raise ValueError(f"agent {name!r} is not a taugym.agents.Policy subclass")
        return cls
    if name == "oracle":
        return OraclePolicy
    if name == "random":
        return RandomPolicy
    if name == "llm":
        from taugym.agents.llm import LLMAgent  # imports the LLM client only when asked for

        return LLMAgent
    raise ValueError(f"agent must be one of {list(AGENTS)} or a package.module:Class, got {name!r}")


def make_agent(name: str, episode_seed: int | None = None, **options: Any) -> Policy:
    """The policy called ``name``, built with ``options``.

    A policy that takes a ``seed`` and was given none gets ``episode_seed``
    (the rollout job passes each episode's own): its trials then sample
    differently (pass^k of a sampling policy means something) and a run repeats.
    """
    cls = agent_class(name)
    if episode_seed is not None and "seed" not in options and "seed" in inspect.signature(cls).parameters:
        options["seed"] = int(episode_seed)
    return cls(**options)
