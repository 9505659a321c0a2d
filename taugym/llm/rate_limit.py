"""Client-side rate limiting for LLM calls: block callers, never fail them.

:class:`TokenBucketRateLimiter` implements :class:`RateLimiter` in-process
for threads and coroutines on any event loops; :func:`rate_limiter_for`
gives every client of one endpoint and limits the same one (or one from the
factory a rollout installs). The bucket arithmetic is :class:`TokenBucket`,
pure and clock-free, so a cluster-wide limiter (a Ray actor) hosts the same
buckets and callers sleep locally.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taugym.llm.settings import LLMSettings


# --------------------------------------------------------------------------
# Pure bucket math
# --------------------------------------------------------------------------
class TokenBucket:
    """A token bucket that hands out reservations; pure arithmetic, no clock, no locks.

    The bucket holds at most ``capacity`` units, refills at ``rate_per_s`` and
    starts full. It keeps the time at which it will be full again (the generic
    cell rate algorithm's "theoretical arrival time"), so a caller reserves at
    :meth:`earliest` and sleeps once, served in the order it reserved; a
    request larger than ``capacity`` still goes through once the bucket has
    refilled enough. For several buckets (requests and tokens), commit to each
    at the latest of their :meth:`earliest`.

    Guarantee: over any time window of length ``W``, requests released by the
    bucket take at most ``capacity + rate_per_s * W`` units. With a capacity
    of one request the request rate never exceeds the configured rate by more
    than that one request.

    Not thread-safe: callers hold a lock, or host the bucket in one actor.
    """

    def __init__(self, rate_per_s: float, capacity: float, *, now: float = 0.0) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s!r}")
        if not capacity > 0:
            raise ValueError(f"capacity must be > 0, got {capacity!r}")
        self.rate_per_s = float(rate_per_s)
        self.capacity = float(capacity)
        self._full_at = float(now)  # the bucket is full from this time on

    def earliest(self, amount: float, now: float) -> float:
        """The earliest time (>= ``now``) at which ``amount`` may be taken; charges nothing."""
        if amount < 0:
            raise ValueError("amount must be >= 0")
        return max(now, self._full_at - (self.capacity - amount) / self.rate_per_s)

    def commit(self, amount: float, at: float) -> None:
        """Charge ``amount`` as taken at time ``at``: a reservation at ``earliest(amount, now)``, or at ``now``
        a debit without waiting (tokens under-estimated earlier)."""
        self._full_at = max(self._full_at, at) + amount / self.rate_per_s

    def give_back(self, amount: float, now: float) -> None:
        """Credit ``amount`` back (e.g. an over-estimate); never above capacity."""
        self._full_at = max(now, self._full_at - amount / self.rate_per_s)


def estimate_tokens(messages: Iterable[Mapping[str, Any]], tools: Iterable[Any] | None = None) -> int:
    """A cheap upper-ish estimate of a request's prompt tokens: characters / 4.

    Counts message contents (strings or content parts), tool-call arguments,
    a small per-message overhead, and the JSON of the tool schemas. Good
    enough to pre-charge a tokens-per-minute budget; the limiter is corrected
    with the real count afterwards (:meth:`RateLimiter.record_usage`).
    """
    chars = 0
    n = 0
    for n, message in enumerate(messages, 1):
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            chars += len(json.dumps(content, default=str))
        for call in message.get("tool_calls") or ():
            chars += len(json.dumps(call, default=str))
    if tools:
        chars += len(json.dumps(list(tools), default=str))
    return chars // 4 + 4 * n + 1


# --------------------------------------------------------------------------
# Concurrency cap usable from threads and from any number of event loops
# --------------------------------------------------------------------------
class ConcurrencyLimiter:
    """At most ``limit`` holders at once, FIFO; for threads and coroutines alike.

    A released slot is handed directly to the longest waiter, whether it is a
    blocked thread or a coroutine on any event loop. A coroutine cancelled
    while waiting leaves the queue (and passes on a slot it was just given).

    Why a cap beside the rates: it bounds the requests in flight to one
    endpoint, which neither the rates nor a rollout's ``actors ×
    episodes_per_actor`` bound. Episodes alternate between the agent's model,
    the user's model and tools, so a job may run many more episodes than a
    server has slots (vLLM's ``--max-num-seqs``, a provider's concurrency
    quota); and an application running envs in its own threads has no such
    product at all.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {limit!r}")
        self.limit = int(limit)
        self._in_use = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[Future[None], asyncio.AbstractEventLoop | None]] = collections.deque()

    def _queue(self, loop: asyncio.AbstractEventLoop | None = None) -> Future[None] | None:
        """Take a free slot (None), or join the queue: the future is done when a slot is handed over."""
        with self._lock:
            if self._in_use < self.limit and not self._waiters:
                self._in_use += 1
                return None
            waiter: Future[None] = Future()
            self._waiters.append((waiter, loop))
            return waiter

    def acquire(self) -> None:
        """Block the calling thread until a slot is held."""
        waiter = self._queue()
        if waiter is not None:
            waiter.result()

    async def aacquire(self) -> None:
        """Await (without blocking the event loop) until a slot is held."""
        waiter = self._queue(asyncio.get_running_loop())
        if waiter is None:
            return
        try:
            await asyncio.wrap_future(waiter)  # cancelling this cancels the waiter, unless it was given the slot
        except BaseException:
            if not waiter.cancel():  # the slot was handed over meanwhile: pass it on
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back; the longest waiter still waiting (if any) gets it."""
        with self._lock:
            while self._waiters:
                waiter, loop = self._waiters.popleft()
                # skip a waiter that was cancelled, or whose event loop is closed (nothing would wake it)
                if (loop is None or not loop.is_closed()) and waiter.set_running_or_notify_cancel():
                    waiter.set_result(None)
                    return
            if self._in_use <= 0:
                raise RuntimeError("ConcurrencyLimiter.release() without a held slot")
            self._in_use -= 1


# --------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------
class RateLimitTimeout(TimeoutError):
    """The limits would hold a request ``wait_s`` seconds, longer than the caller's ``max_wait_s``.

    Nothing was charged: the caller gives up instead of sleeping past its deadline.
    """

    def __init__(self, wait_s: float, max_wait_s: float) -> None:
        super().__init__(
            f"the rate limits would hold this request {wait_s:.1f}s, longer than the {max_wait_s:.1f}s left"
        )
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (RateLimitTimeout, (self.wait_s, self.max_wait_s))


class RateLimiter:
    """What the LLM client needs from a rate limiter; this base class limits nothing.

    Implementations must be safe to call from many threads and from
    coroutines on several event loops. ``acquire``/``aacquire`` block (or
    await) until the request may be sent and then charge it; they never
    raise because a budget is exhausted. ``acquire_slot``/``aacquire_slot``
    and ``release_slot`` bound the number of requests in flight.

    An implementation backed by a remote service (e.g. a Ray actor hosting
    :class:`TokenBucket` instances for a whole cluster) only has to provide
    these methods. ``tokens_per_minute`` is the tokens budget (None: no
    limit), so a caller can refuse a request larger than a whole minute's.
    """

    tokens_per_minute: float | None = None

    def acquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        """Block until one request of about ``tokens`` tokens may be sent; charge it.

        Returns the seconds waited. When the wait would be longer than
        ``max_wait_s``, charges nothing and raises :class:`RateLimitTimeout` at once.
        """
        return 0.0

    async def aacquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        """Like :meth:`acquire`, but awaits instead of blocking the event loop."""
        return 0.0

    def acquire_slot(self) -> None:
        """Block until a concurrency slot is held (no cap: returns at once)."""

    async def aacquire_slot(self) -> None:
        """Await a concurrency slot (no cap: returns at once)."""

    def release_slot(self) -> None:
        """Release a slot taken with :meth:`acquire_slot`/:meth:`aacquire_slot`."""

    def record_usage(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token budget once a request's real token count is known.

        ``estimated_tokens`` is what was passed to :meth:`acquire`;
        ``actual_tokens`` what the provider reported (prompt + completion).
        Default: ignore.
        """


# --------------------------------------------------------------------------
# In-process implementation
# --------------------------------------------------------------------------
class TokenBucketRateLimiter(RateLimiter):
    """Requests-per-minute, tokens-per-minute and concurrency limits in one process.

    * ``requests_per_minute``: each request takes one unit from a bucket
      refilled at ``rpm / 60`` per second holding ``burst_requests`` units
      (default 1: requests are spaced evenly and the rate measured over any
      window exceeds the limit by at most one request).
    * ``tokens_per_minute``: each request takes its estimated token count
      from a bucket refilled at ``tpm / 60`` per second holding
      ``burst_tokens`` (default: one second's worth, at least 1); the charge
      is corrected with :meth:`record_usage`.
    * ``max_concurrency``: at most this many requests in flight (see
      :class:`ConcurrencyLimiter`).

    Any of the three may be ``None`` (no limit). Callers block (threads) or
    await (coroutines) instead of failing, served in arrival order. One
    instance may be shared by any number of threads and event loops.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrency: int | None = None,
        *,
        burst_requests: float = 1.0,
        burst_tokens: float | None = None,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_concurrency = max_concurrency
        now = time.monotonic()
        token_capacity = burst_tokens if burst_tokens is not None else max(1.0, (tokens_per_minute or 0) / 60.0)
        self._requests = TokenBucket(requests_per_minute / 60, burst_requests, now=now) if requests_per_minute else None
        self._tokens = TokenBucket(tokens_per_minute / 60, token_capacity, now=now) if tokens_per_minute else None
        self._concurrency = ConcurrencyLimiter(max_concurrency) if max_concurrency else None
        self._lock = threading.Lock()

    def reserve(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        """Charge one request of ``tokens`` tokens now; return the seconds the caller must wait
        before sending it (the caller sleeps; a remote limiter returns this over the wire).

        A wait longer than ``max_wait_s`` is returned without charging anything."""
        with self._lock:
            now = time.monotonic()
            charges = []
            if self._requests is not None:
                charges.append((self._requests, 1.0))
            if self._tokens is not None and tokens > 0:
                charges.append((self._tokens, float(tokens)))
            if not charges:
                return 0.0
            at = max(bucket.earliest(amount, now) for bucket, amount in charges)
            if max_wait_s is not None and at - now > max_wait_s:
                return at - now
            for bucket, amount in charges:
                bucket.commit(amount, at)
            return at - now

    def start_empty(self, after_s: float = 0.0) -> None:
        """Empty every bucket as of ``after_s`` seconds from now: nothing is released before then, and
        after it the budgets refill from zero.

        For a limiter that takes over from one that died (a restarted cluster
        limiter): reservations the old one granted may still be due up to
        ``after_s`` from now, and a full bucket would add its burst on top.
        """
        with self._lock:
            at = time.monotonic() + max(0.0, after_s)
            for bucket in (self._requests, self._tokens):
                if bucket is not None:
                    bucket.commit(bucket.capacity, at)

    def acquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        wait = check_wait(self.reserve(tokens, max_wait_s), max_wait_s)
        if wait > 0:
            time.sleep(wait)
        return wait

    async def aacquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        wait = check_wait(self.reserve(tokens, max_wait_s), max_wait_s)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def acquire_slot(self) -> None:
        if self._concurrency is not None:
            self._concurrency.acquire()

    async def aacquire_slot(self) -> None:
        if self._concurrency is not None:
            await self._concurrency.aacquire()

    def release_slot(self) -> None:
        if self._concurrency is not None:
            self._concurrency.release()

    def record_usage(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self._tokens is None:
            return
        delta = actual_tokens - estimated_tokens
        with self._lock:
            now = time.monotonic()
            if delta > 0:
                self._tokens.commit(delta, now)
            elif delta < 0:
                self._tokens.give_back(-delta, now)

    def __repr__(self) -> str:
        return (
            f"TokenBucketRateLimiter(requests_per_minute={self.requests_per_minute!r}, "
            f"tokens_per_minute={self.tokens_per_minute!r}, max_concurrency={self.max_concurrency!r})"
        )


def check_wait(wait_s: float, max_wait_s: float | None) -> float:
    """``wait_s``, or :class:`RateLimitTimeout` when it is longer than ``max_wait_s``."""
    if max_wait_s is not None and wait_s > max_wait_s:
        raise RateLimitTimeout(wait_s, max_wait_s)
    return wait_s


# --------------------------------------------------------------------------
# Process-wide registry
# --------------------------------------------------------------------------
_SHARED: dict[tuple[Any, ...], TokenBucketRateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_rate_limiter(
    key: str,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    max_concurrency: int | None = None,
) -> TokenBucketRateLimiter:
    """The process-wide limiter for ``key`` and these limits, created on first use.

    Environments that call the same endpoint should pass the same ``key``
    (e.g. ``"openai/gpt-4o-mini@https://api.openai.com"``) and the same
    limits; they then share one budget. Different limits under the same key
    give different limiters (the limits are part of the identity).
    """
    ident = (key, requests_per_minute, tokens_per_minute, max_concurrency)
    with _SHARED_LOCK:
        if ident not in _SHARED:
            _SHARED[ident] = TokenBucketRateLimiter(requests_per_minute, tokens_per_minute, max_concurrency)
        return _SHARED[ident]


def reset_shared_rate_limiters() -> None:
    """Forget all shared limiters (tests; or after changing limits at runtime)."""
    with _SHARED_LOCK:
        _SHARED.clear()


# --------------------------------------------------------------------------
# The limiter of a client's settings
# --------------------------------------------------------------------------
RateLimiterFactory = Callable[[str, float | None, float | None, int | None], RateLimiter]
_factory: RateLimiterFactory = shared_rate_limiter


def install_rate_limiter_factory(factory: RateLimiterFactory | None) -> None:
    """Make :func:`rate_limiter_for` get limiters from ``factory(endpoint, rpm, tpm, max_concurrency)``.

    A rollout installs a factory of cluster-wide limiters in each actor, so a
    provider budget holds for the whole job however many actors and envs it
    has. ``None`` goes back to limiters shared within the process.
    """
    global _factory
    _factory = factory or shared_rate_limiter


def rate_limiter_for(settings: LLMSettings) -> RateLimiter:
    """The limiter shared by clients of ``settings``' endpoint and limits; a :class:`RateLimiter` that limits
    nothing when it sets no limit."""
    limits = settings.requests_per_minute, settings.tokens_per_minute, settings.max_concurrency
    if all(limit is None for limit in limits):
        return RateLimiter()
    return _factory(settings.endpoint, *limits)
