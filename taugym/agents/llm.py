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

from typing import Any, Optional

from taugym.actions import PROTOCOL_HELP
from taugym.agents.base import Policy
from taugym.llm.client import LLMCallError, LLMClient, LLMUsage


class LLMAgent(Policy):
    """An LLM policy (see the module docstring).

    Args:
        model, provider, base_url: what to call (litellm names; any
            OpenAI-compatible ``base_url``).
        native_tools: native tool calling (True) or the bracketed text protocol.
        client: an existing :class:`LLMClient` (overrides model/provider/base_url).
        timeout_s, deadline_s, max_attempts, backoff_initial_s, backoff_max_s:
            the client's retry settings when it builds one.
        requests_per_minute, tokens_per_minute, max_concurrency: limits shared
            with every client of the same endpoint in the process (or the
            cluster-wide limiter a rollout installs).
        sampling: sampling arguments (e.g. ``{"temperature": 0.0}``; add ``"logprobs": True``
            to keep the completion's token log-probs, see :meth:`behaviour`).
    """

    name = "llm"

    def __init__(
        self,
        model: str = "gpt-4o",
        provider: Optional[str] = None,
        base_url: Optional[str] = None,
        native_tools: bool = True,
        client: Optional[LLMClient] = None,
        timeout_s: float = 60.0,
        deadline_s: float = 600.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        requests_per_minute: Optional[float] = None,
        tokens_per_minute: Optional[float] = None,
        max_concurrency: Optional[int] = None,
        sampling: Optional[dict] = None,
    ):
        if not isinstance(native_tools, bool):
            raise ValueError(f"native_tools must be true or false, got {native_tools!r}")
        if client is None:
            from taugym.config import TauGymConfig, check_llm_target, check_sampling_args
            from taugym.llm.factory import client_from_config

            check_llm_target(model, provider, base_url)
            sampling = sampling or {"temperature": 0.0}
            check_sampling_args("sampling", sampling)
            try:
                limits = TauGymConfig(
                    llm_timeout_s=timeout_s, llm_deadline_s=deadline_s, llm_max_attempts=max_attempts,
                    llm_backoff_initial_s=backoff_initial_s, llm_backoff_max_s=backoff_max_s,
                    llm_requests_per_minute=requests_per_minute, llm_tokens_per_minute=tokens_per_minute,
                    llm_max_concurrency=max_concurrency,
                ).validate()
            except ValueError as exc:  # the agent's options are the config's without the "llm_" prefix
                raise ValueError(str(exc).removeprefix("llm_")) from None
            client = client_from_config(limits, model, provider, base_url, sampling)
        self.client = client
        self.native_tools = native_tools
        self._episode: Optional[str] = None
        self._notes: list[tuple[int, str]] = []
        self._text_history: list[dict] = []
        self._usage = LLMUsage()
        self._behaviour: Optional[dict] = None

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
            messages.insert(position, {"role": "user", "content": f"[environment] Your last action was refused. {note}"})
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

    def _request(self, observation: dict, info: dict) -> tuple[list[dict], Optional[list[dict]]]:
        self._new_episode(info)
        if self.native_tools:
            return self._native_request(observation, info)
        return self._text_request(observation, info), None

    def _account(self, response: Any = None, error: Optional[LLMCallError] = None) -> None:
        self._usage.add(error.usage if error is not None else response)
        self._behaviour = None if response is None else {"token_ids": response.token_ids, "logprobs": response.logprobs}

    def behaviour(self) -> Optional[dict]:
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
