"""Bad input gets a clear error (or feedback, for actions) before any work starts."""

from __future__ import annotations

import pytest

from taugym import TauEnv


@pytest.fixture(scope="module")
def env():
    return TauEnv(task_category="retail", user_strategy="scripted")


@pytest.mark.parametrize(
    "action",
    [
        '[answer] get_order_details {"order_id": ' + "9" * 5000 + "}",
        '[answer] {"name": "get_order_details", "arguments": {"order_id": ' + "9" * 5000 + "}}",
        {"type": "function", "function": {"name": "send_certificate",
                                          "arguments": {"user_id": "mia_li_3668", "amount": 10**5000}}},
    ],
    ids=["simple-form", "json-form", "tool-call-dict"],
)
def test_a_number_too_long_to_read_is_feedback_and_the_step_counts(env, airline_env, action):
    env = airline_env if isinstance(action, dict) else env
    observation, info = env.reset(options={"task_id": f"{env.domain.name}-000"})
    before = list(info["messages"])
    observation, reward, terminated, truncated, info = env.step(action)
    assert observation["feedback"].startswith("Error:") and "digits" in observation["feedback"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert int(observation["step_count"]) == 1 and info["step_count"] == 1
    assert info["messages"] == before
    observation, *_ = env.step("[search] tools")  # the env goes on as usual
    assert int(observation["step_count"]) == 2
