"""Building clients from a TauGymConfig, with the process-wide (or cluster-wide) limiter."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from taugym.config import TauGymConfig
from taugym.llm.client import LLMClient
from taugym.llm.rate_limit import RateLimiter, shared_rate_limiter

RateLimiterFactory = Callable[[str, Optional[float], Optional[float], Optional[int]], RateLimiter]
_factory: Optional[RateLimiterFactory] = None
_factory_lock = threading.Lock()


def install_rate_limiter_factory(factory: Optional[RateLimiterFactory]) -> None:
    """Make clients built from a config get their limiter from ``factory(key, rpm, tpm, max_concurrency)``.

    A rollout installs a factory of cluster-wide limiters in each actor, so a
    provider budget holds for the whole job however many actors and envs it
    has. ``None`` goes back to limiters shared within the process.
    """
    global _factory
    with _factory_lock:
        _factory = factory


def rate_limiter_for(config: TauGymConfig, key: str) -> Optional[RateLimiter]:
    """The limiter for calls to ``key`` (provider/model@endpoint) under the config's limits."""
    limits = (config.llm_requests_per_minute, config.llm_tokens_per_minute, config.llm_max_concurrency)
    if all(limit is None for limit in limits):
        return None
    with _factory_lock:
        factory = _factory
    if factory is not None:
        return factory(key, *limits)
    return shared_rate_limiter(key, *limits)


def client_from_config(
    config: TauGymConfig,
    model: str,
    provider: Optional[str],
    base_url: Optional[str],
    sampling: Optional[dict[str, Any]] = None,
) -> LLMClient:
    """An :class:`LLMClient` with the config's timeouts, attempts and shared limits."""
    key = f"{provider or ''}/{model}@{base_url or 'default'}"
    return LLMClient(
        model,
        provider=provider,
        base_url=base_url,
        timeout_s=config.llm_timeout_s,
        deadline_s=config.llm_deadline_s,
        max_attempts=config.llm_max_attempts,
        backoff_initial_s=config.llm_backoff_initial_s,
        backoff_max_s=config.llm_backoff_max_s,
        rate_limiter=rate_limiter_for(config, key),
        **(sampling or {}),
    )
