"""Policies that drive a TauEnv: oracle and random references, and the LLM agent."""

from __future__ import annotations

from typing import Any

from taugym.agents.base import Policy
from taugym.agents.oracle import OraclePolicy
from taugym.agents.random_policy import RandomPolicy

__all__ = ["Policy", "OraclePolicy", "RandomPolicy", "agent_class", "make_agent", "AGENTS"]

AGENTS = ("oracle", "random", "llm")


def agent_class(name: str) -> type[Policy]:
    """The policy class called ``name`` (``oracle``, ``random`` or ``llm``)."""
    if name == "oracle":
        return OraclePolicy
    if name == "random":
        return RandomPolicy
    if name == "llm":
        from taugym.agents.llm import LLMAgent  # imports the LLM client only when asked for

        return LLMAgent
    raise ValueError(f"agent must be one of {list(AGENTS)}, got {name!r}")


def make_agent(name: str, **options: Any) -> Policy:
    """The policy called ``name``, built with ``options``."""
    return agent_class(name)(**options)
