"""The one LLM client every TauGym LLM call goes through.

:class:`LLMClient` wraps ``litellm.completion`` / ``litellm.acompletion`` (any
litellm provider, or any OpenAI-compatible server such as a local vLLM via
``provider="openai"`` and ``base_url``) and adds what a long training or
evaluation run needs:

* retries (tenacity) with exponential backoff and jitter on rate limits
  (429), server errors (5xx), timeouts, connection errors and malformed
  replies, honouring the provider's ``Retry-After`` header; litellm's and the
  OpenAI SDK's own retries are switched off, so this is the only retry layer;
* no retries for requests that cannot succeed (400, 401, 403, 404, 422,
  context window exceeded, missing credentials): :class:`LLMCallError` at once,
  saying what to fix;
* a per-attempt timeout and a total deadline, so a call never hangs;
* optional client-side rate limiting (:mod:`taugym.llm.rate_limit`);
* token and cost accounting per response (:class:`LLMResponse`) and per client
  (:class:`LLMUsage`);
* API keys never appear in log lines, exception messages or accounting.

litellm is imported lazily, on the first call, with its remote cost-map fetch
disabled (``LITELLM_LOCAL_MODEL_COST_MAP``) and its debug banners off.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import tenacity

from taugym.llm.rate_limit import RateLimiter, RateLimitTimeout, estimate_tokens
from taugym.text import valid_unicode, valid_unicode_deep

__all__ = [
    "LLMCallError",
    "LLMClient",
    "LLMResponse",
    "LLMUsage",
    "scrub_secrets",
]

logger = logging.getLogger("taugym.llm")

# Parameters the client controls itself; callers set them on the client.
RESERVED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "timeout",
        "num_retries",
        "max_retries",
        "api_key",
        "api_base",
        "base_url",
        "custom_llm_provider",
        "stream",
    }
)

_PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "text-completion-openai": "OPENAI_API_KEY",
    "azure": "AZURE_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "xai": "XAI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "hosted_vllm": "HOSTED_VLLM_API_KEY",
}

_litellm_module: Any = None
_litellm_lock = threading.Lock()


def _litellm() -> Any:
    """Import and quietly configure litellm once (no network, no banners)."""
    global _litellm_module
    if _litellm_module is None:
        with _litellm_lock:
            if _litellm_module is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                import litellm

                litellm.suppress_debug_info = True
                litellm.set_verbose = False
                # litellm logs every call at INFO through its own handler; keep
                # it to warnings unless the user configured these loggers.
                for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                    litellm_logger = logging.getLogger(name)
                    if litellm_logger.level == logging.NOTSET:
                        litellm_logger.setLevel(logging.WARNING)
                _litellm_module = litellm
    return _litellm_module


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
    """Running totals of LLM use; add responses or other totals to it.

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
        self.calls += usage.calls
        self.retries += usage.retries
        self.failures += usage.failures
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost_usd += usage.cost_usd
        return self

    def __add__(self, other: LLMUsage | LLMResponse) -> LLMUsage:
        return LLMUsage().add(self).add(other)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, float | int]:
        """A plain dict (for logging/metrics), including ``total_tokens``."""
        out: dict[str, float | int] = asdict(self)
        out["total_tokens"] = self.total_tokens
        return out


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
    latency_s: float = 0.0
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

    def to_message(self) -> dict[str, Any]:
        """The reply as an OpenAI assistant message, ready to append to a conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                dict(tc, function=dict(tc["function"])) for tc in self.tool_calls
            ]
        return message


class LLMCallError(RuntimeError):
    """An LLM call that failed for good; the message says what happened and what to do.

    Attributes: ``attempts`` (requests made), ``status_code`` (HTTP status of
    the last failure, if any), ``retryable`` (whether the last failure was of
    a transient kind, i.e. the call gave up on attempts or deadline rather
    than on a request that cannot succeed), ``cause_type`` (class name of the
    last underlying error) and ``usage`` (this call's accounting, with
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
        cause_type: str | None = None,
        usage: LLMUsage | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        self.status_code = status_code
        self.retryable = retryable
        self.cause_type = cause_type
        self.usage = usage or LLMUsage(
            calls=1, failures=1, retries=max(0, attempts - 1)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (e.g. to cross a Ray or multiprocessing boundary).
        kwargs = {
            "attempts": self.attempts,
            "status_code": self.status_code,
            "retryable": self.retryable,
            "cause_type": self.cause_type,
            "usage": self.usage,
        }
        return (_rebuild_llm_call_error, (self.message, kwargs))


def _rebuild_llm_call_error(message: str, kwargs: dict[str, Any]) -> LLMCallError:
    return LLMCallError(message, **kwargs)


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------
@dataclass
class _Failure:
    retryable: bool
    kind: str
    status: int | None
    retry_after_s: float | None
    detail: str  # scrubbed, short


def _header_get(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
        if value is None and isinstance(headers, Mapping):
            lowered = {str(k).lower(): v for k, v in headers.items()}
            value = lowered.get(name)
    except Exception:  # noqa: BLE001 - odd header containers: ignore
        return None
    return None if value is None else str(value)


def _retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (``Retry-After``/``retry-after-ms``), if any."""
    containers = [getattr(exc, "litellm_response_headers", None)]
    response = getattr(exc, "response", None)
    if response is not None:
        containers.append(getattr(response, "headers", None))
    containers.append(getattr(exc, "headers", None))
    for headers in containers:
        ms = _header_get(headers, "retry-after-ms")
        if ms is not None:
            try:
                return max(0.0, float(ms) / 1000.0)
            except ValueError:
                pass
        value = _header_get(headers, "retry-after")
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    return None


def _is_api_error(exc: BaseException) -> bool:
    import httpx  # a litellm dependency; imported here to keep taugym import light

    try:
        import openai
    except ImportError:  # pragma: no cover - litellm requires openai
        openai = None  # type: ignore[assignment]
    types: tuple[type[BaseException], ...] = (
        httpx.HTTPError,
        TimeoutError,
        ConnectionError,
    )
    if openai is not None:
        types += (openai.OpenAIError,)
    return isinstance(exc, types)


def _classify(exc: BaseException, secrets: Sequence[str | None]) -> _Failure | None:
    """Sort an exception into retryable / fatal; ``None`` if it is not a provider error."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return _Failure(True, "timeout", None, None, "the request timed out")
    if not _is_api_error(exc):
        return None
    import httpx
    import openai

    litellm = _litellm()
    text = " ".join(str(exc).split())
    detail = scrub_secrets(text, secrets)[:500]
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    retry_after = _retry_after_seconds(exc)
    lowered = text.lower()

    if (
        "missing credentials" in lowered
        or "api_key client option must be set" in lowered
    ):
        return _Failure(False, "missing_credentials", None, None, detail)
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        # litellm labels client-side timeouts 408 too; only a real reply has headers.
        real_status = (
            status
            if getattr(exc, "litellm_response_headers", None) is not None
            else None
        )
        return _Failure(True, "timeout", real_status, retry_after, detail)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return _Failure(False, "context_window", status, None, detail)
    if isinstance(
        exc, openai.APIConnectionError | httpx.TransportError | ConnectionError
    ):
        return _Failure(True, "connection", status, retry_after, detail)
    if isinstance(exc, openai.RateLimitError) or status == 429:
        return _Failure(True, "rate_limit", 429, retry_after, detail)
    if status is None:
        # An error without an HTTP status (e.g. a reply litellm could not
        # parse): transient as far as we can tell; bounded by max_attempts.
        return _Failure(True, "api_error", None, retry_after, detail)
    if status >= 500 or status in (408, 409, 425):
        return _Failure(True, "server_error", status, retry_after, detail)
    kinds = {
        400: "bad_request",
        401: "auth",
        402: "payment",
        403: "permission",
        404: "not_found",
        422: "bad_request",
    }
    return _Failure(
        False, kinds.get(status, "client_error"), status, retry_after, detail
    )


# --------------------------------------------------------------------------
# Retry policy pieces (tenacity)
# --------------------------------------------------------------------------
@dataclass
class _CallState:
    """Book-keeping for one logical call across its attempts."""

    started: float
    deadline_s: float
    attempts: int = 0
    limiter_wait_s: float = 0.0
    last_failure: _Failure | None = None
    stop_reason: str = ""

    def elapsed(self) -> float:
        """Seconds counted against the deadline, time waiting in the rate limiter included."""
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.deadline_s - self.elapsed()


class _Stop(tenacity.stop.stop_base):
    def __init__(self, state: _CallState, max_attempts: int) -> None:
        self.state = state
        self.max_attempts = max_attempts

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if retry_state.attempt_number >= self.max_attempts:
            self.state.stop_reason = "attempts"
            return True
        if self.state.elapsed() + retry_state.upcoming_sleep >= self.state.deadline_s:
            self.state.stop_reason = "deadline"
            return True
        return False


class _Wait(tenacity.wait.wait_base):
    """Exponential backoff with equal jitter, at least the provider's Retry-After."""

    def __init__(
        self, state: _CallState, initial_s: float, max_s: float, rng: random.Random
    ) -> None:
        self.state = state
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        ceiling = min(
            self.max_s, self.initial_s * (2 ** (retry_state.attempt_number - 1))
        )
        wait = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        failure = self.state.last_failure
        if failure is not None and failure.retry_after_s is not None:
            wait = max(wait, failure.retry_after_s)
        return wait


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------
class LLMClient:
    """Chat completions through litellm, with retries, deadlines, limits and accounting.

    Args:
        model: litellm model name (``"gpt-4o-mini"``, ``"anthropic/claude-..."``)
            or, with ``base_url``, the name the server serves.
        provider: litellm ``custom_llm_provider`` (e.g. ``"openai"`` for any
            OpenAI-compatible server such as vLLM). ``None``: inferred by litellm.
        base_url: API base, e.g. ``"http://127.0.0.1:8000/v1"``.
        api_key: the key; ``None`` lets litellm read the provider's environment
            variable (e.g. ``OPENAI_API_KEY``). Never logged or shown in errors.
        timeout_s: limit for one request (attempt).
        deadline_s: limit for the whole call, all attempts, backoff sleeps and
            waits in ``rate_limiter`` included. No attempt starts or sleeps
            past it (a rate-limit wait that would pass it fails the call at
            once); the last attempt's timeout is shortened to fit.
        max_attempts: requests per call at most (1 = no retry).
        backoff_initial_s, backoff_max_s: retry ``n`` sleeps a random time
            between half and all of ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``,
            or longer if the provider sent ``Retry-After``.
        rate_limiter: optional shared :class:`~taugym.llm.rate_limit.RateLimiter`;
            every attempt takes a concurrency slot and is charged one request
            and its estimated prompt tokens (plus ``max_tokens`` if set). A
            request larger than the limiter's whole ``tokens_per_minute`` fails
            at once, without waiting.
        jitter_seed: seeds the backoff jitter (reproducible retry timing).
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
        model: str,
        *,
        provider: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        deadline_s: float = 300.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        rate_limiter: RateLimiter | None = None,
        jitter_seed: int | None = None,
        **default_params: Any,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if timeout_s <= 0 or deadline_s <= 0:
            raise ValueError("timeout_s and deadline_s must be > 0")
        if backoff_initial_s < 0 or backoff_max_s < 0:
            raise ValueError("backoff_initial_s and backoff_max_s must be >= 0")
        bad = RESERVED_PARAMS.intersection(default_params)
        if bad:
            raise TypeError(
                f"LLMClient manages {sorted(bad)} itself; use the constructor arguments instead"
            )
        self.model = model
        self.provider = provider
        self.base_url = base_url
        self._api_key = api_key
        self.timeout_s = float(timeout_s)
        self.deadline_s = float(deadline_s)
        self.max_attempts = int(max_attempts)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.rate_limiter = rate_limiter
        self.default_params: dict[str, Any] = dict(default_params)
        self._rng = random.Random(jitter_seed)
        self._usage = LLMUsage()
        self._lock = threading.Lock()

    # -------------------------------------------------------------- accounting
    @property
    def usage(self) -> LLMUsage:
        """A snapshot of this client's totals since creation (or :meth:`reset_usage`)."""
        with self._lock:
            return LLMUsage(**asdict(self._usage))

    def reset_usage(self) -> LLMUsage:
        """Zero the running totals; returns the totals before the reset."""
        with self._lock:
            old, self._usage = self._usage, LLMUsage()
            return old

    def _account(self, usage: LLMUsage) -> None:
        with self._lock:
            self._usage.add(usage)

    # -------------------------------------------------------------- public API
    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        **overrides: Any,
    ) -> LLMResponse:
        """Send one chat completion and return the parsed reply; blocks the calling thread.

        ``messages`` and ``tools`` are in OpenAI format. ``overrides`` are
        litellm/OpenAI parameters for this call only (``temperature``,
        ``max_tokens``, ``stop``, ``tool_choice``, ``seed``...). Raises
        :class:`LLMCallError` when the call fails for good.
        """
        kwargs, est = self._prepare(messages, tools, overrides)
        self._check_fits_token_limit(est)
        state = _CallState(started=time.monotonic(), deadline_s=self.deadline_s)
        retrying = tenacity.Retrying(**self._tenacity_args(state))
        try:
            for attempt in retrying:
                with attempt:
                    return self._finish(self._attempt_sync(state, kwargs, est), state)
        except Exception as exc:
            error = self._failed(exc, state)
            if error is exc:
                raise
            raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def acomplete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        **overrides: Any,
    ) -> LLMResponse:
        """Like :meth:`complete`, but a coroutine that never blocks the event loop."""
        kwargs, est = self._prepare(messages, tools, overrides)
        self._check_fits_token_limit(est)
        state = _CallState(started=time.monotonic(), deadline_s=self.deadline_s)
        retrying = tenacity.AsyncRetrying(**self._tenacity_args(state))
        try:
            async for attempt in retrying:
                with attempt:
                    return self._finish(
                        await self._attempt_async(state, kwargs, est), state
                    )
        except Exception as exc:
            error = self._failed(exc, state)
            if error is exc:
                raise
            raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------- internals
    def _secrets(self) -> list[str | None]:
        return [self._api_key]

    def _prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        overrides: Mapping[str, Any],
    ) -> tuple[dict[str, Any], int]:
        bad = RESERVED_PARAMS.intersection(overrides)
        if bad:
            raise TypeError(
                f"LLMClient manages {sorted(bad)} itself; set them on the client"
            )
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
        }
        if self.provider:
            kwargs["custom_llm_provider"] = self.provider
        if self.base_url:
            kwargs["api_base"] = self.base_url
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        if tools:
            kwargs["tools"] = [dict(t) for t in tools]
        kwargs.update(self.default_params)
        kwargs.update(overrides)
        # A None value unsets a default.
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        # tenacity is the only retry layer: no litellm or OpenAI-SDK retries.
        kwargs["num_retries"] = 0
        kwargs["max_retries"] = 0
        est = estimate_tokens(kwargs["messages"], kwargs.get("tools"))
        max_tokens = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")
        if isinstance(max_tokens, int):
            est += max_tokens
        return kwargs, est

    def _tenacity_args(self, state: _CallState) -> dict[str, Any]:
        secrets = self._secrets()

        def should_retry(exc: BaseException) -> bool:
            failure = _classify(exc, secrets)
            state.last_failure = failure
            return failure is not None and failure.retryable

        def before_sleep(retry_state: tenacity.RetryCallState) -> None:
            failure = state.last_failure
            logger.info(
                "LLM %s attempt %d/%d failed (%s%s): %s; retrying in %.2fs",
                self.model,
                retry_state.attempt_number,
                self.max_attempts,
                failure.kind if failure else "?",
                f", HTTP {failure.status}" if failure and failure.status else "",
                failure.detail[:200] if failure else "",
                retry_state.upcoming_sleep,
            )

        return {
            "stop": _Stop(state, self.max_attempts),
            "wait": _Wait(state, self.backoff_initial_s, self.backoff_max_s, self._rng),
            "retry": tenacity.retry_if_exception(should_retry),
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def _attempt_timeout(self, state: _CallState) -> float:
        remaining = state.remaining()
        if remaining <= 0:
            raise TimeoutError(
                f"deadline of {self.deadline_s:g}s reached before the request was sent"
            )
        timeout = min(self.timeout_s, remaining)
        # Quantize so litellm's client cache sees few distinct timeouts.
        return max(0.05, math.ceil(timeout * 20) / 20)

    def _attempt_sync(
        self, state: _CallState, kwargs: dict[str, Any], est: int
    ) -> tuple[Any, int, float]:
        limiter = self.rate_limiter
        state.attempts += 1
        if limiter is None:
            return self._send_sync(state, kwargs, est)
        state.limiter_wait_s += limiter.acquire_slot()
        try:
            try:
                state.limiter_wait_s += limiter.acquire(est, max_wait_s=state.remaining())
            except RateLimitTimeout as exc:
                raise self._limit_past_deadline(exc, state) from None
            return self._send_sync(state, kwargs, est)
        finally:
            limiter.release_slot()

    def _send_sync(
        self, state: _CallState, kwargs: dict[str, Any], est: int
    ) -> tuple[Any, int, float]:
        timeout = self._attempt_timeout(state)
        start = time.monotonic()
        response = _litellm().completion(**kwargs, timeout=timeout)
        return response, est, time.monotonic() - start

    async def _attempt_async(
        self, state: _CallState, kwargs: dict[str, Any], est: int
    ) -> tuple[Any, int, float]:
        limiter = self.rate_limiter
        state.attempts += 1
        if limiter is None:
            return await self._send_async(state, kwargs, est)
        state.limiter_wait_s += await limiter.aacquire_slot()
        try:
            try:
                state.limiter_wait_s += await limiter.aacquire(est, max_wait_s=state.remaining())
            except RateLimitTimeout as exc:
                raise self._limit_past_deadline(exc, state) from None
            return await self._send_async(state, kwargs, est)
        finally:
            limiter.release_slot()

    async def _send_async(
        self, state: _CallState, kwargs: dict[str, Any], est: int
    ) -> tuple[Any, int, float]:
        timeout = self._attempt_timeout(state)
        start = time.monotonic()
        # The HTTP layer enforces ``timeout`` between bytes; the outer cap also
        # cuts a server that trickles bytes forever.
        response = await asyncio.wait_for(
            _litellm().acompletion(**kwargs, timeout=timeout),
            timeout=timeout + max(1.0, 0.25 * timeout),
        )
        return response, est, time.monotonic() - start

    def _check_fits_token_limit(self, est: int) -> None:
        """Refuse at once a request the tokens-per-minute budget could never hold (it would wait minutes per call)."""
        limit = getattr(self.rate_limiter, "tokens_per_minute", None)
        if limit and est > limit:
            usage = LLMUsage(failures=1)
            self._account(usage)
            raise LLMCallError(
                f"LLM call to {self._target()} not sent: it needs about {est} tokens, more than the "
                f"tokens-per-minute limit of {limit:g} allows in a whole minute, so every call would wait "
                f"{est / limit:.1f} minutes. Raise the limit (llm_tokens_per_minute of the env, tokens_per_minute "
                "of the agent) above the size of one request, or set it to null.",
                attempts=0, usage=usage,
            )

    def _limit_past_deadline(self, exc: RateLimitTimeout, state: _CallState) -> LLMCallError:
        sent = state.attempts - 1  # this attempt never left
        usage = LLMUsage(calls=1, failures=1, retries=max(0, sent - 1))
        self._account(usage)
        return LLMCallError(
            f"LLM call to {self._target()} gave up after {state.elapsed():.1f}s: the rate limits would hold it "
            f"another {exc.wait_s:.1f}s, past its deadline_s={self.deadline_s:g} (llm_deadline_s). Raise the "
            "requests/tokens per minute limits or the deadline, or run fewer episodes at once.",
            attempts=sent, usage=usage,
        )

    def _finish(self, result: tuple[Any, int, float], state: _CallState) -> LLMResponse:
        response, est, latency = result
        parsed = self._parse(response, state.attempts, latency)
        if self.rate_limiter is not None:
            try:
                self.rate_limiter.record_usage(
                    est, parsed.prompt_tokens + parsed.completion_tokens
                )
            except Exception:
                logger.debug("rate limiter record_usage failed", exc_info=True)
        self._account(parsed.usage)
        return parsed

    def _parse(self, response: Any, attempts: int, latency: float) -> LLMResponse:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise _malformed("the provider returned no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        if isinstance(content, str):
            content = valid_unicode(content)  # a model's stray surrogate must not stop a writer
        tool_calls = [
            valid_unicode_deep(_tool_call_dict(tc)) for tc in (getattr(message, "tool_calls", None) or [])
        ]
        # a provider may echo the request (its Authorization header included): scrub what it says too
        secrets = self._secrets()
        if isinstance(content, str):
            content = scrub_secrets(content, secrets)
        for call in tool_calls:
            function = call["function"]
            function["arguments"] = scrub_secrets(function["arguments"], secrets)
            if isinstance(function.get("name"), str):
                function["name"] = scrub_secrets(function["name"], secrets)
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return LLMResponse(
            content=content,
            tool_calls=tool_calls,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=_cost(response),
            attempts=attempts,
            raw_finish_reason=getattr(choice, "finish_reason", None),
            model=getattr(response, "model", None) or self.model,
            latency_s=latency,
            **_sampled_tokens(choice),
        )

    def _failed(self, exc: Exception, state: _CallState) -> Exception:
        """Turn the final exception into an :class:`LLMCallError` (or return it unchanged)."""
        if isinstance(exc, LLMCallError):
            return exc
        failure = _classify(exc, self._secrets())
        if failure is None:
            return exc  # not a provider error (a bug, KeyboardInterrupt, cancellation): unchanged
        attempts = max(1, state.attempts)
        usage = LLMUsage(calls=1, failures=1, retries=attempts - 1)
        self._account(usage)
        message = self._error_message(failure, attempts, state)
        message = scrub_secrets(message, self._secrets())
        logger.info("%s", message)
        return LLMCallError(
            message,
            attempts=attempts,
            status_code=failure.status,
            retryable=failure.retryable,
            cause_type=type(exc).__name__,
            usage=usage,
        )

    def _target(self) -> str:
        name = f"{self.provider}/{self.model}" if self.provider else self.model
        return f"{name} at {self.base_url}" if self.base_url else name

    def _key_env_var(self) -> str:
        provider = self.provider
        if provider is None:
            try:
                provider = _litellm().get_llm_provider(self.model)[1]
            except Exception:  # noqa: BLE001 - hint only
                provider = (
                    self.model.split("/", 1)[0] if "/" in self.model else "openai"
                )
        return _PROVIDER_KEY_ENV.get(provider, f"{provider.upper()}_API_KEY")

    def _error_message(
        self, failure: _Failure, attempts: int, state: _CallState
    ) -> str:
        status = f" (HTTP {failure.status})" if failure.status else ""
        head = f"LLM call to {self._target()} failed"
        cause = f"{failure.kind}{status}: {failure.detail}"
        key_source = (
            "the api_key passed to LLMClient"
            if self._api_key is not None
            else self._key_env_var()
        )
        if failure.retryable:
            why = (
                f"the deadline_s={self.deadline_s:g} left no time for another attempt"
                if state.stop_reason == "deadline"
                else f"max_attempts={self.max_attempts} was reached"
            )
            return (
                f"{head} after {attempts} attempt(s) in {state.elapsed():.1f}s ({why}); last error: {cause}. "
                "The provider kept failing with transient errors: check that the server is up and reachable, "
                "lower the request rate (requests_per_minute / max_concurrency of the rate limiter), "
                "or raise timeout_s / deadline_s / max_attempts."
            )
        hints = {
            "missing_credentials": f"no API key was found: set {key_source} or pass api_key=... "
            "(a local OpenAI-compatible server accepts any non-empty key, such as EMPTY).",
            "auth": "the provider rejected the credentials: check "
            + (
                "the api_key passed to LLMClient."
                if self._api_key is not None
                else f"the API key in {key_source}."
            ),
            "permission": f"the API key is not allowed to use model '{self.model}': check the account's "
            "model access and organisation/project.",
            "not_found": f"model '{self.model}' or the endpoint was not found: check the model name, the provider "
            "and base_url (a vLLM server serves the name given by --served-model-name).",
            "context_window": "the conversation does not fit the model's context window: shorten the prompt or "
            "history, lower max_tokens, or use a model with a larger context.",
            "payment": "the provider account has no credit or quota left: check billing.",
            "bad_request": "the provider rejected the request as invalid: check messages, tools and sampling "
            "parameters (some models reject e.g. 'stop', 'tool_choice' or 'temperature').",
            "client_error": "the provider rejected the request; retrying will not help.",
        }
        hint = hints.get(failure.kind, "retrying will not help.")
        return (
            f"{head} (not retried, {attempts} attempt(s)); {cause}. What to do: {hint}"
        )

    def __repr__(self) -> str:
        return (
            f"LLMClient(model={self.model!r}, provider={self.provider!r}, base_url={self.base_url!r}, "
            f"timeout_s={self.timeout_s:g}, deadline_s={self.deadline_s:g}, max_attempts={self.max_attempts}, "
            f"rate_limiter={self.rate_limiter!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _malformed(reason: str) -> BaseException:
    import openai

    return openai.APIError(reason, request=None, body=None)  # type: ignore[arg-type]


def _tool_call_dict(tool_call: Any) -> dict[str, Any]:
    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)

    function = get(tool_call, "function")
    arguments = get(function, "arguments") if function is not None else None
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": get(tool_call, "id") or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {
            "name": get(function, "name") if function is not None else None,
            "arguments": arguments,
        },
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
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def _sampled_tokens(choice: Any) -> dict[str, Any]:
    """``token_ids`` and ``logprobs`` of the completion where the server sent them (OpenAI
    ``logprobs.content``; token ids as vLLM's ``token_ids`` or its ``token_id:<n>`` tokens), else None."""
    content = _field(_field(choice, "logprobs"), "content") or []
    logprobs = [float(_field(t, "logprob")) for t in content if _field(t, "logprob") is not None]
    token_ids = _field(choice, "token_ids")
    if token_ids is None and content and all(str(_field(t, "token") or "").startswith("token_id:") for t in content):
        token_ids = [int(str(_field(t, "token")).removeprefix("token_id:")) for t in content]
    return {"logprobs": logprobs if content and len(logprobs) == len(content) else None,
            "token_ids": [int(t) for t in token_ids] if token_ids else None}
