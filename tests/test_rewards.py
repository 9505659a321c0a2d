"""The reward is the benchmark's own: oracle earns 1.0, random earns ~0, and the
scores equal tau2's evaluate_simulation on the same trajectories."""

from __future__ import annotations

import random

import pytest
from conftest import run_episode
from reference import tau2_reward

from taugym.agents import OraclePolicy, RandomPolicy


def _sample(env, count, seed):
    return random.Random(seed).sample(range(len(env.domain.tasks)), count)


@pytest.mark.parametrize("env_name", ["retail_env", "airline_env"])
def test_oracle_with_scripted_user_earns_full_reward(request, env_name):
    env = request.getfixturevalue(env_name)
    for index in _sample(env, 12, seed=7):
        task_id = env.domain.tasks[index].task_id
        reward, info, _ = run_episode(env, OraclePolicy(), task_id)
        assert reward == 1.0, (task_id, info["evaluation"])
        assert info["termination"] in ("agent", "user")
        assert info["evaluation"]["db_check"]["db_match"] is True


def test_random_policy_earns_zero_on_nearly_all_retail_tasks(retail_env):
    policy = RandomPolicy(seed=3)
    rewards = [
        run_episode(retail_env, policy, retail_env.domain.tasks[i].task_id)[0] for i in _sample(retail_env, 25, 1)
    ]
    assert sum(rewards) / len(rewards) <= 0.2


class _DropLastWrite(OraclePolicy):
    """The oracle, minus its last state-changing call: must score 0 on both sides."""

    def plan(self, task, info=None):
        actions = super().plan(task)
        writes = [
            i for i, a in enumerate(actions) if a.startswith("[answer]") and '"get_' not in a and "find_" not in a
        ]
        if writes:
            del actions[writes[-1]]
        return actions


@pytest.mark.parametrize("policy_factory", [OraclePolicy, _DropLastWrite, lambda: RandomPolicy(seed=11)])
def test_scores_equal_tau2_evaluate_simulation(retail_env, airline_env, policy_factory):
    for env in (retail_env, airline_env):
        for index in _sample(env, 2, seed=5):
            reward, info, _ = run_episode(env, policy_factory(), env.domain.tasks[index].task_id)
            if info["termination"] == "max_steps":
                continue  # tau2 scores truncation 0 without looking; compared in the truncation test
            assert reward == tau2_reward(env), (env.domain.tasks[index].task_id, info["evaluation"])


def test_database_hash_is_tau2_hash_after_writes(retail_env):
    run_episode(retail_env, OraclePolicy(), "retail-000")  # exchanges items: writes
    env = retail_env.session.env
    fast = retail_env.domain.db_hashes(env)[0]
    assert fast == env.get_db_hash()  # tau2's own hash of the same database
    assert fast != retail_env.domain._pristine_env.get_db_hash()


def test_episodes_never_change_the_pristine_database(retail_env):
    domain = retail_env.domain
    before = domain._agent_hasher.hash(domain._agent_db)
    for index in _sample(retail_env, 10, seed=2):
        run_episode(retail_env, OraclePolicy(), domain.tasks[index].task_id)
    assert domain._agent_hasher.hash(domain._agent_db) == before == domain._pristine_env.get_db_hash()


def test_truncation_gives_zero_and_still_reports_the_evaluation():
    from taugym import TauEnv

    env = TauEnv(task_category="retail", user_strategy="scripted", max_steps=3, data_source="retail-005")
    env.reset()
    for _ in range(2):
        _, reward, terminated, truncated, _ = env.step("[search] tools")
        assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step("[search] help")
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["termination"] == "max_steps"
    assert info["evaluation"]["reward"] == 0.0 and "reward_if_ended" in info["evaluation"]


def test_step_penalty_and_normalized_return():
    from taugym import TauEnv

    env = TauEnv(task_category="retail", user_strategy="scripted", step_penalty=0.01, data_source="retail-000")
    reward, info, steps = run_episode(env, OraclePolicy())
    assert reward == pytest.approx(1.0 - 0.01)
    assert env.episode_return == pytest.approx(1.0 - 0.01 * steps)
    env = TauEnv(
        task_category="retail",
        user_strategy="scripted",
        step_penalty=0.01,
        normalize_rewards=True,
        data_source="retail-000",
    )
    reward, info, steps = run_episode(env, OraclePolicy())
    lowest = -0.01 * env.config.max_steps
    assert reward == pytest.approx((1.0 - 0.01 * steps - lowest) / (1.0 - lowest))
    assert 0.0 <= reward <= 1.0


def test_oracle_demonstrations_take_their_arguments_from_the_conversation(retail_env, airline_env):
    from taugym.agents.oracle import grounded_calls

    grounded = total = 0
    for env in (retail_env, airline_env):
        for index in _sample(env, 8, seed=21):
            reward, info, _ = run_episode(env, OraclePolicy(), env.domain.tasks[index].task_id)
            assert reward == 1.0
            counts = grounded_calls(info["messages"])
            grounded, total = grounded + counts[0], total + counts[1]
            bare = grounded_calls(_bare_oracle_messages(env, env.domain.tasks[index].task_id))
            assert counts[0] >= bare[0]  # never fewer grounded calls than the bare gold replay
    assert grounded / total >= 0.95, (grounded, total)


def _bare_oracle_messages(env, task_id):
    return run_episode(env, OraclePolicy(grounded=False), task_id)[1]["messages"]


@pytest.mark.parametrize(
    ("task_id", "identify"),
    [("retail-072", "find_user_id_by_name_zip"), ("retail-073", "find_user_id_by_email")],
)
def test_oracle_asks_who_the_user_is_and_finds_the_order_from_the_answer(retail_env, task_id, identify):
    """The gold has only the write call; the demonstration identifies the user from their own reply first."""
    import json

    from taugym.agents.oracle import grounded_calls

    reward, info, _ = run_episode(retail_env, OraclePolicy(), task_id)
    assert reward == 1.0
    messages = info["messages"]
    calls = [(i, c["function"]) for i, m in enumerate(messages) for c in m.get("tool_calls") or []]
    first_at, first = calls[0]
    assert first["name"] == identify
    question, reply = messages[first_at - 2], messages[first_at - 1]
    assert question["role"] == "assistant" and question["content"].endswith("?")
    assert reply["role"] == "user"
    arguments = first["arguments"]
    arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert all(value in reply["content"] for value in arguments.values())
    assert calls[1][1]["name"] == "get_user_details"
    assert grounded_calls(messages) == (len(calls), len(calls))  # the order and items come from tool results


def test_groundedness_counts_an_arithmetic_expression_by_its_numbers():
    from taugym.agents.oracle import ungrounded_values

    heard = ['{"price": 652.61, "total": 2623.69}', "The other one was 473.43 dollars."]
    assert ungrounded_values({"expression": "652.61 + 473.43"}, heard) == []
    assert ungrounded_values({"expression": "(2623.69 - 652.61) * 2"}, heard + ["2 items"]) == []
    # a number inside a longer one is not heard, and a date is a value, not arithmetic
    assert ungrounded_values({"expression": "52.61 + 473.43"}, heard) == [("expression", "52.61 + 473.43")]
    assert ungrounded_values({"date": "2024-05-20"}, ["2024 05 20"]) == [("date", "2024-05-20")]
