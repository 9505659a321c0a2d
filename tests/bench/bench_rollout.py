"""Rollout benchmarks against the fake OpenAI-compatible server (fixed latency), on this machine.

Prints:
* throughput for 1, 2 and 4 actors as a fraction of the bound that the
  concurrency and latency allow (Little's law: C concurrent episodes of K
  sequential calls of latency L finish at most C / (K * L) episodes per
  second); goal >= 0.8;
* TauGym (one actor, C slots) against tau2's own runner (``tau2.run.run_tasks``
  with ``max_concurrency=C``) on the same server and tasks: episodes/s ratio;
* one actor's RSS after warm-up and after 1,000 episodes.

Run: ``make bench`` (or ``.venv/bin/python tests/bench/bench_rollout.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray on loopback only
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fake server

import ray  # noqa: E402
from fake_llm_server import FakeLLMServer  # noqa: E402
from test_llm_env import scripted_conversation  # noqa: E402

from rollout.config import RolloutConfig  # noqa: E402
from rollout.job import RolloutJob, RolloutWorker  # noqa: E402
from rollout.rate_limit import start_rate_limit_service  # noqa: E402

LATENCY_S = float(os.environ.get("BENCH_LATENCY_S", "0.25"))
CALLS_PER_EPISODE = 6  # the scripted conversation: 3 user turns, 3 agent turns
SLOTS = int(os.environ.get("BENCH_SLOTS", "4"))
EPISODES_PER_SLOT = int(os.environ.get("BENCH_EPISODES_PER_SLOT", "10"))  # long enough to reach steady state


def llm_job_config(server: FakeLLMServer, actors: int, episodes: int) -> RolloutConfig:
    trials = -(-episodes // 114)  # retail has 114 tasks
    tasks = [f"retail-{i:03d}" for i in range(episodes // trials)]
    return RolloutConfig.from_dict(
        dict(
            domains=["retail"],
            tasks=tasks,
            trials=trials,
            actors=actors,
            cpus_per_actor=0.25,
            episodes_per_actor=SLOTS,
            agent={"name": "llm", "model": "fake-agent", "provider": "openai", "base_url": server.base_url},
            env={
                "user_strategy": "llm",
                "user_model": "fake-user",
                "user_provider": "openai",
                "user_base_url": server.base_url,
                "max_steps": 30,
            },
        )
    )


def throughput(server: FakeLLMServer) -> None:
    bound_per_slot = 1.0 / (CALLS_PER_EPISODE * LATENCY_S)
    print(
        f"throughput vs Little's law bound (latency {LATENCY_S}s, {CALLS_PER_EPISODE} calls/episode, {SLOTS} episodes per actor)"
    )
    for actors in (1, 2, 4):
        episodes = actors * SLOTS * EPISODES_PER_SLOT
        with tempfile.TemporaryDirectory() as out:
            summary = RolloutJob(llm_job_config(server, actors, episodes), out=out, progress=False).run()
        rate = summary["episodes"] / summary["wall_s"]
        bound = actors * SLOTS * bound_per_slot
        print(
            f"  {actors} actor(s): {summary['episodes']} episodes in {summary['wall_s']:.2f}s = {rate:.2f} ep/s; "
            f"bound {bound:.2f} ep/s; fraction {rate / bound:.2f} (errors {summary['errors']})"
        )


def tau2_side_by_side(server: FakeLLMServer) -> None:
    episodes = SLOTS * 4
    with tempfile.TemporaryDirectory() as out:
        summary = RolloutJob(llm_job_config(server, 1, episodes), out=out, progress=False).run()
    ours = summary["episodes"] / summary["wall_s"]
    from loguru import logger

    logger.disable("tau2")
    with contextlib.redirect_stdout(io.StringIO()):
        from tau2.registry import registry
        from tau2.run import run_tasks
    tasks = registry.get_tasks_loader("retail")(None)[:episodes]
    llm_args = {"api_base": server.base_url, "custom_llm_provider": "openai", "temperature": 0.0}
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        results = run_tasks(
            "retail",
            tasks,
            "llm_agent",
            "user_simulator",
            llm_agent="fake-agent",
            llm_args_agent=llm_args,
            llm_user="fake-user",
            llm_args_user=llm_args,
            max_concurrency=SLOTS,
            console_display=False,
            log_level="ERROR",
            max_steps=60,
        )
    elapsed = time.monotonic() - started
    theirs = len(results.simulations) / elapsed
    print(
        f"tau2 run_tasks (max_concurrency {SLOTS}): {len(results.simulations)} episodes, {theirs:.2f} ep/s; "
        f"TauGym 1 actor x {SLOTS}: {ours:.2f} ep/s; ratio TauGym/tau2 {ours / theirs:.2f}"
    )


def memory(episodes: int = 1000) -> None:
    config = RolloutConfig.from_dict(
        dict(domains=["retail"], agent={"name": "oracle"}, env={"user_strategy": "scripted"})
    )
    actor = RolloutWorker.remote(config.__dict__, "bench-memory", start_rate_limit_service("bench-memory"))
    start = ray.get(actor.rss_bytes.remote())
    for i in range(0, episodes, 50):
        ray.get(
            [
                actor.run.remote(
                    {"domain": "retail", "task_id": f"retail-{(i + j) % 114:03d}", "trial": 0, "seed": i + j}
                )
                for j in range(50)
            ]
        )
    end = ray.get(actor.rss_bytes.remote())
    print(
        f"actor RSS: {start / 2**20:.0f} MiB after warm-up, {end / 2**20:.0f} MiB after {episodes} episodes "
        f"({(end - start) / 2**20:+.0f} MiB)"
    )
    ray.kill(actor)


def main() -> int:
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    with FakeLLMServer() as server:
        server.set_handler(lambda request: scripted_conversation(request, delay_s=LATENCY_S))
        throughput(server)
        tau2_side_by_side(server)
    memory()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
