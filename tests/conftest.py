"""Shared fixtures: envs on the real tau2 backend with the offline scripted user."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# the tests' local Ray clusters talk over loopback only (read by ray at import)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from taugym import TauEnv


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
