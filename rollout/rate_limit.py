"""Cluster-wide rate limits: one named Ray actor holds the token buckets of a job.

Every rollout actor installs :func:`cluster_rate_limiter_factory` so each LLM
client it builds draws from the job's one budget per (provider, model,
endpoint) and limits, however many actors and envs there are. The buckets
are TauGym's own (:class:`taugym.llm.TokenBucketRateLimiter`): the actor
answers "wait this long", the caller sleeps, so waiting costs the actor
nothing. A concurrency slot is awaited in the actor, never polled for.

Surviving the limiter's node
----------------------------
Ray restarts the actor when its node dies (``max_restarts=-1``) and re-sends
the calls that were in flight (``max_task_retries=-1``; a call answered
before the death and sent again is charged twice: never too little). The
rates still hold across the restart, on any window, because:

* the service never grants a reservation more than :data:`HORIZON_S`
  seconds ahead; a caller whose turn is further away is told when to ask
  again (and is charged nothing meanwhile), so every reservation a dead
  limiter granted is due within :data:`HORIZON_S` of its death;
* the service starts every bucket empty as of :data:`HORIZON_S` after its
  start (:meth:`~taugym.llm.TokenBucketRateLimiter.start_empty`), not
  full: a restarted one grants nothing before all of its predecessor's
  grants are due. (It need not know it was restarted: the first
  incarnation holds back its first second too.)

So over any window of ``W`` seconds at most ``burst + rate × W`` requests
go out, restart or not (``rate`` in requests per second).
What a restart forgets is the concurrency count: requests in flight when
the limiter died are not counted by its successor, so for the length of
those requests ``max_concurrency`` may be exceeded by at most their number.
"""

from __future__ import annotations

import asyncio
import time

import ray

from taugym.llm.rate_limit import RateLimiter, TokenBucketRateLimiter, check_wait

SERVICE_NAME = "taugym-rate-limits"

#: The furthest ahead (seconds) the service grants a reservation; also how
#: long a restarted service holds everything back.
HORIZON_S = 1.0
_MIN_PAUSE_S = 0.05


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RateLimitService:
    """Token buckets and concurrency caps per key, for the whole cluster.

    An async actor: a caller waiting for a concurrency slot awaits it here
    (one call, answered when a slot frees), instead of asking again and again.
    """

    def __init__(self) -> None:
        self.limiters: dict[tuple, TokenBucketRateLimiter] = {}
        self.started = time.monotonic()

    def _limiter(self, ident: tuple) -> TokenBucketRateLimiter:
        if ident not in self.limiters:
            _, rpm, tpm, max_concurrency = ident
            limiter = TokenBucketRateLimiter(rpm, tpm, max_concurrency)
            # Empty, and nothing before HORIZON_S after this incarnation started: a predecessor's grants
            # may be due until then. (The first incarnation pays it once; a key first seen later, nothing.)
            limiter.start_empty(self.started + HORIZON_S - time.monotonic())
            self.limiters[ident] = limiter
        return self.limiters[ident]

    async def reserve(self, ident: tuple, tokens: int, max_wait_s: float | None = None) -> tuple[float, bool]:
        """``(wait_s, granted)``: granted, the caller sends after ``wait_s``; not granted (its turn is further
        than :data:`HORIZON_S` or ``max_wait_s`` away), nothing was charged and its turn is ``wait_s`` away."""
        limit = HORIZON_S if max_wait_s is None else min(HORIZON_S, max_wait_s)
        wait = self._limiter(ident).reserve(tokens, limit)
        return wait, wait <= limit

    async def node_id(self) -> str:
        """The Ray node this incarnation runs on (hex id)."""
        return ray.get_runtime_context().get_node_id()

    async def record_usage(self, ident: tuple, estimated: int, actual: int) -> None:
        self._limiter(ident).record_usage(estimated, actual)

    async def acquire_slot(self, ident: tuple) -> None:
        await self._limiter(ident).aacquire_slot()

    async def release_slot(self, ident: tuple) -> None:
        self._limiter(ident).release_slot()


class ClusterRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets and caps live in the job's :class:`RateLimitService`."""

    def __init__(self, service, key: str, rpm: float | None, tpm: float | None, max_concurrency: int | None):
        self.service = service
        self.ident = (key, rpm, tpm, max_concurrency)
        self.tokens_per_minute = tpm
        self.max_concurrency = max_concurrency

    def acquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        waited = 0.0
        while True:
            left = None if max_wait_s is None else max_wait_s - waited
            wait, granted = ray.get(self.service.reserve.remote(self.ident, tokens, left))
            pause = _pause(wait, granted, waited, max_wait_s)
            time.sleep(pause)
            waited += pause
            if granted:
                return waited

    async def aacquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        waited = 0.0
        while True:
            left = None if max_wait_s is None else max_wait_s - waited
            wait, granted = await self.service.reserve.remote(self.ident, tokens, left)
            pause = _pause(wait, granted, waited, max_wait_s)
            await asyncio.sleep(pause)
            waited += pause
            if granted:
                return waited

    def acquire_slot(self) -> None:
        if self.max_concurrency is not None:
            ray.get(self.service.acquire_slot.remote(self.ident))

    async def aacquire_slot(self) -> None:
        if self.max_concurrency is None:
            return
        granted = self.service.acquire_slot.remote(self.ident)
        try:
            await asyncio.shield(asyncio.wrap_future(granted.future()))
        except asyncio.CancelledError:  # stop waiting; a slot granted meanwhile goes back
            ray.cancel(granted)
            granted.future().add_done_callback(lambda done: done.cancelled() or done.exception() or self.release_slot())
            raise

    def release_slot(self) -> None:
        if self.max_concurrency is not None:
            self.service.release_slot.remote(self.ident)

    def record_usage(self, estimated_tokens: int, actual_tokens: int) -> None:
        self.service.record_usage.remote(self.ident, estimated_tokens, actual_tokens)


def _pause(wait: float, granted: bool, waited: float, max_wait_s: float | None) -> float:
    """How long to sleep after a reservation answer: its wait when granted, else until the turn is near."""
    if granted:
        return max(0.0, wait)
    check_wait(waited + wait, max_wait_s)  # the turn is past the caller's deadline: RateLimitTimeout
    return max(_MIN_PAUSE_S, wait - HORIZON_S)


def start_rate_limit_service(namespace_suffix: str, **options):
    """Create (or find) the job's limiter actor; returns its handle. ``options`` go to ``.options()``
    (e.g. a ``scheduling_strategy`` placing it on a node)."""
    return RateLimitService.options(name=f"{SERVICE_NAME}-{namespace_suffix}", get_if_exists=True, **options).remote()


def cluster_rate_limiter_factory(service):
    """A factory for :func:`taugym.llm.install_rate_limiter_factory` over ``service``."""

    def factory(key: str, rpm: float | None, tpm: float | None, max_concurrency: int | None) -> RateLimiter:
        return ClusterRateLimiter(service, key, rpm, tpm, max_concurrency)

    return factory
