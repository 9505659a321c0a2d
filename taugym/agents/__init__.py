"""Policies that drive a TauEnv: oracle and random references, and the LLM agent."""

from __future__ import annotations

from typing import Any

from taugym.agents.base import Policy
from taugym.agents.oracle import OraclePolicy
from taugym.agents.random_policy import RandomPolicy

__all__ = ["Policy", "OraclePolicy", "RandomPolicy", "make_agent", "AGENTS"]

AGENTS = ("oracle", "random", "llm")


def make_agent(name: str, **options: Any) -> Policy:
    """The policy called ``name`` (``oracle``, ``random`` or ``llm``), built with ``options``."""
    if name == "oracle":
        return OraclePolicy(**options)
    if name == "random":
        return RandomPolicy(**options)
    if name == "llm":
        from taugym.agents.llm import LLMAgent

        return LLMAgent(**options)
    raise ValueError(f"agent must be one of {list(AGENTS)}, got {name!r}")
