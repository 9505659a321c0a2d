"""Shared fixtures: envs on the real tau2 backend with the offline scripted user."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# the tests' local Ray clusters talk over loopback only (read by ray at import)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import sys
from pathlib import Path

import pytest

from taugym import TauEnv
from taugym.backends.tau_bench_backend import TauBenchBackend


def run_episode(env, policy, task_id=None, seed=None):
    """Play one episode; return (final reward, final info, steps)."""
    options = {"task_id": task_id} if task_id else None
    observation, info = env.reset(seed=seed, options=options)
    steps, done, reward = 0, False, 0.0
    while not done:
        observation, reward, terminated, truncated, info = env.step(policy.act(observation, info))
        steps += 1
        done = terminated or truncated
    return reward, info, steps


@pytest.fixture(scope="session")
def retail_env():
    return TauEnv(task_category="retail", user_strategy="scripted")


@pytest.fixture(scope="session")
def airline_env():
    return TauEnv(task_category="airline", user_strategy="scripted")


STANDIN = Path(__file__).resolve().parent / "tau_bench_standin"
"""Our own small package with tau-bench v1's API and scoring rule (see its README)."""


def _purge_tau_bench() -> None:
    for name in [n for n in sys.modules if n == "tau_bench" or n.startswith("tau_bench.")]:
        del sys.modules[name]


@pytest.fixture
def standin(monkeypatch):
    """The stand-in tau_bench on sys.path, with fresh modules and no cached domains."""
    _purge_tau_bench()
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setattr(TauBenchBackend, "_domains", {})
    import tau_bench.envs.user as user_module

    llm_calls = []

    def no_llm(**kwargs):
        llm_calls.append(kwargs)
        raise RuntimeError("the adapter must never run tau_bench's own user simulator")

    def no_input(*args):
        raise RuntimeError("the adapter must never read a human user's input")

    monkeypatch.setattr(user_module, "completion", no_llm)
    monkeypatch.setattr("builtins.input", no_input)
    yield llm_calls
    assert llm_calls == []
    _purge_tau_bench()
