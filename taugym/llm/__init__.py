"""LLM access for TauGym: one client (retries, deadlines, rate limits, accounting).

``from taugym.llm import LLMClient`` does not import litellm; litellm is
loaded on the first call.
"""

from taugym.llm.client import (
    LLMCallError,
    LLMClient,
    LLMResponse,
    LLMUsage,
    scrub_secrets,
)
from taugym.llm.rate_limit import (
    ConcurrencyLimiter,
    RateLimiter,
    TokenBucket,
    TokenBucketRateLimiter,
    estimate_tokens,
    reset_shared_rate_limiters,
    shared_rate_limiter,
)

__all__ = [
    "ConcurrencyLimiter",
    "LLMCallError",
    "LLMClient",
    "LLMResponse",
    "LLMUsage",
    "RateLimiter",
    "TokenBucket",
    "TokenBucketRateLimiter",
    "estimate_tokens",
    "reset_shared_rate_limiters",
    "scrub_secrets",
    "shared_rate_limiter",
]
