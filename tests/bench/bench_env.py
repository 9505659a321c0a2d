"""Env benchmarks, side by side with tau2's own objects on the same machine.

Prints, for retail and airline:
* reset time / time to construct a fresh tau2 domain environment (goal <= 0.1);
* end-of-episode scoring time / tau2's evaluate_simulation on the same
  trajectory (goal <= 0.1);
and the full oracle sweep (oracle + scripted user on every retail and airline
task: goal 164 of 164 at reward 1.0) and the random policy's mean reward.

Run: ``make bench`` (or ``.venv/bin/python tests/bench/bench_env.py``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from taugym import TauEnv  # noqa: E402
from taugym.agents import OraclePolicy, RandomPolicy  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def play(env, policy, task_id):
    observation, info = env.reset(options={"task_id": task_id})
    while True:
        observation, reward, terminated, truncated, info = env.step(policy.act(observation, info))
        if terminated or truncated:
            return reward, info


def bench_domain(domain: str, repeats: int) -> dict:
    env = TauEnv(task_category=domain, user_strategy="scripted")  # first: it imports tau2 quietly
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.registry import registry

    construct = registry.get_env_constructor(domain)
    task_ids = [t.task_id for t in env.domain.tasks[:repeats]]
    cycle = iter(task_ids * 100)
    construct()  # warm both sides
    env.reset(options={"task_id": task_ids[0]})
    tau2_construct = median_seconds(construct, repeats)
    taugym_reset = median_seconds(lambda: env.reset(options={"task_id": next(cycle)}), repeats * 5)

    play(env, OraclePolicy(), task_ids[0])
    session = env.session
    run = SimulationRun(
        id="bench", task_id=session.task.id, start_time="", end_time="", duration=0.0,
        termination_reason=TerminationReason.AGENT_STOP, messages=session.messages,
    )
    ours = session.evaluate("agent").reward
    theirs = evaluate_simulation(run, session.task, EvaluationType.ALL, False, domain).reward
    assert ours == theirs, (ours, theirs)
    tau2_score = median_seconds(lambda: evaluate_simulation(run, session.task, EvaluationType.ALL, False, domain), repeats)
    taugym_score = median_seconds(lambda: session.evaluate("agent"), repeats * 5)
    return {
        "domain": domain,
        "tau2_construct_s": tau2_construct,
        "taugym_reset_s": taugym_reset,
        "reset_ratio": taugym_reset / tau2_construct,
        "tau2_evaluate_s": tau2_score,
        "taugym_score_s": taugym_score,
        "score_ratio": taugym_score / tau2_score,
    }


def sweep() -> None:
    total = earned = 0
    random_rewards = []
    for domain in ("retail", "airline"):
        env = TauEnv(task_category=domain, user_strategy="scripted")
        random_policy = RandomPolicy(seed=0)
        for task in env.domain.tasks:
            reward, _ = play(env, OraclePolicy(), task.task_id)
            total += 1
            earned += reward == 1.0
            random_rewards.append(play(env, random_policy, task.task_id)[0])
    print(f"oracle + scripted user: {earned} of {total} retail+airline tasks at reward 1.0")
    print(f"random policy: mean reward {statistics.mean(random_rewards):.3f}, "
          f"{sum(r == 0 for r in random_rewards)} of {len(random_rewards)} episodes at 0")


def main() -> int:
    repeats = int(os.environ.get("BENCH_REPEATS", "7"))
    print("env benchmark (median seconds; ratio = TauGym / tau2, goal <= 0.10)")
    ok = True
    for domain in ("retail", "airline"):
        r = bench_domain(domain, repeats)
        print(
            f"{domain:8s} reset {r['taugym_reset_s'] * 1e3:7.2f} ms vs tau2 env construction "
            f"{r['tau2_construct_s'] * 1e3:7.1f} ms: ratio {r['reset_ratio']:.4f}"
        )
        print(
            f"{domain:8s} score {r['taugym_score_s'] * 1e3:7.2f} ms vs tau2 evaluate_simulation "
            f"{r['tau2_evaluate_s'] * 1e3:7.1f} ms: ratio {r['score_ratio']:.4f}"
        )
        ok &= r["reset_ratio"] <= 0.1 and r["score_ratio"] <= 0.1
    sweep()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
