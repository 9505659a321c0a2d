"""The interface of a simulated user, and the user's own device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from taugym.backends.base import TaskSpec


class UserDevice:
    """The tools the user holds in an episode (tau2 telecom's phone).

    ``schemas`` are OpenAI tool schemas; ``call(name, arguments, call_id)``
    runs one call on the user's own state and returns its result text (an
    ``Error: ...`` text when the call is refused or fails). Results go to the
    user only; the agent never sees them.
    """

    def __init__(self, schemas: list[dict], call: Callable[[str, Any, str | None], str]):
        self.schemas = schemas
        self._call = call

    def tool_names(self) -> list[str]:
        return [schema["function"]["name"] for schema in self.schemas]

    def call(self, name: str, arguments: Any, call_id: str | None = None) -> str:
        return self._call(name, arguments, call_id)


class SimulatedUser(ABC):
    """A customer talking to the agent.

    ``begin`` sets the user up for a task (no I/O): its scenario, its seed,
    the task's initial conversation as the user saw it, and its device when
    the domain gives the user tools. ``respond`` answers one agent message
    (the first one is the agent's greeting). A reply containing one of
    :data:`taugym.backends.base.USER_STOP_TOKENS` ends the conversation. The
    async ``arespond`` lets many envs in one process overlap their waits; a
    user that does no I/O keeps the default, which calls ``respond``.
    """

    @abstractmethod
    def begin(self, task: TaskSpec, seed: int, history: Sequence[dict] = (), device: UserDevice | None = None) -> None:
        """Set up a conversation about ``task``. ``history`` is in the benchmark's roles
        (``user``: the user's own turns; ``assistant``: the agent's; ``tool``: results of
        the user's own tool calls)."""

    @abstractmethod
    def respond(self, agent_message: str) -> str:
        """Reply to one message from the agent."""

    async def arespond(self, agent_message: str) -> str:
        return self.respond(agent_message)

    def start(self, task: TaskSpec, agent_greeting: str, seed: int, device: UserDevice | None = None) -> str:
        """``begin`` a fresh conversation and reply to the agent's greeting."""
        self.begin(task, seed, device=device)
        return self.respond(agent_greeting)

    def usage(self) -> dict[str, Any]:
        """LLM accounting of the current conversation (empty for offline users)."""
        return {}

    def notes(self) -> list[str]:
        """What the user has to report about the current conversation (the replay user's
        divergences from its record); the env puts them in ``info["user_notes"]``."""
        return []
