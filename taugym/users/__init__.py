"""Simulated users: the scripted offline user and the LLM user."""

from __future__ import annotations

from taugym.backends.base import Domain
from taugym.config import TauGymConfig
from taugym.users.base import SimulatedUser, UserDevice
from taugym.users.replay import ReplayUser
from taugym.users.scripted import ScriptedUser

__all__ = ["SimulatedUser", "ReplayUser", "ScriptedUser", "UserDevice", "make_user"]


def make_user(config: TauGymConfig, domain: Domain) -> SimulatedUser:
    """The user that ``config.user_strategy`` names."""
    if config.user_strategy == "scripted":
        return ScriptedUser()
    if config.user_strategy == "replay":
        return ReplayUser()
    if config.user_strategy == "llm":
        from taugym.users.llm import LLMUser

        sampling = domain.default_user_llm_args if config.user_llm_args is None else config.user_llm_args
        from taugym.llm import LLMClient

        return LLMUser(LLMClient(config.user_llm, **sampling), domain.user_system_prompt)
    raise ValueError(f"user_strategy must be 'llm', 'scripted' or 'replay', got {config.user_strategy!r}")
