"""LLMUser: the benchmark's LLM user simulator, through TauGym's one LLM client.

The user model gets the backend's own user-simulation guidelines and the
task's scenario as its system prompt (tau2's ``UserSimulator`` layout; v1's
for the tau_bench backend), and the conversation with roles flipped: the
agent's messages are its "user" turns, its own replies its "assistant"
turns. It ends the conversation by writing ``###STOP###`` (or
``###TRANSFER###`` / ``###OUT-OF-SCOPE###``), as the guidelines instruct.

Where the domain gives the user tools (tau2 telecom: the user's phone), the
model gets them as native tools and tau2's tools guidelines. A reply that
calls tools runs them on the user's device, hands the results back to the
model (never to the agent), and asks again, until the model writes a
message for the agent; more than :data:`MAX_TOOL_CALLS_PER_TURN` calls in
one turn end the episode as an error.

A call that fails after all retries raises :class:`taugym.llm.LLMCallError`;
the env ends the episode as an error with that cause.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from typing import Any

from taugym.backends.base import TaskSpec
from taugym.llm import LLMCallError, LLMClient, LLMResponse, LLMUsage
from taugym.users.base import SimulatedUser, UserDevice

MAX_TOOL_CALLS_PER_TURN = 25
"""Device tool calls the user may make before answering the agent (tau2 bounds them only by its 200 steps)."""

DEFAULT_GREETING = "Hi! How can I help you today?"
"""What the user model answers first where the backend's agent sends no greeting (v1's user does the same)."""

_FLIPPED = {"user": "assistant", "assistant": "user", "tool": "tool"}


class LLMUser(SimulatedUser):
    """A user played by an LLM (see the module docstring)."""

    def __init__(self, client: LLMClient, system_prompt_for: Callable[[TaskSpec], str]):
        self.client = client
        self.system_prompt_for = system_prompt_for
        self._system = ""
        self._history: list[dict] = []
        self._device: UserDevice | None = None
        self._usage = LLMUsage()

    def begin(self, task: TaskSpec, seed: int, history: Sequence[dict] = (), device: UserDevice | None = None) -> None:
        self._system = self.system_prompt_for(task)
        self._device = device if device is not None and device.schemas else None
        self._history = [{**message, "role": _FLIPPED[message["role"]]} for message in history]
        self._usage = LLMUsage()

    def _turn(self, agent_message: str) -> Generator[list[dict], LLMResponse, str]:
        """One user turn: yields each request's messages, receives the model's reply."""
        if not agent_message and not self._history:
            agent_message = DEFAULT_GREETING
        self._history.append({"role": "user", "content": agent_message})
        calls = 0
        while True:
            response = yield [{"role": "system", "content": self._system}, *self._history]
            self._usage.add(response)
            if not (response.tool_calls and self._device is not None):
                text = response.content or ""
                self._history.append({"role": "assistant", "content": text})
                return text
            self._history.append({"role": "assistant", "content": response.content, "tool_calls": response.tool_calls})
            for call in response.tool_calls:
                calls += 1
                if calls > MAX_TOOL_CALLS_PER_TURN:
                    raise RuntimeError(
                        f"the user model made more than {MAX_TOOL_CALLS_PER_TURN} device tool calls without "
                        "answering the agent"
                    )
                function = call.get("function") or {}
                result = self._device.call(
                    function.get("name", ""), _arguments(function.get("arguments")), call.get("id")
                )
                self._history.append({"role": "tool", "tool_call_id": call.get("id"), "content": result})

    def _tools(self) -> list[dict] | None:
        return self._device.schemas if self._device is not None else None

    def respond(self, agent_message: str) -> str:
        turn = self._turn(agent_message)
        try:
            messages = next(turn)
            while True:
                try:
                    response = self.client.complete(messages, tools=self._tools())
                except LLMCallError as exc:
                    self._usage.add(exc.usage)  # failed attempts count too
                    raise
                messages = turn.send(response)
        except StopIteration as done:
            return done.value

    async def arespond(self, agent_message: str) -> str:
        turn = self._turn(agent_message)
        try:
            messages = next(turn)
            while True:
                try:
                    response = await self.client.acomplete(messages, tools=self._tools())
                except LLMCallError as exc:
                    self._usage.add(exc.usage)
                    raise
                messages = turn.send(response)
        except StopIteration as done:
            return done.value

    def usage(self) -> dict[str, Any]:
        return self._usage.as_dict()


def _arguments(raw: Any) -> Any:
    """A tool call's arguments as the model sent them: JSON text becomes an object."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return raw
    return raw if raw is not None else {}
