"""Building clients from a TauGymConfig, with the process-wide (or cluster-wide) limiter."""

from __future__ import annotations

import threading
from typing import Any, Optional

from taugym.config import TauGymConfig
from taugym.llm.client import LLMClient
from taugym.llm.rate_limit import RateLimiter, shared_rate_limiter

_installed: Optional[RateLimiter] = None
_installed_lock = threading.Lock()


def install_rate_limiter(limiter: Optional[RateLimiter]) -> None:
    """Make every client this process builds from a config use ``limiter``.

    A rollout installs a cluster-wide limiter here in each actor, so one
    provider budget holds however many actors and envs there are. ``None``
    goes back to the per-process limiter.
    """
    global _installed
    with _installed_lock:
        _installed = limiter


def rate_limiter_for(config: TauGymConfig, key: str) -> Optional[RateLimiter]:
    """The limiter for calls to ``key``: the installed one, else one shared in-process."""
    with _installed_lock:
        if _installed is not None:
            return _installed
    limits = (config.llm_requests_per_minute, config.llm_tokens_per_minute, config.llm_max_concurrency)
    if all(limit is None for limit in limits):
        return None
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
