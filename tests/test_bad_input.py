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
        {
            "type": "function",
            "function": {"name": "send_certificate", "arguments": {"user_id": "mia_li_3668", "amount": 10**5000}},
        },
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
    env = TauEnv(
        user_strategy="scripted",
        seed=0,
        step_penalty=0,
        llm_max_concurrency=4,
        user_provider=None,
        user_llm_args={"temperature": 0.5, "max_tokens": 256},
        data_source="retail-005",
    )
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
        ({"tasks": [5]}, "a split name, or a list of task ids"),
        ({"tasks": []}, "a split name, or a list of task ids"),
        ({"tasks": ["airline-000"]}, r"task id 'airline-000' is not of a domain in domains \['retail'\]"),
        ({"tasks": ["retail-5"]}, r"unknown task id\(s\) \['retail-5'\]"),
        ({"tasks": "holdout"}, r"tasks: 'holdout' is not a split of retail"),
        ({"domains": ["shopping"]}, "shopping"),
        ({"domains": "retail"}, "domains must be a non-empty list"),
        ({"out": ""}, "out must be a folder path"),
        ({"env": {"user_strategy": "scripted", "task_split": "holdout"}}, "valid choices"),
        ({"agent": {"name": "llm", "timeout_s": -1}}, r"agent option timeout_s must be a positive, finite number"),
        (
            {"agent": {"name": "llm", "max_concurrency": 1.5}},
            r"agent option max_concurrency must be a positive integer",
        ),
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


# ---------------------------------------------------------------- item 10
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

from taugym.agents import OraclePolicy  # noqa: E402

try:
    from fake_llm_server import Reply, fake_llm_server
    from test_llm_env import FAKE_KEY, _isolated, make_agent, make_env, scripted_conversation
except ImportError:  # pragma: no cover
    from tests.fake_llm_server import Reply, fake_llm_server  # type: ignore
    from tests.test_llm_env import FAKE_KEY, _isolated, make_agent, make_env, scripted_conversation  # type: ignore

__all__ = ["fake_llm_server", "_isolated"]


def test_a_failed_reset_refuses_step_until_a_reset_succeeds(fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    env = make_env(fake_llm_server, llm_max_attempts=1)
    env.reset(seed=0)
    env.step("[search] tools")
    fake_llm_server.set_handler(lambda request: Reply.server_error(500))
    with pytest.raises(RuntimeError, match="could not start"):
        env.reset(seed=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("[search] tools")  # neither the new episode nor the old one
    fake_llm_server.set_handler(scripted_conversation)
    observation, info = env.reset(seed=1)
    observation, *_ = env.step("[search] tools")
    assert int(observation["step_count"]) == 1


def test_an_error_in_a_tasks_set_up_is_labelled_as_set_up_not_as_the_user(monkeypatch):
    from rollout.episode import WorkItem, play_episode

    env = TauEnv(user_strategy="scripted")

    def broken_set_up(index):
        raise KeyError("initialization action of the task failed")

    monkeypatch.setattr(env.domain, "new_session", broken_set_up)
    result = asyncio.run(
        play_episode(
            env,
            OraclePolicy(),
            WorkItem("retail", "retail-000", 0, 1),
            run_id="r",
            agent_name="oracle",
            agent_model=None,
        )
    )
    row = result["episode"]
    assert row["error"] and row["error_cause"].startswith("setup: "), row["error_cause"]
    assert "initialization action" in row["error_cause"]


def test_rewards_are_never_negative_zero(env):
    from rollout.episode import WorkItem, play_episode

    result = asyncio.run(
        play_episode(
            env,
            OraclePolicy(),
            WorkItem("retail", "retail-000", 0, 1),
            run_id="r",
            agent_name="oracle",
            agent_model=None,
        )
    )
    rewards = [row["reward"] for row in result["steps"]] + [result["episode"]["reward"]]
    assert all(math.copysign(1.0, reward) == 1.0 for reward in rewards), rewards
    env.reset(options={"task_id": "retail-000"})
    _, reward, *_ = env.step("[search] tools")
    assert math.copysign(1.0, reward) == 1.0


def test_a_tokens_per_minute_limit_below_one_prompt_is_refused_at_once(fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    env = make_env(fake_llm_server, llm_tokens_per_minute=100)  # the user's prompt alone is thousands of tokens
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="llm_tokens_per_minute"):
        env.reset(seed=0)
    assert time.monotonic() - started < 5
    assert not fake_llm_server.requests


def test_waiting_for_the_rate_limit_counts_against_the_deadline(fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    env = make_env(fake_llm_server, llm_requests_per_minute=1, llm_deadline_s=2)  # one request a minute
    env.reset(seed=0)
    started = time.monotonic()
    _, _, terminated, _, info = env.step("[action] Could you give me your order id?")
    assert time.monotonic() - started < 5
    assert terminated and info["termination"] == "error"
    assert "llm_deadline_s" in info["error"]["message"] or "deadline" in info["error"]["message"]


def test_a_provider_echoing_the_api_key_never_puts_it_in_info_or_logs(fake_llm_server, caplog):
    def echo(request):
        header = request.headers.get("Authorization", "")
        if "<scenario>" in request.messages[0]["content"]:
            return Reply.ok(f"I see your request came with {header}. {scripted_conversation(request).text}")
        return Reply.ok(f"The header was {header} and the key is {header.split()[-1]}")

    fake_llm_server.set_handler(echo)
    env = make_env(fake_llm_server, verbose=True)
    agent = make_agent(fake_llm_server, native_tools=False)
    with caplog.at_level(logging.DEBUG):
        observation, info = env.reset(seed=0)
        action = agent.act(observation, info)
        observation, reward, terminated, truncated, info = env.step(action)
    assert any(FAKE_KEY[:10] in r.headers.get("Authorization", "") for r in fake_llm_server.requests)  # it was sent
    assert FAKE_KEY not in json.dumps(info, default=str)
    assert FAKE_KEY not in str(action) and FAKE_KEY not in observation["feedback"]
    assert FAKE_KEY not in caplog.text
