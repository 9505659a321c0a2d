"""Cluster-wide rate limits: one named Ray actor holds the token buckets of a job.

Every rollout actor installs :func:`cluster_rate_limiter_factory` so each LLM
client it builds draws from the job's one budget per (provider, model,
endpoint) and limits, however many actors and envs there are. The buckets
are TauGym's own (:class:`taugym.llm.TokenBucketRateLimiter`): the actor
answers "wait this long", the caller sleeps, so waiting costs the actor
nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

import ray

from taugym.llm.rate_limit import RateLimiter, TokenBucketRateLimiter, check_wait

SERVICE_NAME = "taugym-rate-limits"


@ray.remote(num_cpus=0, max_restarts=-1)
class RateLimitService:
    """Token buckets and in-flight counts per key, for the whole cluster."""

    def __init__(self) -> None:
        self.limiters: dict[tuple, TokenBucketRateLimiter] = {}
        self.in_flight: dict[tuple, int] = {}

    def _limiter(self, ident: tuple) -> TokenBucketRateLimiter:
        if ident not in self.limiters:
            _, rpm, tpm, _ = ident
            self.limiters[ident] = TokenBucketRateLimiter(rpm, tpm)
        return self.limiters[ident]

    def reserve(self, ident: tuple, tokens: int, max_wait_s: Optional[float] = None) -> float:
        return self._limiter(ident).reserve(tokens, max_wait_s)

    def record_usage(self, ident: tuple, estimated: int, actual: int) -> None:
        self._limiter(ident).record_usage(estimated, actual)

    def try_slot(self, ident: tuple) -> bool:
        limit = ident[3]
        if limit is None or self.in_flight.get(ident, 0) < limit:
            self.in_flight[ident] = self.in_flight.get(ident, 0) + 1
            return True
        return False

    def release_slot(self, ident: tuple) -> None:
        self.in_flight[ident] = max(0, self.in_flight.get(ident, 0) - 1)


class ClusterRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets live in the job's :class:`RateLimitService`."""

    _SLOT_POLL_S = 0.02

    def __init__(self, service, key: str, rpm: Optional[float], tpm: Optional[float], max_concurrency: Optional[int]):
        self.service = service
        self.ident = (key, rpm, tpm, max_concurrency)
        self.tokens_per_minute = tpm

    def acquire(self, tokens: int = 0, max_wait_s: Optional[float] = None) -> float:
        wait = check_wait(ray.get(self.service.reserve.remote(self.ident, tokens, max_wait_s)), max_wait_s)
        if wait > 0:
            time.sleep(wait)
        return wait

    async def aacquire(self, tokens: int = 0, max_wait_s: Optional[float] = None) -> float:
        wait = check_wait(await self.service.reserve.remote(self.ident, tokens, max_wait_s), max_wait_s)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait

    def acquire_slot(self) -> float:
        started = time.monotonic()
        while not ray.get(self.service.try_slot.remote(self.ident)):
            time.sleep(self._SLOT_POLL_S)
        return time.monotonic() - started

    async def aacquire_slot(self) -> float:
        started = time.monotonic()
        while not await self.service.try_slot.remote(self.ident):
            await asyncio.sleep(self._SLOT_POLL_S)
        return time.monotonic() - started

    def release_slot(self) -> None:
        self.service.release_slot.remote(self.ident)

    def record_usage(self, estimated_tokens: int, actual_tokens: int) -> None:
        self.service.record_usage.remote(self.ident, estimated_tokens, actual_tokens)


def start_rate_limit_service(namespace_suffix: str):
    """Create (or find) the job's limiter actor; returns its handle."""
    return RateLimitService.options(name=f"{SERVICE_NAME}-{namespace_suffix}", get_if_exists=True).remote()


def cluster_rate_limiter_factory(service):
    """A factory for :func:`taugym.llm.factory.install_rate_limiter_factory` over ``service``."""

    def factory(key: str, rpm: Optional[float], tpm: Optional[float], max_concurrency: Optional[int]) -> RateLimiter:
        return ClusterRateLimiter(service, key, rpm, tpm, max_concurrency)

    return factory
