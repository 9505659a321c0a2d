"""Every tau2 domain is exact: each episode works on its own state, telecom's user
acts on their own device, and TauGym's reward equals tau2's ``evaluate_simulation``
whatever ran before in the same process."""

from __future__ import annotations

import json
import random

import pytest
from conftest import run_episode
from reference import POLICIES, tau2_evaluation, tau2_gold_replay_reward

from taugym import TauEnv
from taugym.agents import OraclePolicy

DOMAINS = ("retail", "airline", "telecom", "mock")


@pytest.fixture(scope="module")
def envs():
    return {domain: TauEnv(task_category=domain, user_strategy="scripted") for domain in DOMAINS}


def _base_ids(env):
    return [env.domain.tasks[i].task_id for i in env.domain.splits["base"]]


def test_a_write_in_one_episode_is_invisible_to_the_next(envs):
    env = envs["telecom"]
    call = '[answer] refuel_data {"customer_id": "C1001", "line_id": "L1002", "gb_amount": 2.0}'
    seen = []
    for _ in range(3):
        env.reset(options={"task_id": "telecom-000"})
        observation, *_ = env.step(call)
        seen.append(json.loads(observation["feedback"].split(": ", 1)[1])["new_data_refueling_gb"])
    assert len(set(seen)) == 1, seen


def test_a_tasks_device_setup_does_not_reach_the_next_task(envs):
    env = envs["telecom"]
    user_tools = {}
    for task_id in _base_ids(env)[:12]:
        env.reset(options={"task_id": task_id})
        user_tools[task_id] = env.session.env.user_tools.db.model_dump()
    for task_id in reversed(_base_ids(env)[:12]):
        env.reset(options={"task_id": task_id})
        assert env.session.env.user_tools.db.model_dump() == user_tools[task_id], task_id


def _tau2_pristine_state(domain):
    from tau2.registry import registry

    fresh = registry.get_env_constructor(domain)()
    return _state(fresh)


def _state(environment):
    state = {}
    for side, toolkit in (("agent", environment.tools), ("user", environment.user_tools)):
        if toolkit is None:
            continue
        state[side] = toolkit.db.model_dump()
        state[side + "_toolkit"] = {k: _plain(v) for k, v in vars(toolkit).items() if k != "db"}
    return state


def _plain(value):
    """A comparable picture of an object's state."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "__dict__"):
        return {type(value).__name__: _plain(vars(value))}
    return value


def test_many_mixed_episodes_leave_every_domain_as_tau2_builds_it(envs):
    from rollout.dataset import episode_row_from_info

    rng = random.Random(0)
    plays = [
        (domain, name, task_id) for domain in DOMAINS for name in POLICIES for task_id in _base_ids(envs[domain])[:10]
    ]
    # every play twice, in two shuffled rounds: each is replayed after other domains' and policies' episodes
    rounds = [rng.sample(plays, len(plays)) for _ in range(2)]
    first_rows = {}
    for domain, name, task_id in rounds[0] + rounds[1]:
        env = envs[domain]
        reward, info, steps = run_episode(env, POLICIES[name](), task_id, seed=5)
        row = episode_row_from_info(
            info,
            run_id="r",
            trial=0,
            seed=5,
            agent=name,
            agent_model=None,
            user_model=None,
            user_strategy="scripted",
            duration_s=0.0,
            reward=reward,
            terminated=True,
            truncated=False,
            num_steps=steps,
            taugym_version="0",
            llm_usage={},
            episode_id="e",
        )
        key = (domain, name, task_id)
        if key in first_rows:
            assert row == first_rows[key], key  # the same task played again: the same row
        first_rows[key] = row
    for domain in DOMAINS:
        pristine = envs[domain].domain._pristine_env
        assert _state(pristine) == _tau2_pristine_state(domain), domain


@pytest.mark.parametrize("domain", DOMAINS)
def test_rewards_equal_tau2_whatever_ran_before(envs, domain):
    env = envs[domain]
    count = {"retail": 2, "airline": 2, "telecom": 8, "mock": 10}[domain]
    task_ids = random.Random(3).sample(_base_ids(env), min(count, len(_base_ids(env))))
    plays = [(task_id, name) for task_id in task_ids for name in POLICIES]
    random.Random(4).shuffle(plays)
    compared = 0
    for order in (plays, plays[::-1]):
        for task_id, name in order:
            reward, info, _ = run_episode(env, POLICIES[name](), task_id, seed=1)
            try:
                tau2 = tau2_evaluation(env, info["termination"])
            except ValueError as exc:  # tau2's evaluator crashes on an env assertion that cannot run
                assert info["evaluation"]["info"]["env_assertion_errors"], (task_id, name, exc)
                assert reward == 0.0  # TauGym scores that assertion as not met
            else:
                assert reward == tau2.reward, (task_id, name, info["evaluation"])
                if tau2.db_check is not None and info["termination"] in ("agent", "user"):
                    assert info["evaluation"]["db_check"] == tau2.db_check.model_dump(), (task_id, name)
            compared += 1
    assert compared == 2 * len(plays)


@pytest.mark.parametrize("domain", ["telecom", "mock"])
def test_oracle_with_scripted_user_earns_what_tau2s_gold_replay_earns(envs, domain):
    env = envs[domain]
    task_ids = _base_ids(env) if domain == "mock" else random.Random(8).sample(_base_ids(env), 15)
    for task_id in task_ids:
        gold = tau2_gold_replay_reward(env.domain, task_id)
        reward, info, _ = run_episode(env, OraclePolicy(), task_id)
        if gold == 1.0:
            assert reward == 1.0, (task_id, info["evaluation"])


def test_telecom_oracle_asks_the_user_for_the_device_actions(envs):
    env = envs["telecom"]
    task = next(t for t in env.domain.tasks if any(a["requestor"] == "user" for a in t.gold_actions))
    reward, info, _ = run_episode(env, OraclePolicy(), task.task_id)
    user_calls = [c.name for m in env.session.messages if m.role == "user" and m.tool_calls for c in m.tool_calls]
    assert user_calls == [a["name"] for a in task.gold_actions if a["requestor"] == "user"]
    # the agent's view holds none of the user's device calls
    agent_calls = [c["function"]["name"] for m in info["messages"] for c in (m.get("tool_calls") or [])]
    assert not set(user_calls) & set(agent_calls)
    assert reward == 1.0


def test_telecom_ids_are_tau2s_base_tasks_and_the_full_set_is_reachable_by_name():
    env = TauEnv(task_category="telecom", user_strategy="scripted")
    base = env.domain.splits["base"]
    assert sorted(base) == list(range(114))  # telecom-000 … telecom-113
    assert len(env.domain.splits["full"]) == 2285
    env = TauEnv(task_category="telecom", user_strategy="scripted", task_split="full", seed=3)
    assert env.reset()[1]["task_id"] in {env.domain.tasks[i].task_id for i in env.domain.splits["full"]}


def test_the_default_split_is_the_backends_own():
    env = TauEnv(user_strategy="scripted")
    assert env.task_split == "base"
    ids = {env.reset(seed=s)[1]["task_id"] for s in range(40)}
    assert not ids <= {env.domain.tasks[i].task_id for i in env.domain.splits["test"]}  # draws from base


def test_a_tasks_initial_history_is_shown_to_the_agent_and_the_user(envs):
    env = envs["mock"]
    task = next(t for t in env.domain.tasks if t.native_id == "update_task_with_message_history")
    observation, info = env.reset(options={"task_id": task.task_id})
    texts = [m.get("content") for m in info["messages"]]
    assert "I need to create a task for the project review meeting." in texts
    assert any(
        m.get("tool_calls") and m["tool_calls"][0]["function"]["name"] == "create_task" for m in info["messages"]
    )
    assert "Hi! How can I help you today?" not in texts  # tau2 sends no greeting after a history
    assert observation["feedback"].startswith("User: ")


def test_too_many_tool_errors_end_the_episode_as_tau2_does(envs):
    env = envs["retail"]
    env.reset(options={"task_id": "retail-000"})
    for step in range(10):
        _, reward, terminated, truncated, info = env.step('[answer] get_order_details {"order_id": "#nope"}')
    assert terminated and not truncated and reward == 0.0
    assert info["termination"] == "max_errors"
    assert tau2_evaluation(env, info["termination"]).reward == 0.0
