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


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": True}, "seed must be an integer >= 0"),
        ({"verbose": "no"}, "verbose must be true or false"),
        ({"normalize_rewards": "yes"}, "normalize_rewards must be true or false"),
        ({"step_penalty": NAN}, "step_penalty must be a finite number"),
        ({"step_penalty": INF}, "step_penalty must be a finite number"),
        ({"llm_timeout_s": NAN}, "llm_timeout_s must be a positive, finite number"),
        ({"llm_timeout_s": INF}, "llm_timeout_s must be a positive, finite number"),
        ({"llm_deadline_s": INF}, "llm_deadline_s must be a positive, finite number"),
        ({"llm_backoff_max_s": NAN}, "llm_backoff_max_s must be a finite number"),
        ({"llm_requests_per_minute": NAN}, "llm_requests_per_minute must be a positive, finite number"),
        ({"llm_max_concurrency": 2.5}, "llm_max_concurrency must be a positive integer"),
        ({"llm_max_concurrency": True}, "llm_max_concurrency must be a positive integer"),
        ({"user_model": 5}, "user_model must be a model name"),
        ({"user_model": ""}, "user_model must be a model name"),
        ({"user_provider": ["openai"]}, "user_provider must be a litellm provider name"),
        ({"user_base_url": 8000}, "user_base_url must be a URL"),
        ({"user_llm_args": {"model": "gpt-4o-mini"}}, r"user_llm_args may not set \['model'\]"),
        ({"user_llm_args": {"api_key": "x", "timeout": 3}}, r"user_llm_args may not set \['api_key', 'timeout'\]"),
        ({"data_source": "retail-5"}, r"unknown task id 'retail-5'.*retail-000 … retail-113"),
        ({"data_source": "retail-\u0661\u0669"}, r"unknown task id .*retail-000 … retail-113"),
    ],
)
def test_config_values_that_would_fail_later_are_refused_when_the_env_is_built(options, message):
    with pytest.raises(ValueError, match=message):
        TauEnv({"user_strategy": "scripted", **options})


def test_valid_edge_values_of_the_config_are_accepted():
    env = TauEnv(user_strategy="scripted", seed=0, step_penalty=0, llm_max_concurrency=4, user_provider=None,
                 user_llm_args={"temperature": 0.5, "max_tokens": 256}, data_source="retail-005")
    assert env.reset()[1]["task_id"] == "retail-005"


def rollout(**changes):
    from rollout.config import RolloutConfig

    values = dict(domains=["retail"], tasks=["retail-000"], agent={"name": "oracle"}, env={"user_strategy": "scripted"})
    values.update(changes)
    return RolloutConfig.from_dict(values)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"seed": "abc"}, "seed must be an integer >= 0"),
        ({"seed": -3}, "seed must be an integer >= 0"),
        ({"env": 5}, "env must be a mapping of TauGymConfig options"),
        ({"agent": "oracle"}, "agent must be a mapping"),
        ({"tasks": [5]}, "tasks must be 'all', a split name, or a list of task ids"),
        ({"tasks": []}, "tasks must be 'all', a split name, or a list of task ids"),
        ({"tasks": ["airline-000"]}, r"task id 'airline-000' is not of a domain in domains \['retail'\]"),
        ({"tasks": ["retail-5"]}, r"unknown task id\(s\) \['retail-5'\]"),
        ({"tasks": "holdout"}, r"tasks: 'holdout' is not a split of retail"),
        ({"domains": ["shopping"]}, "shopping"),
        ({"domains": "retail"}, "domains must be a non-empty list"),
        ({"out": ""}, "out must be a folder path"),
        ({"env": {"user_strategy": "scripted", "task_split": "holdout"}}, "valid choices"),
        ({"agent": {"name": "llm", "timeout_s": -1}}, r"agent option timeout_s must be a positive, finite number"),
        ({"agent": {"name": "llm", "max_concurrency": 1.5}}, r"agent option max_concurrency must be a positive integer"),
        ({"agent": {"name": "llm", "model": 5}}, r"agent option model must be a model name"),
        ({"agent": {"name": "random", "seed": "x"}}, r"agent option seed"),
    ],
)
def test_rollout_config_values_that_would_fail_in_the_actors_are_refused_when_it_loads(changes, message):
    with pytest.raises(ValueError, match=message):
        rollout(**changes)


def test_a_domain_without_the_default_split_runs_in_a_rollout():
    config = rollout(domains=["mock"], tasks="all")  # mock has no 'test' split; tasks are passed by id
    env = TauEnv(config.env_config("mock"))  # what each actor builds
    observation, info = env.reset(options={"task_id": "mock-000"})
    assert info["task_id"] == "mock-000"
