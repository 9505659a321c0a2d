"""Cluster-wide rate limits: one named Ray actor holds the token buckets of a job.

Every rollout actor installs :func:`cluster_rate_limiter_factory` so each LLM
client it builds draws from the job's one budget per (provider, model,
endpoint) and limits, however many actors and envs there are. The buckets
are TauGym's own (:class:`taugym.llm.TokenBucketRateLimiter`): the actor
answers "wait this long", the caller sleeps, so waiting costs the actor
nothing. A concurrency slot is awaited in the actor, never polled for.
"""

from __future__ import annotations

import asyncio
import time

import ray

from taugym.llm.rate_limit import RateLimiter, TokenBucketRateLimiter, check_wait

SERVICE_NAME = "taugym-rate-limits"


@ray.remote(num_cpus=0, max_restarts=-1)
class RateLimitService:
    """Token buckets and concurrency caps per key, for the whole cluster.

    An async actor: a caller waiting for a concurrency slot awaits it here
    (one call, answered when a slot frees), instead of asking again and again.
    """

    def __init__(self) -> None:
        self.limiters: dict[tuple, TokenBucketRateLimiter] = {}

    def _limiter(self, ident: tuple) -> TokenBucketRateLimiter:
        if ident not in self.limiters:
            _, rpm, tpm, max_concurrency = ident
            self.limiters[ident] = TokenBucketRateLimiter(rpm, tpm, max_concurrency)
        return self.limiters[ident]

    async def reserve(self, ident: tuple, tokens: int, max_wait_s: float | None = None) -> float:
        return self._limiter(ident).reserve(tokens, max_wait_s)

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
        wait = check_wait(ray.get(self.service.reserve.remote(self.ident, tokens, max_wait_s)), max_wait_s)
        if wait > 0:
            time.sleep(wait)
        return wait

    async def aacquire(self, tokens: int = 0, max_wait_s: float | None = None) -> float:
        wait = check_wait(await self.service.reserve.remote(self.ident, tokens, max_wait_s), max_wait_s)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def acquire_slot(self) -> float:
        if self.max_concurrency is None:
            return 0.0
        started = time.monotonic()
        ray.get(self.service.acquire_slot.remote(self.ident))
        return time.monotonic() - started

    async def aacquire_slot(self) -> float:
        if self.max_concurrency is None:
            return 0.0
        started = time.monotonic()
        granted = self.service.acquire_slot.remote(self.ident)
        try:
            await asyncio.shield(asyncio.wrap_future(granted.future()))
        except asyncio.CancelledError:  # stop waiting; a slot granted meanwhile goes back
            ray.cancel(granted)
            granted.future().add_done_callback(lambda done: done.cancelled() or done.exception() or self.release_slot())
            raise
        return time.monotonic() - started

    def release_slot(self) -> None:
        if self.max_concurrency is not None:
            self.service.release_slot.remote(self.ident)

    def record_usage(self, estimated_tokens: int, actual_tokens: int) -> None:
        self.service.record_usage.remote(self.ident, estimated_tokens, actual_tokens)


def start_rate_limit_service(namespace_suffix: str):
    """Create (or find) the job's limiter actor; returns its handle."""
    return RateLimitService.options(name=f"{SERVICE_NAME}-{namespace_suffix}", get_if_exists=True).remote()


def cluster_rate_limiter_factory(service):
    """A factory for :func:`taugym.llm.install_rate_limiter_factory` over ``service``."""

    def factory(key: str, rpm: float | None, tpm: float | None, max_concurrency: int | None) -> RateLimiter:
        return ClusterRateLimiter(service, key, rpm, tpm, max_concurrency)

    return factory
