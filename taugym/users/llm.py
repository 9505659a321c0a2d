"""LLMUser: the benchmark's LLM user simulator, through TauGym's one LLM client.

The user model gets the backend's own user-simulation guidelines and the
task's scenario as its system prompt (tau2's ``UserSimulator`` layout; v1's
for the tau_bench backend), and the conversation with roles flipped: the
agent's messages are its "user" turns, its own replies its "assistant"
turns. It ends the conversation by writing ``###STOP###`` (or
``###TRANSFER###`` / ``###OUT-OF-SCOPE###``), as the guidelines instruct.

A call that fails after all retries raises :class:`taugym.llm.LLMCallError`;
the env ends the episode as an error with that cause.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from taugym.backends.base import TaskSpec
from taugym.config import TauGymConfig
from taugym.llm.client import LLMCallError, LLMClient, LLMUsage
from taugym.users.base import SimulatedUser

DEFAULT_GREETING = "Hi! How can I help you today?"


class LLMUser(SimulatedUser):
    """A user played by an LLM (see the module docstring)."""

    def __init__(self, client: LLMClient, system_prompt_for: Callable[[TaskSpec], str], sampling: Optional[dict] = None):
        self.client = client
        self.system_prompt_for = system_prompt_for
        self.sampling = dict(sampling or {})
        self._system = ""
        self._history: list[dict] = []
        self._usage = LLMUsage()

    @classmethod
    def from_config(cls, config: TauGymConfig, system_prompt_for: Callable[[TaskSpec], str]) -> "LLMUser":
        from taugym.llm.factory import client_from_config

        client = client_from_config(config, config.user_model, config.user_provider, config.user_base_url, config.user_llm_args)
        return cls(client, system_prompt_for)

    def _begin(self, task: TaskSpec) -> None:
        self._system = self.system_prompt_for(task)
        self._history = []
        self._usage = LLMUsage()

    def _messages(self, agent_message: str) -> list[dict]:
        self._history.append({"role": "user", "content": agent_message})
        return [{"role": "system", "content": self._system}, *self._history]

    def _keep(self, response: Any) -> str:
        self._usage.add(response)
        text = response.content or ""
        self._history.append({"role": "assistant", "content": text})
        return text

    def start(self, task: TaskSpec, agent_greeting: str, seed: int) -> str:
        self._begin(task)
        return self.respond(agent_greeting or DEFAULT_GREETING)

    async def astart(self, task: TaskSpec, agent_greeting: str, seed: int) -> str:
        self._begin(task)
        return await self.arespond(agent_greeting or DEFAULT_GREETING)

    def respond(self, agent_message: str) -> str:
        try:
            return self._keep(self.client.complete(self._messages(agent_message), **self.sampling))
        except LLMCallError as exc:
            self._usage.add(exc.usage)  # failed attempts count too
            raise

    async def arespond(self, agent_message: str) -> str:
        try:
            return self._keep(await self.client.acomplete(self._messages(agent_message), **self.sampling))
        except LLMCallError as exc:
            self._usage.add(exc.usage)
            raise

    def usage(self) -> dict[str, Any]:
        return self._usage.as_dict()
