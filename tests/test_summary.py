"""The run summary counts like the benchmarks: an errored episode is a failed run
(reward 0) in the mean and in pass^k, with the error count beside it."""

from __future__ import annotations

import random
from math import comb
from types import SimpleNamespace

import pytest

from rollout.summary import summarize_rows


def _synthetic_run():
    """4 retail tasks × 4 trials; 3 episodes errored (no reward), the rest 1.0 or 0.0."""
    rng = random.Random(7)
    rows = []
    for task in range(4):
        for trial in range(4):
            rows.append(
                {
                    "domain": "retail",
                    "task_id": f"retail-{task:03d}",
                    "trial": trial,
                    "reward": float(rng.random() < 0.6),
                    "error": False,
                }
            )
    for index in (1, 6, 11):
        rows[index].update(reward=None, error=True)
    return rows


def _v1_metrics(rows):
    """tau-bench v1's run.py display_metrics: a failed run is an EnvRunResult with reward 0."""
    results = [SimpleNamespace(task_id=r["task_id"], trial=r["trial"], reward=r["reward"] or 0.0) for r in rows]
    num_trials = len({r.trial for r in results})
    rewards = [r.reward for r in results]
    c_per_task = {}
    for r in results:
        c_per_task[r.task_id] = c_per_task.get(r.task_id, 0) + (1 if 1 - 1e-6 <= r.reward <= 1 + 1e-6 else 0)
    pass_hat = {
        k: sum(comb(c, k) / comb(num_trials, k) for c in c_per_task.values()) / len(c_per_task)
        for k in range(1, num_trials + 1)
    }
    return sum(rewards) / len(rewards), pass_hat


def _tau2_metrics(rows):
    """tau2's own compute_metrics over a Results holding the same simulations (errors score 0)."""
    from tau2.data_model.simulation import Results, RewardInfo, SimulationRun
    from tau2.metrics.agent_metrics import compute_metrics
    from tau2.registry import registry

    tasks = registry.get_tasks_loader("retail")(None)
    simulations = [
        SimulationRun(
            id=f"s{n}",
            task_id=tasks[int(r["task_id"].split("-")[1])].id,
            trial=r["trial"],
            start_time="",
            end_time="",
            duration=0.0,
            termination_reason="agent_error" if r["error"] else "agent_stop",
            reward_info=RewardInfo(reward=r["reward"] or 0.0),
            messages=[],
            agent_cost=0.0,
        )
        for n, r in enumerate(rows)
    ]
    info = SimpleNamespace(
        num_trials=max(r["trial"] for r in rows) + 1,
        git_commit="",
        seed=0,
        max_steps=0,
        max_errors=0,
        environment_info=SimpleNamespace(domain_name="retail"),
        user_info=SimpleNamespace(implementation="", llm="", llm_args={}),
        agent_info=SimpleNamespace(implementation="", llm="", llm_args={}),
    )
    metrics = compute_metrics(Results.model_construct(info=info, tasks=tasks, simulations=simulations))
    return metrics.avg_reward, metrics.pass_hat_ks


def test_errored_episodes_count_as_failures_like_tau2_and_v1():
    rows = _synthetic_run()
    summary = summarize_rows(rows)["domains"]["retail"]
    assert summary["errors"] == 3 and summary["episodes"] == 16
    for mean, pass_hat in (_v1_metrics(rows), _tau2_metrics(rows)):
        assert summary["mean_reward"] == pytest.approx(mean)
        assert summary["pass^k"] == {str(k): pytest.approx(v) for k, v in pass_hat.items()}
    values = [summary["pass^k"][str(k)] for k in range(1, 5)]
    assert values == sorted(values, reverse=True)  # pass^k never rises with k


def test_k_runs_to_the_fewest_trials_any_task_has():
    rows = [r for r in _synthetic_run() if not (r["task_id"] == "retail-002" and r["trial"] == 3)]
    summary = summarize_rows(rows)["domains"]["retail"]
    assert sorted(summary["pass^k"]) == ["1", "2", "3"]
    mean, pass_hat = _tau2_metrics(rows)
    assert summary["pass^k"] == {str(k): pytest.approx(v) for k, v in pass_hat.items()}
