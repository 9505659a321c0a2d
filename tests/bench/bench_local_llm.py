"""LLM-bound rollout throughput against a real model server, beside the fake one, on this machine.

SmolLM2-135M-Instruct served by ``transformers serve`` on 127.0.0.1 (the
folder of ``python -m train.smollm2``) plays the LLM user and the LLM agent;
the rollout job runs one actor with 1, 2 and 4 concurrent episodes. For each,
it prints episodes per second against the bound of Little's law: ``C``
concurrent episodes of ``K`` sequential calls of latency ``L`` finish at
most ``C / (K * L)`` episodes per second, where ``L`` is the per-call latency
measured with one episode at a time (its wall time over its calls: the
env's own share is milliseconds against seconds per call) and ``K`` the
measured calls per episode of each run. A ratio near 1 at ``C`` says that
the server overlapped the ``C`` requests; well below, that it served them
one after another (a CPU server has no spare compute to give).

The same is run against the fake server (``tests/fake_llm_server.py``) with
a fixed latency: the rollout job's own ceiling, a reference measured side by
side. Then the real server again with ``--continuous-batching``.

Run: ``make bench-local-llm`` (minutes; not part of ``make bench``).
Environment: ``BENCH_EPISODES`` (episodes per run, default 4),
``BENCH_MAX_STEPS`` (default 2), ``BENCH_FAKE_LATENCY_S`` (default 0.5),
``BENCH_SERVERS`` (which of ``fake,real,real-cb`` to run; default all).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["OPENAI_API_KEY"] = "local-server"  # the local servers take any key; never send a real one to them

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the fake server
sys.path.insert(0, str(ROOT / "scripts"))  # the real server's start and stop

import ray  # noqa: E402
from fake_llm_server import FakeLLMServer  # noqa: E402
from local_llm_server import LocalLLMServer  # noqa: E402
from test_llm_env import scripted_conversation  # noqa: E402

from rollout.config import RolloutConfig  # noqa: E402
from rollout.dataset import read_episodes  # noqa: E402
from rollout.job import RolloutJob  # noqa: E402
from train.smollm2 import prepare_smollm2  # noqa: E402

EPISODES = int(os.environ.get("BENCH_EPISODES", "4"))
MAX_STEPS = int(os.environ.get("BENCH_MAX_STEPS", "2"))
FAKE_LATENCY_S = float(os.environ.get("BENCH_FAKE_LATENCY_S", "0.5"))
SERVERS = os.environ.get("BENCH_SERVERS", "fake,real,real-cb").split(",")
CONCURRENCY = (1, 2, 4)
TASKS = ["retail-000", "retail-001", "retail-002", "retail-003", "retail-004", "retail-005", "retail-006", "retail-007"]


def job_config(base_url: str, model: str, concurrency: int, tokenizer: str | None) -> RolloutConfig:
    llm = {"provider": "openai", "base_url": base_url, "timeout_s": 600, "deadline_s": 1800, "max_attempts": 1}
    return RolloutConfig.from_dict(
        dict(
            domains=["retail"],
            tasks=TASKS[:EPISODES],
            actors=1,
            cpus_per_actor=0.25,
            episodes_per_actor=concurrency,
            agent={
                "name": "llm",
                "model": model,
                **llm,
                "sampling": {"temperature": 0.0, "max_tokens": 64},
                "context_window": 8192,
                "tokenizer": tokenizer,
            },
            env={
                "user_strategy": "llm",
                "user_model": model,
                "user_provider": "openai",
                "user_base_url": base_url,
                "user_llm_args": {"temperature": 0.0, "max_tokens": 48},
                "llm_timeout_s": 600,
                "llm_deadline_s": 1800,
                "llm_max_attempts": 1,
                "llm_context_window": 8192,
                "llm_tokenizer": tokenizer,
                "max_steps": MAX_STEPS,
            },
        )
    )


def run(base_url: str, model: str, concurrency: int, tokenizer: str | None = None) -> dict:
    """One rollout of EPISODES episodes, ``concurrency`` at a time: wall time, episodes, calls, errors."""
    with tempfile.TemporaryDirectory() as out:
        summary = RolloutJob(job_config(base_url, model, concurrency, tokenizer), out=out, progress=False).run()
        calls = sum(read_episodes(out, columns=["llm_calls"])["llm_calls"].to_pylist())
    return {"wall_s": summary["wall_s"], "episodes": summary["episodes"], "errors": summary["errors"], "calls": calls}


def report(name: str, results: dict[int, dict], latency_s: float, latency_note: str) -> None:
    print(f"{name}: per-call latency L = {latency_s:.3f}s ({latency_note})")
    for concurrency, r in results.items():
        per_episode = r["calls"] / max(r["episodes"], 1)
        rate = r["episodes"] / r["wall_s"]
        bound = concurrency / (per_episode * latency_s)
        print(
            f"  C={concurrency}: {r['episodes']} episodes ({r['errors']} errors), {r['calls']} calls "
            f"(K={per_episode:.1f}) in {r['wall_s']:.1f}s = {rate:.4f} ep/s; bound C/(K*L) = {bound:.4f} ep/s; "
            f"ratio {rate / bound:.2f}"
        )


def real_server(model_folder: str, continuous_batching: bool) -> None:
    with LocalLLMServer(model_folder, continuous_batching=continuous_batching) as server:
        results = {c: run(server.base_url, server.model, c, tokenizer=model_folder) for c in CONCURRENCY}
    one = results[1]
    latency = one["wall_s"] / one["calls"]
    name = "transformers serve" + (" --continuous-batching" if continuous_batching else "")
    report(name, results, latency, "measured at C=1: its wall time over its calls")


def fake_server() -> None:
    with FakeLLMServer() as server:
        server.set_handler(lambda request: scripted_conversation(request, delay_s=FAKE_LATENCY_S))
        results = {c: run(server.base_url, "fake", c) for c in CONCURRENCY}
    report("fake server", results, FAKE_LATENCY_S, "its fixed reply delay")


def main() -> int:
    model_folder = str(prepare_smollm2())
    print(f"{EPISODES} retail episodes per run, max_steps {MAX_STEPS}, one actor, C episodes at a time")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        if "fake" in SERVERS:
            fake_server()
        if "real" in SERVERS:
            real_server(model_folder, continuous_batching=False)
        if "real-cb" in SERVERS:
            real_server(model_folder, continuous_batching=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
