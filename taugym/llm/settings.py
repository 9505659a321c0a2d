"""LLMSettings: the one declaration of which model a client calls and how (limits included)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Parameters the client sets itself; sampling arguments may not.
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


@dataclass(frozen=True)
class LLMSettings:
    """Which model to call and how; the env config, the LLM agent and the rollout YAML all build one.

    Attributes:
        model, provider, base_url: a litellm model name, its litellm provider
            (None: litellm infers it; ``"openai"`` for any OpenAI-compatible
            server such as vLLM) and an optional API base URL.
        timeout_s: limit for one request (attempt).
        deadline_s: limit for the whole call: attempts, backoff sleeps and
            rate-limit waits included.
        max_attempts: requests per call at most (1 = no retry).
        backoff_initial_s, backoff_max_s: retry ``n`` sleeps between half and
            all of ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``, or
            longer if the provider sent ``Retry-After``.
        requests_per_minute, tokens_per_minute, max_concurrency: limits shared
            by every client of the same endpoint and limits in the process (or
            the job, in a rollout); None: no limit.
        context_window: the model's context in tokens (e.g. 8192 for
            SmolLM2), for servers that do not refuse a longer prompt themselves
            (``transformers serve`` does not). A request whose prompt plus
            ``max_tokens`` does not fit is not sent: the call fails with an
            :class:`~taugym.llm.LLMCallError` of kind ``context_window``, which
            the env and the rollout turn into the termination
            ``context_length``. None: no check (the server's word only).
        tokenizer: a Hugging Face model folder whose tokenizer and chat template
            count the prompt exactly as the server renders it (needs
            ``transformers``); None: the prompt is estimated at 4 characters a
            token (:func:`~taugym.llm.estimate_tokens`).
    """

    model: str = "gpt-4o"
    provider: str | None = None
    base_url: str | None = None
    timeout_s: float = 60.0
    deadline_s: float = 600.0
    max_attempts: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int | None = None
    context_window: int | None = None
    tokenizer: str | None = None

    CALL_OPTIONS = ("timeout_s", "deadline_s", "max_attempts", "backoff_initial_s", "backoff_max_s",
                    "requests_per_minute", "tokens_per_minute", "max_concurrency")  # fmt: skip
    """The options that say how to call, not what: an agent in a rollout takes the env's."""

    @property
    def endpoint(self) -> str:
        """``provider/model@base_url``: clients of one endpoint and the same limits share one limiter."""
        return f"{self.provider or ''}/{self.model}@{self.base_url or 'default'}"

    def validate(self, name: Callable[[str], str] = str) -> LLMSettings:
        """Check every value; the ``ValueError`` calls an option ``name(field)`` (e.g. ``llm_timeout_s``)."""
        for field, what, null_means in (
            ("model", "a model name such as 'gpt-4o'", None),
            ("provider", "a litellm provider name such as 'openai'", "to let litellm infer it"),
            ("base_url", "a URL such as 'http://127.0.0.1:8000/v1'", "for the provider's own"),
            ("tokenizer", "a Hugging Face model folder whose tokenizer counts the prompt", "to estimate it"),
        ):
            value = getattr(self, field)
            if (value is not None or null_means is None) and (not isinstance(value, str) or not value.strip()):
                or_null = f", or null {null_means}" if null_means else ""
                raise ValueError(f"{name(field)} must be {what}{or_null}, got {value!r}")
        for field in ("timeout_s", "deadline_s"):
            value = getattr(self, field)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{name(field)} must be a positive, finite number of seconds, got {value!r}")
        for field in ("backoff_initial_s", "backoff_max_s"):
            value = getattr(self, field)
            if not is_finite_number(value) or value < 0:
                raise ValueError(f"{name(field)} must be a finite number of seconds >= 0, got {value!r}")
        if not is_positive_int(self.max_attempts):
            raise ValueError(f"{name('max_attempts')} must be a positive integer, got {self.max_attempts!r}")
        for field in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, field)
            if value is not None and (not is_finite_number(value) or value <= 0):
                raise ValueError(f"{name(field)} must be a positive, finite number or null (no limit), got {value!r}")
        if self.max_concurrency is not None and not is_positive_int(self.max_concurrency):
            raise ValueError(
                f"{name('max_concurrency')} must be a positive integer or null (no limit), got {self.max_concurrency!r}"
            )
        if self.context_window is not None and not is_positive_int(self.context_window):
            raise ValueError(
                f"{name('context_window')} must be the model's context length in tokens (a positive integer) or "
                f"null (no check), got {self.context_window!r}"
            )
        return self

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> LLMSettings:
        """Validated settings from a mapping of option names; unknown names raise ``ValueError``."""
        return options_dataclass(cls, options, "LLM").validate()


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool), neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # math.isfinite overflows on huge ints


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def options_dataclass(cls: type, values: Any, what: str) -> Any:
    """``cls(**values)``, refusing what is not a mapping or names an option ``cls`` lacks."""
    if not isinstance(values, dict):
        raise ValueError(f"a {what} must be a mapping of option names to values, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; valid options are {sorted(known)}")
    return cls(**values)


def check_sampling_args(name: str, args: Any) -> None:
    """Refuse sampling arguments that are not a mapping of names, or that set what the client sets itself."""
    if not isinstance(args, dict) or not all(isinstance(key, str) for key in args):
        raise ValueError(f"{name} must be a mapping of sampling argument names to values, got {args!r}")
    reserved = sorted(RESERVED_PARAMS.intersection(args))
    if reserved:
        raise ValueError(
            f"{name} may not set {reserved}: TauGym sets them itself; use the model, provider, base URL and "
            "timeout options instead"
        )
