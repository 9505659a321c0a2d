"""The one LLM client every TauGym LLM call goes through.

:class:`LLMClient` wraps ``litellm.completion`` / ``litellm.acompletion`` (any
litellm provider, or any OpenAI-compatible server such as a local vLLM via
``provider="openai"`` and ``base_url``) and adds what a long run needs:
retries of transient failures with tenacity (litellm's and the OpenAI SDK's
own are off), a per-attempt timeout and a total deadline, the shared rate
limiter of its settings, tokens and cost per response, and error messages
that say what to fix and never show an API key. litellm is imported on the
first call, with its debug banners off.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import tenacity

from taugym.llm.rate_limit import RateLimiter, RateLimitTimeout, estimate_tokens, rate_limiter_for
from taugym.llm.settings import LLMSettings, check_sampling_args
from taugym.llm.text import valid_unicode, valid_unicode_deep

__all__ = ["LLMCallError", "LLMClient", "LLMResponse", "LLMUsage", "scrub_secrets"]

logger = logging.getLogger("taugym.llm")


@functools.cache
def _litellm() -> Any:
    """Import and quietly configure litellm once (no banners, no INFO line per call)."""
    import litellm

    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):  # unless the user configured them
        litellm_logger = logging.getLogger(name)
        if litellm_logger.level == logging.NOTSET:
            litellm_logger.setLevel(logging.WARNING)
    return litellm


# --------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------
_SECRET_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{6,}"), r"\1 ***"),
    (re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]{4,}"), r"\1***"),
    (re.compile(r"(?i)([?&](?:key|api_key|token|access_token)=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), r"\1***@"),  # user:password@host
)
_SECRET_ENV_SUFFIXES = ("API_KEY", "_TOKEN", "_SECRET", "SECRET_KEY", "ACCESS_KEY")


def scrub_secrets(text: str, secrets: Sequence[str | None] = ()) -> str:
    """Return ``text`` with API keys removed.

    Removes every occurrence of the given ``secrets``, of the values of
    environment variables that look like credentials (``*API_KEY``,
    ``*_TOKEN``, ``*_SECRET``...), and of key-shaped patterns (``sk-...``,
    ``Bearer ...``, ``api_key=...``, ``?key=...``, ``user:password@`` in URLs).
    """
    candidates = [s for s in secrets if s and len(s) >= 4]
    for name, value in os.environ.items():
        if value and len(value) >= 8 and name.upper().endswith(_SECRET_ENV_SUFFIXES):
            candidates.append(value)
    for secret in sorted(set(candidates), key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------
@dataclass
class LLMUsage:
    """Running totals of LLM use (an episode's, in users and agents); add responses or other totals to it.

    ``calls`` counts calls made (successful or not), ``retries`` the extra
    attempts beyond the first, ``failures`` the calls that ended in
    :class:`LLMCallError`.
    """

    calls: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: LLMUsage | LLMResponse) -> LLMUsage:
        """Add another total (or one response's numbers) in place; returns self."""
        usage = other.usage if isinstance(other, LLMResponse) else other
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(usage, name))
        return self

    def as_dict(self) -> dict[str, float | int]:
        """A plain dict (for logging/metrics), including ``total_tokens``."""
        return {**asdict(self), "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class LLMResponse:
    """One successful completion, parsed.

    ``tool_calls`` are OpenAI-format dicts
    ``{"id", "type": "function", "function": {"name", "arguments"}}`` with
    ``arguments`` a JSON string. ``cost_usd`` is litellm's price for the
    model, 0.0 when the model has no known price (e.g. a local server).
    ``attempts`` counts the requests it took (1 = no retry).
    """

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    raw_finish_reason: str | None = None
    model: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None

    @property
    def usage(self) -> LLMUsage:
        """This response's numbers as an :class:`LLMUsage` (one call)."""
        return LLMUsage(
            calls=1,
            retries=max(0, self.attempts - 1),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
        )


class LLMCallError(RuntimeError):
    """An LLM call that failed for good; the message says what happened and what to do.

    Attributes: ``attempts`` (requests made), ``status_code`` (HTTP status of
    the last failure, if any), ``retryable`` (whether the last failure was of
    a transient kind, i.e. the call gave up on attempts or deadline rather
    than on a request that cannot succeed), ``kind`` (what failed:
    ``context_window``, ``rate_limit``, ``auth``, ``connection``...; see
    :attr:`context_overflow`) and ``usage`` (this call's accounting, with
    ``failures=1``). The message never contains the API key; the underlying
    exception is not chained, for the same reason.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        status_code: int | None = None,
        retryable: bool = False,
        usage: LLMUsage | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts
        self.status_code = status_code
        self.retryable = retryable
        self.usage = usage or LLMUsage(calls=1, failures=1, retries=max(0, attempts - 1))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across a Ray boundary
        fields = {"attempts": self.attempts, "status_code": self.status_code, "retryable": self.retryable}
        return functools.partial(LLMCallError, str(self), usage=self.usage, kind=self.kind, **fields), ()

    @property
    def context_overflow(self) -> bool:
        """Whether the conversation no longer fits the model's context (the server said so, or the
        prompt counted before sending did not fit ``context_window``): retrying cannot help."""
        return self.kind == "context_window"


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------
@dataclass
class _Failure:
    retryable: bool
    kind: str
    status: int | None
    detail: str  # scrubbed, short


def _retry_after_seconds(exc: BaseException | None) -> float:
    """Seconds the provider asked us to wait (``retry-after-ms`` or ``Retry-After``), 0.0 if none."""
    response = getattr(exc, "response", None)
    for headers in (getattr(exc, "litellm_response_headers", None), getattr(response, "headers", None)):
        try:
            headers = {str(k).lower(): v for k, v in headers.items()}
        except Exception:  # noqa: BLE001 - no headers, or an odd container: none
            continue
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = headers.get(name)
            if value is None:
                continue
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                pass
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError, IndexError):
                continue
    return 0.0


def _classify(exc: BaseException, secrets: Sequence[str | None]) -> _Failure | None:
    """Sort an exception into retryable / fatal; ``None`` if it is not a provider error."""
    import httpx  # litellm's dependencies; imported here to keep taugym's import light
    import openai

    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return _Failure(True, "timeout", None, "the request timed out")
    if not isinstance(exc, httpx.HTTPError | ConnectionError | openai.OpenAIError):
        return None
    text = " ".join(str(exc).split())
    detail = scrub_secrets(text, secrets)[:500]
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    lowered = text.lower()
    if "missing credentials" in lowered or "api_key client option must be set" in lowered:
        return _Failure(False, "missing_credentials", None, detail)
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        # litellm labels client-side timeouts 408 too; only a real reply has headers
        real = getattr(exc, "litellm_response_headers", None) is not None
        return _Failure(True, "timeout", status if real else None, detail)
    if isinstance(exc, _litellm().ContextWindowExceededError):
        return _Failure(False, "context_window", status, detail)
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | ConnectionError):
        return _Failure(True, "connection", status, detail)
    if isinstance(exc, openai.RateLimitError) or status == 429:
        return _Failure(True, "rate_limit", 429, detail)
    if status is None:  # e.g. a reply litellm could not parse: transient as far as we can tell
        return _Failure(True, "api_error", None, detail)
    if status >= 500 or status in (408, 409, 425):
        return _Failure(True, "server_error", status, detail)
    kinds = {400: "bad_request", 401: "auth", 402: "payment", 403: "permission", 404: "not_found", 422: "bad_request"}
    return _Failure(False, kinds.get(status, "client_error"), status, detail)


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------
class LLMClient:
    """Chat completions through litellm, with retries, a deadline and the settings' rate limits.

    Args:
        settings: an :class:`~taugym.llm.LLMSettings` (or just a model name).
            No attempt starts or sleeps past ``deadline_s`` (a rate-limit wait
            that would pass it fails the call at once); the last attempt's
            timeout is shortened to fit.
        api_key: the key; ``None`` lets litellm read the provider's environment
            variable (e.g. ``OPENAI_API_KEY``). Never logged or shown in errors.
        rate_limiter: a :class:`~taugym.llm.rate_limit.RateLimiter`; default:
            the one shared by the settings' endpoint and limits (one that
            limits nothing without limits). Every attempt takes a concurrency
            slot and is charged one request and its estimated prompt tokens
            (plus ``max_tokens`` if set); a request larger than a whole
            minute's tokens fails at once.
        **default_params: default sampling parameters passed to litellm with
            every call (``temperature``, ``max_tokens``, ``top_p``, ``stop``...);
            per-call keyword arguments override them.

    Retried: 429, 5xx, 408/409/425, timeouts, connection errors, replies that
    cannot be parsed. Not retried (:class:`LLMCallError` at once): 400, 401,
    402, 403, 404, 422, context-window errors, missing credentials. Errors
    that are not provider errors (bugs) propagate unchanged.

    Thread-safe; ``complete`` may be called from many threads and
    ``acomplete`` from many coroutines (on any event loop) at once.
    """

    def __init__(
        self,
        settings: LLMSettings | str,
        *,
        api_key: str | None = None,
        rate_limiter: RateLimiter | None = None,
        **default_params: Any,
    ) -> None:
        self.settings = (LLMSettings(model=settings) if isinstance(settings, str) else settings).validate()
        check_sampling_args("sampling arguments", default_params)
        self._api_key = api_key
        self.rate_limiter = rate_limiter if rate_limiter is not None else rate_limiter_for(self.settings)
        self.default_params: dict[str, Any] = dict(default_params)

    # -------------------------------------------------------------- public API
    def complete(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None, **overrides: Any
    ) -> LLMResponse:
        """Send one chat completion and return the parsed reply; blocks the calling thread.

        ``messages`` and ``tools`` are in OpenAI format. ``overrides`` are
        litellm/OpenAI parameters for this call only (``temperature``,
        ``max_tokens``, ``stop``, ``tool_choice``, ``seed``...). Raises
        :class:`LLMCallError` when the call fails for good.
        """
        kwargs, est = self._prepare(messages, tools, overrides)
        retrying = tenacity.Retrying(**self._retry_policy())
        try:
            for attempt in retrying:
                with attempt:
                    return self._parse(*self._attempt_sync(retrying, kwargs, est))
        except Exception as exc:
            self._raise_failed(exc, retrying)

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None, **overrides: Any
    ) -> LLMResponse:
        """Like :meth:`complete`, but a coroutine that never blocks the event loop."""
        kwargs, est = self._prepare(messages, tools, overrides)
        retrying = tenacity.AsyncRetrying(**self._retry_policy())
        try:
            async for attempt in retrying:
                with attempt:
                    return self._parse(*await self._attempt_async(retrying, kwargs, est))
        except Exception as exc:
            self._raise_failed(exc, retrying)

    # ------------------------------------------------------------- internals
    def _prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        overrides: dict[str, Any],
    ) -> tuple[dict[str, Any], int]:
        check_sampling_args("per-call arguments", overrides)
        settings = self.settings
        kwargs: dict[str, Any] = {"model": settings.model, "messages": [dict(m) for m in messages]}
        if settings.provider:
            kwargs["custom_llm_provider"] = settings.provider
        if settings.base_url:
            kwargs["api_base"] = settings.base_url
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if tools:
            kwargs["tools"] = [dict(t) for t in tools]
        kwargs.update(self.default_params)
        kwargs.update(overrides)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # a None value unsets a default
        kwargs["num_retries"] = kwargs["max_retries"] = 0  # tenacity is the only retry layer
        est = estimate_tokens(kwargs["messages"], kwargs.get("tools"))
        max_tokens = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")
        if isinstance(max_tokens, int):
            est += max_tokens
        if settings.context_window is not None:
            self._check_context(kwargs, max_tokens if isinstance(max_tokens, int) else 0)
        limit = self.rate_limiter.tokens_per_minute
        if limit and est > limit:  # it would wait minutes per call: refuse it now
            raise LLMCallError(
                f"LLM call to {self._target()} not sent: it needs about {est} tokens, more than the "
                f"tokens-per-minute limit of {limit:g} allows in a whole minute, so every call would wait "
                f"{est / limit:.1f} minutes. Raise the limit (llm_tokens_per_minute of the env, tokens_per_minute "
                "of the agent) above the size of one request, or set it to null.",
                attempts=0,
                usage=LLMUsage(failures=1),
            )
        return kwargs, est

    def _check_context(self, kwargs: dict[str, Any], max_tokens: int) -> None:
        """Refuse a request whose prompt plus ``max_tokens`` does not fit ``context_window`` (no request is sent).

        The prompt is rendered with the settings' tokenizer's chat template (loaded once per process) as a
        server that uses it does, else estimated (:func:`estimate_tokens`)."""
        settings = self.settings
        messages, tools = kwargs["messages"], kwargs.get("tools")
        if settings.tokenizer is None:
            prompt = estimate_tokens(messages, tools)
        else:
            template = _tokenizer(settings.tokenizer).apply_chat_template
            prompt = len(template(messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False))
        if prompt + max_tokens <= settings.context_window:
            return
        counted = "counted with its tokenizer" if settings.tokenizer else "estimated at 4 characters a token"
        raise LLMCallError(
            f"LLM call to {self._target()} not sent: the prompt is {prompt} tokens ({counted}) and max_tokens "
            f"{max_tokens}, more than the model's context_window of {settings.context_window} tokens. The "
            "conversation no longer fits the model: end the episode (termination context_length), or use fewer "
            "steps, shorter tool results or a model with a longer context.",
            attempts=0,
            kind="context_window",
        )

    def _retry_policy(self) -> dict[str, Any]:
        settings = self.settings
        half_initial, half_max = settings.backoff_initial_s / 2, settings.backoff_max_s / 2
        # equal jitter: between half and all of min(backoff_max_s, backoff_initial_s * 2**(n-1))
        backoff = tenacity.wait_exponential(multiplier=half_initial, max=half_max) + tenacity.wait_random_exponential(
            multiplier=half_initial, max=half_max
        )
        secrets = [self._api_key]

        def wait(state: tenacity.RetryCallState) -> float:
            return max(backoff(state), _retry_after_seconds(state.outcome.exception() if state.outcome else None))

        def should_retry(exc: BaseException) -> bool:
            failure = _classify(exc, secrets)
            return failure is not None and failure.retryable

        def before_sleep(state: tenacity.RetryCallState) -> None:
            failure = _classify(state.outcome.exception(), secrets) if state.outcome else None
            logger.info(
                "LLM %s attempt %d/%d failed (%s%s): %s; retrying in %.2fs",
                settings.model,
                state.attempt_number,
                settings.max_attempts,
                failure.kind if failure else "?",
                f", HTTP {failure.status}" if failure and failure.status else "",
                failure.detail[:200] if failure else "",
                state.upcoming_sleep,
            )

        return {
            "stop": tenacity.stop_after_attempt(settings.max_attempts)
            | tenacity.stop_before_delay(settings.deadline_s),
            "wait": wait,
            "retry": tenacity.retry_if_exception(should_retry),
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def _remaining(self, retrying: tenacity.BaseRetrying) -> float:
        """Seconds left of the deadline (time waiting in the rate limiter counts)."""
        return self.settings.deadline_s - self._elapsed(retrying)

    @staticmethod
    def _elapsed(retrying: tenacity.BaseRetrying) -> float:
        return time.monotonic() - retrying.statistics.get("start_time", time.monotonic())

    def _attempt_timeout(self, retrying: tenacity.BaseRetrying) -> float:
        remaining = self._remaining(retrying)
        if remaining <= 0:
            raise TimeoutError(f"deadline of {self.settings.deadline_s:g}s reached before the request was sent")
        # quantized so litellm's client cache sees few distinct timeouts
        return max(0.05, math.ceil(min(self.settings.timeout_s, remaining) * 20) / 20)

    def _attempt_sync(self, retrying: tenacity.Retrying, kwargs: dict[str, Any], est: int) -> tuple:
        """One attempt: a concurrency slot, the rate limits, the request; returns what :meth:`_parse` takes."""
        self.rate_limiter.acquire_slot()
        try:
            with self._within_deadline(retrying):
                self.rate_limiter.acquire(est, max_wait_s=self._remaining(retrying))
            return _litellm().completion(**kwargs, timeout=self._attempt_timeout(retrying)), est, retrying
        finally:
            self.rate_limiter.release_slot()

    async def _attempt_async(self, retrying: tenacity.AsyncRetrying, kwargs: dict[str, Any], est: int) -> tuple:
        await self.rate_limiter.aacquire_slot()
        try:
            with self._within_deadline(retrying):
                await self.rate_limiter.aacquire(est, max_wait_s=self._remaining(retrying))
            timeout = self._attempt_timeout(retrying)
            # the HTTP layer enforces timeout between bytes; the outer cap also cuts a server that trickles forever
            response = await asyncio.wait_for(
                _litellm().acompletion(**kwargs, timeout=timeout), timeout=timeout + max(1.0, 0.25 * timeout)
            )
            return response, est, retrying
        finally:
            self.rate_limiter.release_slot()

    @contextlib.contextmanager
    def _within_deadline(self, retrying: tenacity.BaseRetrying) -> Iterator[None]:
        """Fail the call at once when the rate limits would hold this attempt past the deadline."""
        try:
            yield
        except RateLimitTimeout as exc:
            sent = retrying.statistics.get("attempt_number", 1) - 1  # this attempt never left
            raise LLMCallError(
                f"LLM call to {self._target()} gave up after {self._elapsed(retrying):.1f}s: the rate limits would "
                f"hold it another {exc.wait_s:.1f}s, past its deadline_s={self.settings.deadline_s:g} "
                "(llm_deadline_s). Raise the requests/tokens per minute limits or the deadline, or run fewer "
                "episodes at once.",
                attempts=sent,
            ) from None

    def _parse(self, response: Any, est: int, retrying: tenacity.BaseRetrying) -> LLMResponse:
        choices = getattr(response, "choices", None) or []
        if not choices:
            import openai

            raise openai.APIError("the provider returned no choices", request=None, body=None)  # type: ignore[arg-type]
        choice = choices[0]
        message = getattr(choice, "message", None)
        # a model's stray surrogate must not stop a writer; a provider may echo the request (its
        # Authorization header included): scrub what it says too
        secrets = [self._api_key]
        content = getattr(message, "content", None)
        if isinstance(content, str):
            content = scrub_secrets(valid_unicode(content), secrets)
        tool_calls = [valid_unicode_deep(_tool_call_dict(tc)) for tc in (getattr(message, "tool_calls", None) or [])]
        for call in tool_calls:
            function = call["function"]
            function["arguments"] = scrub_secrets(function["arguments"], secrets)
            if isinstance(function.get("name"), str):
                function["name"] = scrub_secrets(function["name"], secrets)
        usage = getattr(response, "usage", None)
        parsed = LLMResponse(
            content=content,
            tool_calls=tool_calls,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=_cost(response),
            attempts=retrying.statistics.get("attempt_number", 1),
            raw_finish_reason=getattr(choice, "finish_reason", None),
            model=getattr(response, "model", None) or self.settings.model,
            **_sampled_tokens(choice),
        )
        self.rate_limiter.record_usage(est, parsed.prompt_tokens + parsed.completion_tokens)
        return parsed

    def _raise_failed(self, exc: Exception, retrying: tenacity.BaseRetrying) -> NoReturn:
        """Raise the final exception as an :class:`LLMCallError`, not chained (it may hold the key), or unchanged
        when it is not a provider error (a bug, KeyboardInterrupt, cancellation)."""
        failure = None if isinstance(exc, LLMCallError) else _classify(exc, [self._api_key])
        if failure is None:
            raise exc
        attempts = max(1, retrying.statistics.get("attempt_number", 1))
        message = scrub_secrets(self._error_message(failure, attempts, retrying), [self._api_key])
        logger.info("%s", message)
        raise LLMCallError(
            message,
            attempts=attempts,
            status_code=failure.status,
            retryable=failure.retryable,
            kind=failure.kind,
        ) from None

    def _target(self) -> str:
        settings = self.settings
        name = f"{settings.provider}/{settings.model}" if settings.provider else settings.model
        return f"{name} at {settings.base_url}" if settings.base_url else name

    def _key_source(self) -> str:
        """Where the key should come from: the api_key argument, or what litellm says the provider reads."""
        if self._api_key is not None:
            return "the api_key passed to LLMClient"
        settings = self.settings
        model = f"{settings.provider}/{settings.model}" if settings.provider else settings.model
        try:
            missing = _litellm().validate_environment(model=model, api_base=settings.base_url).get("missing_keys")
        except Exception:  # noqa: BLE001 - a hint only
            missing = None
        return " or ".join(missing) if missing else "the provider's API key environment variable"

    def _error_message(self, failure: _Failure, attempts: int, retrying: tenacity.BaseRetrying) -> str:
        settings = self.settings
        status = f" (HTTP {failure.status})" if failure.status else ""
        head = f"LLM call to {self._target()} failed"
        cause = f"{failure.kind}{status}: {failure.detail}"
        if failure.retryable:
            why = (
                f"max_attempts={settings.max_attempts} was reached"
                if attempts >= settings.max_attempts
                else f"the deadline_s={settings.deadline_s:g} left no time for another attempt"
            )
            return (
                f"{head} after {attempts} attempt(s) in {self._elapsed(retrying):.1f}s ({why}); last error: {cause}. "
                "The provider kept failing with transient errors: check that the server is up and reachable, "
                "lower the request rate (requests_per_minute / max_concurrency of the rate limiter), "
                "or raise timeout_s / deadline_s / max_attempts."
            )
        key_source = self._key_source() if failure.kind in ("missing_credentials", "auth") else ""
        hints = {
            "missing_credentials": f"no API key was found: set {key_source} or pass api_key=... "
            "(a local OpenAI-compatible server accepts any non-empty key, such as EMPTY).",
            "auth": "the provider rejected the credentials: check "
            + ("the api_key passed to LLMClient." if self._api_key is not None else f"the API key in {key_source}."),
            "permission": f"the API key is not allowed to use model '{settings.model}': check the account's "
            "model access and organisation/project.",
            "not_found": f"model '{settings.model}' or the endpoint was not found: check the model name, the "
            "provider and base_url (a vLLM server serves the name given by --served-model-name).",
            "context_window": "the conversation does not fit the model's context window: shorten the prompt or "
            "history, lower max_tokens, or use a model with a larger context.",
            "payment": "the provider account has no credit or quota left: check billing.",
            "bad_request": "the provider rejected the request as invalid: check messages, tools and sampling "
            "parameters (some models reject e.g. 'stop', 'tool_choice' or 'temperature').",
        }
        hint = hints.get(failure.kind, "the provider rejected the request; retrying will not help.")
        return f"{head} (not retried, {attempts} attempt(s)); {cause}. What to do: {hint}"

    def __repr__(self) -> str:
        return f"LLMClient({self.settings!r}, rate_limiter={self.rate_limiter!r})"


@functools.cache
def _tokenizer(name: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError(
            f"counting prompts with the tokenizer {name!r} needs transformers: pip install transformers, "
            "or set tokenizer to null to estimate them"
        ) from None
    return AutoTokenizer.from_pretrained(name)


def _tool_call_dict(tool_call: Any) -> dict[str, Any]:
    function = _field(tool_call, "function")
    arguments = _field(function, "arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": _field(tool_call, "id") or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": _field(function, "name"), "arguments": arguments},
    }


_UNPRICED_MODELS: set[str] = set()  # models litellm has no price for: don't ask again on every call


def _cost(response: Any) -> float:
    """litellm's price for this response; 0.0 when unknown (never raises)."""
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost") if isinstance(hidden, Mapping) else None
    model = str(getattr(response, "model", "") or "")
    if cost is None and model not in _UNPRICED_MODELS:
        try:
            cost = _litellm().completion_cost(completion_response=response)
        except Exception:  # noqa: BLE001 - unknown model / price: count as free
            _UNPRICED_MODELS.add(model)
            cost = 0.0
    try:
        value = float(cost or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def _field(value: Any, name: str) -> Any:
    """``value[name]`` of a mapping, ``value.name`` of an object (None when absent, or when ``value`` is None)."""
    return value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)


def _sampled_tokens(choice: Any) -> dict[str, Any]:
    """``token_ids`` and ``logprobs`` of the completion where the server sent them (OpenAI
    ``logprobs.content``; token ids as vLLM's ``token_ids`` or its ``token_id:<n>`` tokens), else None."""
    content = _field(_field(choice, "logprobs"), "content") or []
    logprobs = [float(_field(t, "logprob")) for t in content if _field(t, "logprob") is not None]
    token_ids = _field(choice, "token_ids")
    if token_ids is None and content and all(str(_field(t, "token") or "").startswith("token_id:") for t in content):
        token_ids = [int(str(_field(t, "token")).removeprefix("token_id:")) for t in content]
    return {
        "logprobs": logprobs if content and len(logprobs) == len(content) else None,
        "token_ids": [int(t) for t in token_ids] if token_ids else None,
    }
