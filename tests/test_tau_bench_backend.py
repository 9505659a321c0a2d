"""The tau_bench (v1) backend, against a stand-in of tau_bench and real v1 trajectories.

The real tau-bench v1 is not on PyPI, so most tests run the adapter on
``tests/tau_bench_standin`` (our own small package with v1's API and scoring
rule; see its README). The last tests read 20 real v1 trajectories recorded by
the tau-bench authors (``../shared/data/tau-bench-v1``).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from conftest import _purge_tau_bench, run_episode

from taugym import TauEnv
from taugym.agents import OraclePolicy
from taugym.backends import get_backend
from taugym.backends.tau_bench_backend import (
    INSTALL_HINT,
    TauBenchBackend,
    TauBenchNotInstalledError,
    task_spec_from_v1,
)

V1_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tau-bench-v1"
V1_SAMPLE = V1_DATA / "gpt-4o-airline-sample.json"


def _env(**overrides):
    return TauEnv(backend="tau_bench", task_category="retail", user_strategy="scripted", **overrides)


class _Script:
    """A policy that sends fixed actions, then [finish]."""

    def __init__(self, actions):
        self.actions = list(actions)

    def act(self, observation, info):
        return self.actions.pop(0) if self.actions else "[finish]"


def _answer(name, **arguments):
    return "[answer] " + json.dumps({"name": name, "arguments": arguments})


# ------------------------------------------------------------------ episodes


def test_oracle_episodes_score_one_by_v1_rules(standin):
    env = _env()
    for task in env.domain.tasks:
        reward, info, _ = run_episode(env, OraclePolicy(), task.task_id)
        assert reward == 1.0, (task.task_id, info["evaluation"])
        assert info["termination"] in ("agent", "user")
        evaluation = info["evaluation"]
        assert evaluation["reward"] == 1.0
        assert set(evaluation) >= {"reward", "info", "actions"}
        assert evaluation["actions"] == [{"name": a["name"], "kwargs": a["arguments"]} for a in task.gold_actions]
    # the outputs task reports v1's outputs info
    _, info, _ = run_episode(env, OraclePolicy(), "retail-001")
    assert info["evaluation"]["info"] == {"r_outputs": 1.0, "outputs": {"129.5": True}}


def test_wrong_trajectories_score_zero(standin):
    env = _env()
    # cancels the wrong order: the data hash differs from the gold one
    wrong = [_answer("cancel_pending_order", order_id="#W2001", reason="ordered by mistake")]
    reward, info, _ = run_episode(env, _Script(wrong), "retail-000")
    assert reward == 0.0
    assert info["evaluation"]["info"]["r_actions"] == 0.0
    # right order, wrong reason
    wrong = [_answer("cancel_pending_order", order_id="#W1001", reason="no longer needed")]
    reward, _, _ = run_episode(env, _Script(wrong), "retail-000")
    assert reward == 0.0
    # the data is right but the agent never says the total
    reward, info, _ = run_episode(env, _Script([_answer("get_order_details", order_id="#W2001")]), "retail-001")
    assert reward == 0.0
    assert info["evaluation"]["info"] == {"r_outputs": 0.0, "outputs": {"129.5": False}}
    # v1 removes commas from the agent's message before looking for an output
    said = [_answer("get_order_details", order_id="#W2001"), "[action] The total is 1,29.5 dollars."]
    assert run_episode(env, _Script(said), "retail-001")[0] == 1.0


def test_agent_sees_v1_wiki_and_tools_unchanged(standin):
    from tau_bench.envs import get_env

    native = get_env("retail", user_strategy="human", user_model="x", task_split="test", task_index=0)
    env = _env()
    observation, info = env.reset(options={"task_id": "retail-000"})
    assert observation["instruction"] == native.wiki
    assert env.domain.policy == native.wiki
    assert env.domain.tool_schemas == native.tools_info
    assert info["tools"] == native.tools_info
    for schema in native.tools_info:
        assert schema["function"]["name"] in observation["tools_info"]
    # v1 has no agent greeting: the user speaks first
    assert env.domain.first_agent_message is None
    assert [m["role"] for m in info["messages"]] == ["system", "user"]


def test_task_ids_and_splits(standin):
    env = _env()
    domain = env.domain
    assert [t.task_id for t in domain.tasks] == [f"retail-{i:03d}" for i in range(5)]
    assert domain.splits == {"test": [0, 1, 2], "train": [3, 4]}  # the stand-in has no dev split
    assert [t.native_id for t in domain.tasks] == ["test/0", "test/1", "test/2", "train/0", "train/1"]
    from tau_bench.envs.retail.tasks import TASKS_TRAIN

    train0 = domain.tasks[3]
    assert train0.user_instructions == TASKS_TRAIN[0].instruction
    assert train0.gold_actions[0]["arguments"] == TASKS_TRAIN[0].actions[0].kwargs
    # a train task plays and scores like any other
    assert run_episode(env, OraclePolicy(), "retail-003")[0] == 1.0
    train_env = _env(task_split="train", data_mode="sequential")
    assert [train_env.reset()[1]["task_id"] for _ in range(3)] == ["retail-003", "retail-004", "retail-003"]

    for bad in ("retail-005", "retail-999", "retail-x", "airline-000", "retail"):
        with pytest.raises(ValueError, match="retail-000 … retail-004"):
            env.reset(options={"task_id": bad})
    with pytest.raises(ValueError, match="retail-000 … retail-004"):
        _env(data_source="retail-005")
    with pytest.raises(ValueError, match=r"valid choices: \['test', 'train'\]"):
        _env(task_split="dev")
    with pytest.raises(ValueError, match="valid choices"):
        TauBenchBackend().load_domain("telecom")
    assert TauBenchBackend().domains() == ["airline", "retail"]


def test_tool_calls_run_v1_tools_with_v1_error_strings(standin):
    env = _env()
    env.reset(options={"task_id": "retail-000"})
    session = env.session
    result = session.call_tool("get_order_details", {"order_id": "#W1001"}, "c1")
    assert not result.error and json.loads(result.content)["status"] == "pending"
    # a tool that returns an error string
    result = session.call_tool("cancel_pending_order", {"order_id": "#W1002", "reason": "no longer needed"}, "c2")
    assert result.error and result.content == "Error: only a pending order can be cancelled"
    # a tool that raises: v1's step turns the exception into "Error: <exception>"
    result = session.call_tool("cancel_pending_order", {"order_id": "#W9", "reason": "no longer needed"}, "c3")
    assert result.error and result.content == "Error: '#W9'"
    # the calls went into v1's own action list, against the episode's own data
    assert [a.name for a in session.env.actions] == [
        "get_order_details",
        "cancel_pending_order",
        "cancel_pending_order",
    ]
    observation, *_ = env.step(_answer("cancel_pending_order", order_id="#W1001", reason="ordered by mistake"))
    assert "cancelled" in observation["feedback"]
    assert session.env.data["orders"]["#W1001"]["status"] == "cancelled"
    # agent messages become v1 respond actions; user messages are only recorded
    env.step("[action] Done, your order is cancelled.")
    last = session.env.actions[-1]
    assert (last.name, last.kwargs) == ("respond", {"content": "Done, your order is cancelled."})
    assert session.user_messages and all(a.name != "user" for a in session.env.actions)
    # a new episode has fresh data
    env.reset(options={"task_id": "retail-000"})
    assert env.session.env.data["orders"]["#W1001"]["status"] == "pending"


def test_scoring_leaves_the_episode_as_it_was(standin):
    env = _env()
    env.reset(options={"task_id": "retail-000"})
    session = env.session
    env.step(_answer("cancel_pending_order", order_id="#W1001", reason="ordered by mistake"))
    before_hash, before_actions = session.env.get_data_hash(), list(session.env.actions)
    first = session.evaluate("agent")
    second = session.evaluate("agent")
    assert first.reward == second.reward == 1.0 and first.breakdown == second.breakdown
    assert session.env.get_data_hash() == before_hash
    assert session.env.actions == before_actions


def test_truncated_episode_scores_zero_with_would_be_breakdown(standin):
    env = _env(max_steps=2)
    env.reset(options={"task_id": "retail-000"})
    env.step(_answer("get_order_details", order_id="#W1001"))
    *_, reward, terminated, truncated, info = env.step(
        _answer("cancel_pending_order", order_id="#W1001", reason="ordered by mistake")
    )
    assert (reward, terminated, truncated) == (0.0, False, True)
    evaluation = info["evaluation"]
    assert evaluation["reward"] == 0.0 and evaluation["reward_if_ended"] == 1.0
    assert "prematurely" in evaluation["note"]
    assert evaluation["info"]["r_actions"] == 1.0


def test_terminate_tool_scores_where_v1_ends_the_episode(standin):
    env = _env()
    plan = [
        _answer("get_order_details", order_id="#W1002"),
        _answer("transfer_to_human_agents", summary="refund of a delivered order #W1002"),
        # v1 would have ended the episode at the transfer: this does not count
        _answer("cancel_pending_order", order_id="#W1001", reason="no longer needed"),
    ]
    reward, info, _ = run_episode(env, _Script(plan), "retail-002")
    assert reward == 1.0
    assert "transfer_to_human_agents" in info["evaluation"]["scored_at"]
    assert env.session.env.data["orders"]["#W1001"]["status"] == "cancelled"  # the call itself did run
    # and the transfer did not leave the gold replay's data behind in the episode
    env.reset(options={"task_id": "retail-002"})
    data = env.session.env.data
    env.step(plan[1])
    assert env.session.env.data is data
    assert [a.name for a in env.session.env.actions] == ["transfer_to_human_agents"]


def test_v1_llm_user_strategy_would_call_the_model(standin):
    """The stand-in is faithful where it matters: v1 builds its LLM user by calling
    the model, which is why the adapter builds the env with the human strategy."""
    from tau_bench.envs import get_env

    with pytest.raises(RuntimeError, match="never run"):
        get_env(
            "retail", user_strategy="llm", user_model="gpt-4o", task_split="test", user_provider="openai", task_index=0
        )
    standin.clear()


# ------------------------------------------------------------ not installed


def test_without_tau_bench_the_backend_says_how_to_install_it(monkeypatch):
    _purge_tau_bench()
    monkeypatch.setitem(sys.modules, "tau_bench", None)  # import tau_bench -> ModuleNotFoundError
    monkeypatch.setattr(TauBenchBackend, "_domains", {})
    backend = get_backend("tau_bench")
    for call in (lambda: backend.load_domain("retail"), backend.domains, lambda: _env()):
        with pytest.raises(TauBenchNotInstalledError) as caught:
            call()
        assert INSTALL_HINT in str(caught.value)
        assert "pip install git+https://github.com/sierra-research/tau-bench" in str(caught.value)
        assert isinstance(caught.value, ImportError) and isinstance(caught.value, ValueError)


# ------------------------------------------------------- real v1 trajectories


def _v1_records() -> list[dict]:
    assert V1_SAMPLE.is_file(), (
        f"the real tau-bench v1 trajectories are missing: expected {V1_SAMPLE} "
        "(../shared/data/tau-bench-v1 beside the repository checkout)"
    )
    records = json.loads(V1_SAMPLE.read_text(encoding="utf-8"))
    assert len(records) == 20
    return records


def test_real_v1_tasks_convert_to_task_specs():
    """Every task of the 20 recorded airline trajectories maps onto a TaskSpec
    whose gold actions are exactly the actions v1 scored the run against."""
    records = _v1_records()
    assert sorted({r["task_id"] for r in records}) == [0, 12, 13, 21, 39]
    for record in records:
        task = record["info"]["task"]
        spec = task_spec_from_v1(task, domain="airline", index=record["task_id"])
        assert spec.task_id == f"airline-{record['task_id']:03d}"
        assert spec.native_id == f"test/{record['task_id']}"
        assert spec.user_instructions == spec.reason_for_call == spec.task_instructions == task["instruction"]
        assert spec.known_info == f"My user id is {task['user_id']}."
        assert spec.unknown_info == ""
        assert list(spec.gold_actions) == [
            {"name": a["name"], "arguments": a["kwargs"], "requestor": "assistant"} for a in task["actions"]
        ]
        assert list(spec.communicate_info) == task["outputs"]
        assert spec.reward_basis == (("DB", "OUTPUTS") if task["outputs"] else ("DB",))
        # v1's RewardResult.actions (what the run was scored against) are the gold actions
        reward_info = record["info"]["reward_info"]
        assert reward_info["actions"] == [{"name": a["name"], "kwargs": a["arguments"]} for a in spec.gold_actions]
        # the oracle's plan calls each gold tool call, in order, with its arguments
        plan = OraclePolicy().plan(spec.to_dict())
        calls = [json.loads(p[len("[answer] ") :]) for p in plan if p.startswith("[answer] ")]
        assert calls == [{"name": a["name"], "arguments": a["kwargs"]} for a in task["actions"]]
        assert plan[-1] == "[finish]"
        # the spec does not share mutable state with the record
        if spec.gold_actions:
            spec.gold_actions[0]["arguments"]["__probe__"] = 1
            assert "__probe__" not in task["actions"][0]["kwargs"]


def test_breakdown_has_the_shape_of_real_v1_reward_info(standin):
    """The breakdown is v1's RewardResult: the same keys as the recorded reward_info."""
    records = _v1_records()
    env = _env()
    _, info, _ = run_episode(env, OraclePolicy(), "retail-000")
    breakdown = info["evaluation"]
    for record in records:
        recorded = record["info"]["reward_info"]
        assert set(recorded) == set(breakdown) == {"reward", "info", "actions"}
        assert set(recorded["info"]) == set(breakdown["info"]) == {"r_actions", "gt_data_hash"}
        assert recorded["reward"] == record["reward"]
        assert len(recorded["info"]["gt_data_hash"]) == len(breakdown["info"]["gt_data_hash"]) == 64


def test_llm_user_gets_v1s_own_user_prompt(standin):
    domain = get_backend("tau_bench").load_domain("retail")
    task = domain.tasks[0]
    prompt = domain.user_system_prompt(task)
    user_module = importlib.import_module("tau_bench.envs.user")
    assert prompt == user_module.LLMUserSimulationEnv.build_system_prompt(None, task.user_instructions)
    assert task.user_instructions in prompt


def test_v1_defaults_are_v1s_own_split_and_user_sampling(standin, monkeypatch):
    from fake_llm_server import FakeLLMServer, Reply

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    env = _env()
    assert env.task_split == "test"  # v1 has no base split
    with FakeLLMServer() as server:
        server.enqueue(Reply.ok("Hi, I want to return an item."))
        llm_env = TauEnv(
            backend="tau_bench",
            task_category="retail",
            user_strategy="llm",
            user_model="fake-user",
            user_provider="openai",
            user_base_url=server.base_url,
            llm_max_attempts=1,
        )
        llm_env.reset(options={"task_id": "retail-000"})
        body = server.requests[0].body
    assert "temperature" not in body  # v1's user sends none: the provider's default applies
