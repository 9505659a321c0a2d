"""The Gymnasium API users know: registration, config, spaces, determinism, robustness."""

from __future__ import annotations

import asyncio
import json
import random
import string

import gymnasium as gym
import pytest
from conftest import run_episode

from taugym import TauEnv, TauGymConfig, get_default_config
from taugym.agents import OraclePolicy


def test_gym_make_and_direct_construction_both_work():
    env = gym.make("TauGym-v0", config={"user_strategy": "scripted", "task_category": "airline"})
    observation, info = env.reset(seed=1)
    assert info["domain"] == "airline" and info["task_id"].startswith("airline-")
    assert env.observation_space.contains(observation)
    observation, info = TauEnv(TauGymConfig(user_strategy="scripted")).reset(seed=1)
    assert info["domain"] == "retail"


def test_default_config_has_the_seed_options_and_defaults():
    config = get_default_config()
    assert (config.task_category, config.task_split, config.data_source, config.data_mode) == (
        "retail",
        None,
        None,
        "single",
    )
    assert (config.user_llm_args, config.max_errors) == (None, None)  # the backend's own defaults
    assert (config.user_strategy, config.user_model, config.user_provider) == ("llm", "gpt-4o", "openai")
    assert (config.max_steps, config.verbose, config.normalize_rewards) == (30, False, False)
    assert (config.backend, config.seed, config.step_penalty) == ("tau2", 42, 0.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"task_category": "shopping"}, "valid choices"),
        ({"data_source": "retail-500"}, "retail-000 … retail-113"),
        ({"data_source": "airline-001"}, "not a retail task"),
        ({"task_split": "holdout"}, "valid choices"),
        ({"backend": "tau3"}, "'tau2', 'tau_bench'"),
        ({"user_strategy": "human"}, "'llm', 'scripted'"),
        ({"max_steps": 0}, "positive integer"),
        ({"colour": "blue"}, "unknown config option"),
    ],
)
def test_invalid_config_names_the_valid_choices(options, message):
    with pytest.raises(ValueError, match=message):
        TauEnv({"user_strategy": "scripted", **options})


def test_configs_load_from_yaml(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("user_strategy: scripted\ntask_category: airline\nmax_steps: 12\n", encoding="utf-8")
    env = TauEnv(str(path))
    assert (env.config.task_category, env.config.max_steps) == ("airline", 12)
    shipped = TauGymConfig.from_yaml("configs/env/offline.yaml")
    assert shipped.user_strategy == "scripted"


def test_reset_is_deterministic_for_a_seed(retail_env):
    first = retail_env.reset(seed=123)
    second = retail_env.reset(seed=123)
    assert first[1]["task_id"] == second[1]["task_id"]
    assert first[0]["feedback"] == second[0]["feedback"]
    chosen = {retail_env.reset(seed=s)[1]["task_id"] for s in range(12)}
    assert len(chosen) > 3  # seeds draw different tasks
    base_split = {retail_env.domain.tasks[i].task_id for i in retail_env.domain.splits[retail_env.task_split]}
    assert retail_env.task_split == "base" and chosen <= base_split  # tau2's default split


def test_reset_options_choose_the_task_and_sequential_mode_walks_the_split():
    env = TauEnv(user_strategy="scripted", data_mode="sequential", task_split="test")
    split = env.domain.splits["test"]
    ids = [env.reset()[1]["task_id"] for _ in range(3)]
    assert ids == [env.domain.tasks[i].task_id for i in split[:3]]
    assert env.reset(options={"task_id": "retail-019"})[1]["task_id"] == "retail-019"
    with pytest.raises(ValueError, match="valid range"):
        env.reset(options={"task_id": "retail-x"})


def test_observation_shows_policy_tools_and_the_users_first_message(retail_env):
    observation, info = retail_env.reset(options={"task_id": "retail-000"})
    assert retail_env.domain.policy in observation["instruction"]  # the backend's policy, unchanged
    for schema in info["tools"]:
        assert schema["function"]["name"] in observation["tools_info"]
    assert observation["feedback"].startswith("User: ")
    assert info["messages"][0]["role"] == "system"
    assert info["messages"][-1] == {"role": "user", "content": observation["feedback"][len("User: ") :]}
    assert int(observation["step_count"]) == 0 and observation["episode_complete"] == 0


def test_all_four_action_forms_and_openai_tool_calls(retail_env):
    retail_env.reset(options={"task_id": "retail-000"})
    observation, *_ = retail_env.step("[search] tools")
    assert "get_order_details" in observation["feedback"]
    observation, *_ = retail_env.step("[search] help")
    assert "[answer]" in observation["feedback"]
    observation, *_ = retail_env.step("[search] exchange")
    assert "exchange_delivered_order_items" in observation["feedback"]
    observation, *_ = retail_env.step('[answer] {"name": "get_order_details", "arguments": {"order_id": "#W2378156"}}')
    assert '"order_id": "#W2378156"' in observation["feedback"]
    observation, *_ = retail_env.step('[answer] get_order_details {"order_id": "#W2378156"}')
    assert '"order_id": "#W2378156"' in observation["feedback"]
    call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": "#W2378156"})},
    }
    observation, _, _, _, info = retail_env.step(call)
    assert '"order_id": "#W2378156"' in observation["feedback"]
    assert info["messages"][-2]["tool_calls"][0]["id"] == "call_x"
    assert info["messages"][-1]["role"] == "tool" and info["messages"][-1]["tool_call_id"] == "call_x"
    observation, *_ = retail_env.step("[action] Could you confirm your zip code?")
    assert observation["feedback"].startswith("User: ")
    _, _, terminated, _, info = retail_env.step("[finish]")
    assert terminated and info["termination"] == "agent"


@pytest.mark.parametrize(
    "action, fragment",
    [
        ("hello", "starts with one of"),
        ("[answer] {not json", "not valid JSON"),
        ('[answer] {"name": "drop_tables", "arguments": {}}', "unknown tool"),
        ('[answer] get_order_details {"order": "#W1"}', "has no argument"),
        ("[answer] get_order_details {}", "needs the argument"),
        ('[answer] get_order_details {"order_id": 5}', "JSON type string"),
        ("[action]   ", "empty"),
        (None, "must be a string"),
        (42, "must be a string"),
        ('[answer] calculate {"expression": "9**9**9**9"}', "power"),
    ],
)
def test_malformed_actions_get_feedback_and_change_nothing(retail_env, action, fragment):
    observation, info = retail_env.reset(options={"task_id": "retail-000"})
    before = list(info["messages"])
    observation, reward, terminated, truncated, info = retail_env.step(action)
    assert fragment in observation["feedback"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert int(observation["step_count"]) == 1
    assert info["messages"] == before


def _random_action(rng):
    prefix = rng.choice(
        ["[search] ", "[action] ", "[answer] ", "[finish]", "", "[ANSWER]", "[answer]{", "[answer] calculate "]
    )
    alphabet = string.printable + 'éü中\u0000{}[]":,'
    body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
    if rng.random() < 0.2:
        body = json.dumps(
            {
                "name": rng.choice(["get_order_details", "calculate", "cancel_pending_order", "x"]),
                "arguments": {
                    rng.choice(["order_id", "expression", "reason", "zz"]): rng.choice(
                        [body, 10 ** rng.randint(1, 400), [body], None, {"a": body}]
                    )
                },
            }
        )
    if prefix == "[finish]":
        prefix = "[search] "  # finishing ends the episode; fuzz the rest
    return prefix + body


def test_fuzzing_step_never_raises_and_leaves_the_env_usable():
    env = TauEnv(user_strategy="scripted", data_source="retail-000", max_steps=1000)
    rng = random.Random(0)
    env.reset()
    for i in range(3000):
        action = (
            _random_action(rng)
            if i % 50
            else rng.choice(
                [
                    None,
                    3.5,
                    ["[finish]"],
                    {"tool_calls": [1, 2]},
                    {"function": "x"},
                    b"[finish]",
                    "[answer] " + "[" * 5000,
                ]
            )
        )
        observation, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(observation)
        if terminated or truncated:
            env.reset()
    reward, info, _ = run_episode(env, OraclePolicy(), "retail-000")
    assert reward == 1.0


def test_huge_inputs_are_refused_without_exhausting_memory(retail_env):
    retail_env.reset(options={"task_id": "retail-000"})
    observation, *_ = retail_env.step("[action] " + "x" * 10_000_000)
    assert "limit" in observation["feedback"]
    nested = "[answer] get_order_details " + '{"order_id": ' * 100_000
    observation, *_ = retail_env.step(nested[: retail_env.config.max_action_chars])
    assert observation["feedback"].startswith("Error:")


def test_think_reasoning_is_stripped_before_the_user_sees_it(retail_env):
    retail_env.reset(options={"task_id": "retail-000"})
    _, _, _, _, info = retail_env.step("[action] <think>the user seems upset</think>Could you give me your zip code?")
    sent = [m for m in info["messages"] if m["role"] == "assistant" and m.get("content")][-1]
    assert sent["content"] == "Could you give me your zip code?"


def test_gymnasium_env_checker_passes():
    from gymnasium.utils.env_checker import check_env

    env = TauEnv(user_strategy="scripted")
    check_env(env, skip_render_check=True)


def test_step_async_is_a_coroutine_with_the_same_outcome():
    env = TauEnv(user_strategy="scripted", data_source="retail-003")

    async def play():
        policy = OraclePolicy()
        observation, info = await env.reset_async(seed=5)
        while True:
            step = env.step_async(policy.act(observation, info))
            assert asyncio.iscoroutine(step)
            observation, reward, terminated, truncated, info = await step
            if terminated or truncated:
                return reward, info

    reward, info = asyncio.run(play())
    sync_reward, sync_info, _ = run_episode(env, OraclePolicy(), seed=5)
    assert reward == sync_reward == 1.0
    assert [m["content"] for m in info["messages"]] == [m["content"] for m in sync_info["messages"]]


def test_render_and_close(retail_env):
    env = TauEnv(user_strategy="scripted", render_mode="ansi", data_source="retail-000")
    env.reset()
    env.step("[action] Hello, how can I help?")
    text = env.render()
    assert "user:" in text and "assistant: Hello, how can I help?" in text
    env.close()
    with pytest.raises(RuntimeError, match="reset"):
        env.step("[finish]")


def test_verbose_logs_through_logging_and_quiet_logs_nothing(caplog):
    import logging

    logged = {}
    for verbose in (True, False):
        env = TauEnv(user_strategy="scripted", verbose=verbose, data_source="retail-000")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="taugym"):
            env.reset()
            env.step("[search] tools")
        logged[verbose] = [r.getMessage() for r in caplog.records if r.name.startswith("taugym")]
    assert any("step 1" in message for message in logged[True])
    assert logged[False] == []
