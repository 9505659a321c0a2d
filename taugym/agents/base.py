"""The one interface of a TauGym policy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Policy(ABC):
    """Maps the env's observation and info to the next action string.

    ``act`` is called once per step with what the last ``reset``/``step``
    returned. ``aact`` is its coroutine form; a policy that waits on I/O (an
    LLM) overrides it so many episodes overlap their waits.
    """

    name: str = "policy"

    @abstractmethod
    def act(self, observation: dict, info: dict) -> Any:
        """The next action: an action string (or an OpenAI tool-call dict)."""

    async def aact(self, observation: dict, info: dict) -> Any:
        return self.act(observation, info)

    def usage(self) -> dict[str, Any]:
        """LLM accounting of the current episode (empty for offline policies)."""
        return {}

    def behaviour(self) -> dict[str, Any] | None:
        """``{"token_ids", "logprobs"}`` of the last action's completion where the policy's
        model returned them (either may be None), for off-policy learning; None for policies
        without a model."""
        return None
