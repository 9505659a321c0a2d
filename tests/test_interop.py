"""The benchmark's file formats: import v1 and tau2 results, re-score them, export runs for tau2's tools."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import run_episode
from test_tau_bench_backend import V1_SAMPLE

from rollout.cli import main
from rollout.dataset import ParquetEpisodeWriter, read_episodes, read_steps
from rollout.episode import WorkItem, play_episode
from taugym import TauEnv
from taugym.agents import OraclePolicy
from taugym.agents.base import Policy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _same_message(source: dict, row: dict) -> bool:
    """A source turn and a row's message are the same turn (arguments compared as JSON)."""
    if source["role"] != row["role"] or source.get("content") != row["content"]:
        return False
    if source.get("tool_call_id") != row["tool_call_id"] or source.get("name") != row["name"]:
        return False
    calls, stored = source.get("tool_calls") or [], row["tool_calls"] or []
    if len(calls) != len(stored):
        return False
    for call, kept in zip(calls, stored):
        arguments = kept["function"]["arguments"]
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        if (call["id"], call["function"]["name"], json.loads(call["function"]["arguments"])) != (
            kept["id"],
            kept["function"]["name"],
            arguments,
        ):
            return False
    return True


# ------------------------------------------------------------------ v1 import
def test_real_gpt4o_airline_trajectories_import_turn_for_turn(tmp_path, capsys):
    if not V1_SAMPLE.exists():
        pytest.skip(f"{V1_SAMPLE} is not here")
    records = json.loads(V1_SAMPLE.read_text(encoding="utf-8"))
    out = tmp_path / "imported"
    assert main(["import", str(V1_SAMPLE), "--out", str(out), "--agent-model", "gpt-4o", "--user-model", "gpt-4o"]) == 0
    assert "imported 20 episode(s)" in capsys.readouterr().out
    rows = read_episodes(out).to_pylist()
    assert len(rows) == 20
    by_position = {row["source_position"]: row for row in rows}
    for position, record in enumerate(records):
        row = by_position[position]
        assert row["task_id"] == f"airline-{record['task_id']:03d}"
        assert row["trial"] == record["trial"]
        assert row["reward"] == record["reward"]
        assert (row["source_format"], row["source_file"]) == ("tau-bench-v1", str(V1_SAMPLE))
        assert (row["agent_model"], row["user_model"], row["backend"]) == ("gpt-4o", "gpt-4o", "tau_bench")
        assert json.loads(row["reward_breakdown"]) == record["info"]["reward_info"]
        assert len(row["messages"]) == len(record["traj"])
        assert all(_same_message(s, m) for s, m in zip(record["traj"], row["messages"]))
    assert sum(row["reward"] for row in rows) == 10.0
    steps = read_steps(out).to_pylist()
    assert len(steps) == sum(row["num_steps"] for row in rows)
    assert sum(
        len(m.get("tool_calls") or []) + (m["role"] == "assistant" and not m.get("tool_calls"))
        for r in records
        for m in r["traj"]
    ) == len(steps)


# --------------------------------------------------------- v1 rescore (CI)
def _v1_records(env) -> list[dict]:
    """Retail trajectories in v1's results format, played by the oracle against the stand-in."""
    records = []
    for number in range(3):  # the test split: retail-000 … retail-002
        for trial in range(2):
            _, info, _ = run_episode(env, OraclePolicy(), f"retail-{number:03d}")
            traj = [dict(m) for m in info["messages"]]
            if traj[-1].get("name") != "transfer_to_human_agents":  # v1 ends at the transfer, or when the user stops
                traj += [
                    {"role": "assistant", "content": "Is there anything else I can help with?"},
                    {"role": "user", "content": "No, thanks. ###STOP###"},
                ]
            task = env.domain.native_task(number)
            records.append(
                {
                    "task_id": number,
                    "trial": trial,
                    "reward": info["benchmark_reward"],
                    "traj": traj,
                    "info": {"task": task.model_dump(), "reward_info": info["evaluation"], "user_cost": 0.0},
                }
            )
    return records


def test_v1_retail_records_rescore_on_the_standin(standin, tmp_path, capsys):
    env = TauEnv(backend="tau_bench", task_category="retail", user_strategy="scripted")
    records = _v1_records(env)
    assert [r["reward"] for r in records] == [1.0] * 6
    wrong = json.loads(json.dumps(records[0]))  # the record says 1.0, but the order is cancelled for another reason
    for message in wrong["traj"]:
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] == "cancel_pending_order":
                call["function"]["arguments"] = json.dumps({"order_id": "#W1001", "reason": "no longer needed"})
    wrong["trial"] = 2
    path = tmp_path / "v1-retail.json"
    path.write_text(json.dumps(records + [wrong]), encoding="utf-8")
    report_path = tmp_path / "report.json"
    assert main(["rescore", str(path), "--backend", "tau_bench", "--report", str(report_path)]) == 0
    table = capsys.readouterr().out
    assert "retail" in table and " 7 " in table
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert all({"task_id", "trial", "recorded_reward", "reward", "agree", "reason"} <= set(e) for e in report)
    assert [(e["task_id"], e["trial"], e["agree"]) for e in report[:6]] == [
        (f"retail-{n:03d}", t, True) for n in range(3) for t in range(2)
    ]
    assert all(e["reward"] == e["recorded_reward"] == 1.0 and e["reason"] is None for e in report[:6])
    last = report[6]
    assert (last["recorded_reward"], last["reward"], last["agree"]) == (1.0, 0.0, False)
    assert "r_actions" in last["reason"]


def test_replay_user_answers_with_the_record_and_notes_divergence(standin):
    env = TauEnv(backend="tau_bench", task_category="retail", user_strategy="replay")
    env.user.load(["Cancel order #W1001 please.", "Yes. ###STOP###"], [None, "Shall I cancel it?"])
    observation, info = env.reset(options={"task_id": "retail-000"})
    assert observation["feedback"] == "User: Cancel order #W1001 please."
    *_, terminated, _, info = env.step("[action] Which order?")
    assert terminated and info["termination"] == "user"
    assert "Which order?" in info["user_notes"][0] and "Shall I cancel it?" in info["user_notes"][0]


# ------------------------------------------------------------ tau2 round trip
class _Finish(Policy):
    """Ends at once: the task is not done (reward 0)."""

    def act(self, observation, info):
        return "[finish]"


def test_tau2_round_trip_export_evaluate_import(tmp_path):
    from tau2.data_model.simulation import Results
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.scripts.leaderboard.prepare_submission import validate_submission_traj_set
    from tau2.scripts.leaderboard.verify_trajectories_public import check_format, check_num_trials, check_tasks

    run = tmp_path / "run"
    env = TauEnv(backend="tau2", task_category="mock", user_strategy="scripted")
    with ParquetEpisodeWriter(run, "roundtrip") as writer:
        for spec in env.domain.tasks:  # the whole base split, one trial each
            agent = _Finish() if spec.index == 0 else OraclePolicy()
            item = WorkItem("mock", spec.task_id, 0, spec.index)
            played = asyncio.run(
                play_episode(env, agent, item, run_id="roundtrip", agent_name="llm", agent_model="gpt-4o")
            )
            writer.write(played["episode"], played["steps"])
    ours = {(r["task_id"], r["trial"]): r for r in read_episodes(run).to_pylist()}
    assert {r["reward"] for r in ours.values()} == {0.0, 1.0}

    exported = tmp_path / "tau2"
    assert main(["export", str(run), "--format", "tau2", "--out", str(exported)]) == 0
    path = exported / "mock.json"
    results = Results.load(path)
    tasks = {task.id: task for task in results.tasks}
    native = {spec.native_id: spec.task_id for spec in env.domain.tasks}
    for simulation in results.simulations:
        verdict = evaluate_simulation(simulation, tasks[simulation.task_id], EvaluationType.ALL, False, "mock")
        assert verdict.reward == ours[(native[simulation.task_id], simulation.trial)]["reward"]
    # tau2's own submission checks
    assert check_format(path)[1:] == (True, "")
    # tau2 stamps the messages of a task's initial history with the time it loads the task, so mock's two
    # tasks with a history never hash equal across loads (tau2's check fails them for tau2's own files too):
    # the exported tasks equal tau2's base tasks but for those stamps
    ok, why = check_tasks(results)
    assert ok or why == "Task mismatches found in 2 tasks"
    from tau2.registry import registry

    def unstamped(task):
        dumped = task.model_dump()
        for message in (dumped.get("initial_state") or {}).get("message_history") or []:
            message.pop("timestamp", None)
        return dumped

    base = {task.id: unstamped(task) for task in registry.get_tasks_loader("mock")("base")}
    assert {task.id: unstamped(task) for task in results.tasks} == base
    assert check_num_trials(results) == (True, "")
    assert validate_submission_traj_set([results]) == (True, "")

    back = tmp_path / "back"
    assert main(["import", str(path), "--out", str(back)]) == 0
    theirs = {(r["task_id"], r["trial"]): r for r in read_episodes(back).to_pylist()}
    assert theirs.keys() == ours.keys()
    for key, row in ours.items():
        assert theirs[key]["reward"] == row["reward"]
        assert theirs[key]["messages"] == row["messages"]
        assert theirs[key]["source_format"] == "tau2"


# ------------------------------------------------------------ damaged input
def test_damaged_file_imports_its_good_records_and_reports_each_bad_one(standin, tmp_path, capsys):
    env = TauEnv(backend="tau_bench", task_category="retail", user_strategy="scripted")
    good = _v1_records(env)
    first, second = good[0], good[2]  # retail-000 trial 0, retail-001 trial 0

    def changed(record, change):
        copy = json.loads(json.dumps(record))
        change(copy)
        return copy

    def tool_call(record):
        return next(m for m in record["traj"] if m.get("tool_calls"))["tool_calls"][0]

    records = [
        first,  # 0 good
        42,  # 1 not an object
        {k: v for k, v in first.items() if k != "traj"},  # 2 no traj
        changed(first, lambda r: r.update(reward="1.0", trial=5)),  # 3 reward is text
        changed(first, lambda r: r.update(trial="one")),  # 4 trial is text
        changed(first, lambda r: r["traj"].append({"role": "wizard", "content": "hi"})),  # 5 unknown role
        changed(first, lambda r: tool_call(r)["function"].update(name="launch_rockets")),  # 6 unknown tool
        changed(first, lambda r: tool_call(r)["function"].update(arguments="[1, 2]")),  # 7 arguments not an object
        changed(first, lambda r: r.update(task_id=99)),  # 8 unknown task
        first,  # 9 duplicate (task, trial)
        {"id": "x", "task_id": "0", "messages": []},  # 10 a tau2 simulation
        second,  # 11 good
    ]
    text = json.dumps(records)
    cut = text[:-1] + ", " + json.dumps(first)[:50]  # 12 truncated
    path = tmp_path / "damaged.json"
    path.write_text(cut, encoding="utf-8")
    tau2_file = tmp_path / "tau2.json"
    tau2_file.write_text(json.dumps({"info": {}, "tasks": [], "simulations": []}), encoding="utf-8")
    out = tmp_path / "out"

    assert main(["import", str(path), str(tau2_file), "--format", "tau-bench-v1", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    refused = [line for line in printed.splitlines() if "refused:" in line]
    for position, words in [
        (1, "must be a JSON object"),
        (2, "no 'traj'"),
        (3, "'reward' must be a number"),
        (4, "'trial' must be"),
        (5, "unknown role 'wizard'"),
        (6, "unknown tool 'launch_rockets'"),
        (7, "arguments must be a JSON object"),
        (8, "unknown task"),
        (9, "duplicate"),
        (10, "looks like a tau2 simulation"),
        (12, "truncated"),
    ]:
        assert any(f"record {position}:" in line and words in line for line in refused), (position, words, printed)
    assert any("tau2.json" in line and "not tau-bench-v1" in line for line in refused)
    assert len(refused) == 12
    rows = read_episodes(out).to_pylist()
    assert sorted((r["task_id"], r["trial"], r["source_position"]) for r in rows) == [
        ("retail-000", 0, 0),
        ("retail-001", 0, 11),
    ]
    # an input with nothing good writes nothing
    empty = tmp_path / "empty"
    assert main(["import", str(tau2_file), "--format", "tau-bench-v1", "--out", str(empty)]) == 2
    assert not (empty / "episodes").exists()
