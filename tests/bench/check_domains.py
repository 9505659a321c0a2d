"""Every task of every tau2 domain, checked against tau2's own scoring (slow: not in CI).

For retail, airline, telecom (base) and mock, in one process: each task is
played by the oracle, a do-nothing agent, a random agent and a broken oracle
(one gold action missing), all in a shuffled order (fixed seed) and again
reversed; each reward is compared with tau2's ``evaluate_simulation`` on the
same trajectory. Then the oracle with the scripted user is compared with
tau2's own gold replay (user actions included), and each domain's pristine
state with a freshly constructed tau2 environment's.

Run: ``make check-domains`` (or ``.venv/bin/python tests/bench/check_domains.py [domain ...]``).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference import POLICIES, tau2_gold_replay_reward, tau2_reward  # noqa: E402

from taugym import TauEnv  # noqa: E402
from taugym.agents import OraclePolicy  # noqa: E402


def play(env, policy, task_id):
    observation, info = env.reset(seed=1, options={"task_id": task_id})
    while True:
        observation, reward, terminated, truncated, info = env.step(policy.act(observation, info))
        if terminated or truncated:
            return reward, info


def check(domain: str) -> None:
    started = time.monotonic()
    env = TauEnv(task_category=domain, user_strategy="scripted")
    task_ids = [env.domain.tasks[i].task_id for i in sorted(env.domain.splits["base"])]
    plays = [(task_id, name) for task_id in task_ids for name in POLICIES]
    random.Random(0).shuffle(plays)
    agree, disagree, tau2_crashed = 0, [], 0
    for order in (plays, plays[::-1]):
        for task_id, name in order:
            reward, info = play(env, POLICIES[name](), task_id)
            try:
                expected = tau2_reward(env, info["termination"])
            except ValueError:  # tau2's evaluator crashes on an env assertion that cannot run; TauGym scores 0
                tau2_crashed += 1
                expected = 0.0 if info["evaluation"]["info"].get("env_assertion_errors") else None
            if reward == expected:
                agree += 1
            else:
                disagree.append((task_id, name, reward, expected))
    oracle_ok, gold_ok, missed = 0, 0, []
    for task_id in task_ids:
        gold = tau2_gold_replay_reward(env.domain, task_id)
        reward, info = play(env, OraclePolicy(), task_id)
        gold_ok += gold == 1.0
        oracle_ok += gold == 1.0 and reward == 1.0
        if gold == 1.0 and reward != 1.0:
            missed.append(task_id)
        if gold != 1.0:
            print(f"  {task_id}: tau2's own gold replay scores {gold}")
    from tau2.registry import registry

    fresh = registry.get_env_constructor(domain)()
    pristine = env.domain._pristine_env
    same_state = all(
        (getattr(pristine, side) is None and getattr(fresh, side) is None)
        or getattr(pristine, side).db.model_dump() == getattr(fresh, side).db.model_dump()
        for side in ("tools", "user_tools")
    )
    print(
        f"{domain}: {len(task_ids)} tasks; rewards equal to tau2's evaluate_simulation: {agree}/{2 * len(plays)}"
        f" (tau2's evaluator crashed on {tau2_crashed}, TauGym scored those 0); oracle + scripted user 1.0 on"
        f" {oracle_ok}/{gold_ok} tasks that tau2's gold replay scores 1.0; pristine state equals a fresh tau2"
        f" environment: {same_state}; {time.monotonic() - started:.0f} s"
    )
    for item in disagree[:10]:
        print("  differs:", item)
    if missed:
        print("  oracle below 1.0 on:", missed)


def main() -> None:
    for domain in sys.argv[1:] or ["retail", "airline", "telecom", "mock"]:
        check(domain)


if __name__ == "__main__":
    main()
