"""LLMAgent: a tool-calling LLM that drives TauEnv through the action protocol.

Two modes, one client (retries, limits and accounting as every LLM call):

* ``native_tools=True`` (default): the model gets the env's conversation in
  OpenAI chat format (``info["messages"]``: the benchmark's system prompt and
  policy first) and the tool schemas (``info["tools"]``) as native tools. A
  tool call in its reply becomes the action (the env takes OpenAI tool-call
  dicts); text becomes ``[action] <text>``. Actions the env refused come back
  to the model as a note, so it can correct itself.
* ``native_tools=False``: for models without tool calling. The model gets the
  policy, the protocol help and the tool list as text, and the history of its
  own actions and the env's feedback; its reply must be one bracketed action
  (``[answer] {...}``, ``[action] ...``, ``[finish]``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from taugym.actions import PROTOCOL_HELP
from taugym.agents.base import Policy
from taugym.llm import LLMCallError, LLMClient, LLMSettings, LLMUsage, check_sampling_args


class LLMAgent(Policy):
    """An LLM policy (see the module docstring).

    Args:
        native_tools: native tool calling (True) or the bracketed text protocol.
        client: an existing :class:`LLMClient` (then no settings are taken).
        sampling: sampling arguments (default ``{"temperature": 0.0}``; add ``"logprobs": True``
            to keep the completion's token log-probs, see :meth:`behaviour`).
        **settings: the :class:`~taugym.llm.LLMSettings` of the client it
            builds: ``model`` (default ``gpt-4o``), ``provider``, ``base_url``,
            ``timeout_s``, ``deadline_s``, ``max_attempts``, ``backoff_*``,
            ``requests_per_minute``, ``tokens_per_minute``, ``max_concurrency``
            (limits shared with every client of the same endpoint in the
            process, or the cluster-wide limiter a rollout installs).
    """

    name = "llm"
    settings_options = tuple(f.name for f in fields(LLMSettings))
    """The options ``**settings`` takes (what a rollout config may set beside the named ones)."""

    def __init__(
        self,
        native_tools: bool = True,
        client: LLMClient | None = None,
        sampling: dict | None = None,
        **settings: Any,
    ):
        if not isinstance(native_tools, bool):
            raise ValueError(f"native_tools must be true or false, got {native_tools!r}")
        if client is None:
            sampling = sampling or {"temperature": 0.0}
            check_sampling_args("sampling", sampling)
            client = LLMClient(LLMSettings.from_options(settings), **sampling)
        self.client = client
        self.native_tools = native_tools
        self._episode: str | None = None
        self._notes: list[tuple[int, str]] = []
        self._text_history: list[dict] = []
        self._usage = LLMUsage()
        self._behaviour: dict | None = None

    def _new_episode(self, info: dict) -> None:
        if info.get("episode_id") != self._episode or int(info.get("step_count", 0)) == 0:
            self._episode = info.get("episode_id")
            self._notes = []
            self._text_history = []
            self._usage = LLMUsage()

    def _native_request(self, observation: dict, info: dict) -> tuple[list[dict], list[dict]]:
        messages = list(info["messages"])
        feedback = observation.get("feedback", "")
        if feedback.startswith("Error:"):  # a refused action is not in the conversation: say so
            self._notes.append((len(messages), feedback))
        for position, note in sorted(self._notes, reverse=True):
            messages.insert(
                position, {"role": "user", "content": f"[environment] Your last action was refused. {note}"}
            )
        return messages, info["tools"]

    def _text_request(self, observation: dict, info: dict) -> list[dict]:
        if not self._text_history:
            system = f"{observation['instruction']}\n\n{PROTOCOL_HELP}\n\n{observation['tools_info']}"
            self._text_history = [{"role": "system", "content": system}]
        self._text_history.append({"role": "user", "content": observation["feedback"]})
        return list(self._text_history)

    def _to_action(self, response: Any) -> Any:
        if self.native_tools and response.tool_calls:
            return {"role": "assistant", "content": None, "tool_calls": response.tool_calls[:1]}
        text = (response.content or "").strip()
        if not self.native_tools:
            self._text_history.append({"role": "assistant", "content": text})
            return text
        return text if text.startswith("[") else f"[action] {text}"

    def _request(self, observation: dict, info: dict) -> tuple[list[dict], list[dict] | None]:
        self._new_episode(info)
        if self.native_tools:
            return self._native_request(observation, info)
        return self._text_request(observation, info), None

    def _account(self, response: Any = None, error: LLMCallError | None = None) -> None:
        self._usage.add(error.usage if error is not None else response)
        self._behaviour = None if response is None else {"token_ids": response.token_ids, "logprobs": response.logprobs}

    def behaviour(self) -> dict | None:
        """Token ids and log-probs of the last completion (request them with ``sampling={"logprobs": True}``)."""
        return self._behaviour

    def act(self, observation: dict, info: dict) -> Any:
        messages, tools = self._request(observation, info)
        try:
            response = self.client.complete(messages, tools=tools)
        except LLMCallError as exc:
            self._account(error=exc)  # failed attempts count too
            raise
        self._account(response)
        return self._to_action(response)

    async def aact(self, observation: dict, info: dict) -> Any:
        messages, tools = self._request(observation, info)
        try:
            response = await self.client.acomplete(messages, tools=tools)
        except LLMCallError as exc:
            self._account(error=exc)
            raise
        self._account(response)
        return self._to_action(response)

    def usage(self) -> dict[str, Any]:
        return self._usage.as_dict()
