"""LLM access for TauGym: one settings type, one client (retries, deadlines, rate limits, accounting).

A layer below the rest of TauGym: the env config, the users and the agents
use it; it imports nothing from them. ``from taugym.llm import LLMClient``
does not import litellm; litellm is loaded on the first call.
"""

from taugym.llm.client import LLMCallError, LLMClient, LLMResponse, LLMUsage, scrub_secrets
from taugym.llm.rate_limit import (
    ConcurrencyLimiter,
    RateLimiter,
    TokenBucket,
    TokenBucketRateLimiter,
    estimate_tokens,
    install_rate_limiter_factory,
    rate_limiter_for,
    reset_shared_rate_limiters,
    shared_rate_limiter,
)
from taugym.llm.settings import LLMSettings, check_sampling_args

__all__ = [
    "ConcurrencyLimiter",
    "LLMCallError",
    "LLMClient",
    "LLMResponse",
    "LLMSettings",
    "LLMUsage",
    "RateLimiter",
    "TokenBucket",
    "TokenBucketRateLimiter",
    "check_sampling_args",
    "estimate_tokens",
    "install_rate_limiter_factory",
    "rate_limiter_for",
    "reset_shared_rate_limiters",
    "scrub_secrets",
    "shared_rate_limiter",
]
