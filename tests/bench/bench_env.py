"""Env benchmarks, side by side with tau2's own objects on the same machine.

Prints, for retail, airline and telecom:
* reset time / what tau2 does to start an episode: construct a fresh domain
  environment and set the task's initial state (goal <= 0.1);
* end-of-episode scoring time / tau2's evaluate_simulation on the same
  trajectory (goal <= 0.1);
and the full oracle sweep (oracle + scripted user on every base task: goal
114/114 retail, 50/50 airline, 114/114 telecom at reward 1.0) and the random
policy's mean reward.

Run: ``make bench`` (or ``.venv/bin/python tests/bench/bench_env.py``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from reference import tau2_run  # noqa: E402

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
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.registry import registry

    constructor = registry.get_env_constructor(domain)
    task_ids = [t.task_id for t in env.domain.tasks[:repeats]]
    cycle = iter(task_ids * 100)
    native_tasks = iter([env.domain.native_task(i) for i in range(len(task_ids))] * 100)

    def construct():  # tau2's episode start: a fresh environment in the task's initial state
        task = next(native_tasks)
        environment = constructor()
        state = task.initial_state
        if state is not None:
            environment.set_state(state.initialization_data, state.initialization_actions, state.message_history or [])

    construct()  # warm both sides
    env.reset(options={"task_id": task_ids[0]})
    tau2_construct = median_seconds(construct, repeats)
    taugym_reset = median_seconds(lambda: env.reset(options={"task_id": next(cycle)}), repeats * 5)

    play(env, OraclePolicy(), task_ids[0])
    session = env.session
    run = tau2_run(env, "agent")
    ours = session.evaluate("agent").reward
    theirs = evaluate_simulation(run, session.task, EvaluationType.ALL, False, domain).reward
    assert ours == theirs, (ours, theirs)
    tau2_score = median_seconds(
        lambda: evaluate_simulation(run, session.task, EvaluationType.ALL, False, domain), repeats
    )
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
    """Oracle and random policy with the scripted user on every base task of retail, airline and telecom."""
    for domain in ("retail", "airline", "telecom"):
        env = TauEnv(task_category=domain, user_strategy="scripted")
        random_policy = RandomPolicy(seed=0)
        earned, random_rewards = 0, []
        task_ids = [env.domain.tasks[i].task_id for i in sorted(env.domain.splits["base"])]
        for task_id in task_ids:
            earned += play(env, OraclePolicy(), task_id)[0] == 1.0
            random_rewards.append(play(env, random_policy, task_id)[0])
        print(
            f"{domain:8s} oracle + scripted user: {earned} of {len(task_ids)} base tasks at reward 1.0; "
            f"random policy: mean reward {statistics.mean(random_rewards):.3f}, "
            f"{sum(r == 0 for r in random_rewards)} of {len(random_rewards)} at 0"
        )


def main() -> int:
    repeats = int(os.environ.get("BENCH_REPEATS", "7"))
    print("env benchmark (median seconds; ratio = TauGym / tau2, goal <= 0.10)")
    ok = True
    for domain in ("retail", "airline", "telecom"):
        r = bench_domain(domain, repeats)
        print(
            f"{domain:8s} reset {r['taugym_reset_s'] * 1e3:7.2f} ms vs tau2 env construction + initial state "
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
