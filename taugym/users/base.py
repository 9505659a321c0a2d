"""The interface of a simulated user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from taugym.backends.base import TaskSpec


class SimulatedUser(ABC):
    """A customer talking to the agent.

    ``start`` gives the user's first message for a task; ``respond`` answers
    one agent message. A reply containing one of
    :data:`taugym.backends.base.USER_STOP_TOKENS` ends the conversation. The
    async variants let many envs in one process overlap their waits; a user
    that does no I/O keeps the default, which calls the sync method.
    """

    @abstractmethod
    def start(self, task: TaskSpec, agent_greeting: str, seed: int) -> str:
        """Begin a conversation about ``task``; return the user's first message."""

    @abstractmethod
    def respond(self, agent_message: str) -> str:
        """Reply to one message from the agent."""

    async def astart(self, task: TaskSpec, agent_greeting: str, seed: int) -> str:
        return self.start(task, agent_greeting, seed)

    async def arespond(self, agent_message: str) -> str:
        return self.respond(agent_message)

    def usage(self) -> dict[str, Any]:
        """LLM accounting of the current conversation (empty for offline users)."""
        return {}
