"""Scale simulation: 2,000 concurrent LLM episodes on this machine against the fake OpenAI server at 20 s latency.

The fake server (tests/fake_llm_server.py, real HTTP on 127.0.0.1) answers
every call after ``BENCH_SCALE_LATENCY_S`` (20 s; ``BENCH_SCALE_JITTER``, 0
by default, draws each call's delay uniformly within that fraction of it,
as a provider's latency varies). With 2,000 episodes in
flight that is about 100 calls per second. Measured here, a call costs
about 7 ms of CPU in all (litellm's client, the fake server, the env's
steps and scoring: 1,200 scripted calls in one process), so 100 calls per
second keep about 0.7 of the 2 cores busy. The job runs
``actors × episodes_per_actor`` = 2,000 concurrent episodes (4 × 500 by
default) of the scripted conversation (6 calls each), every slot playing
about two episodes. The job's ``ramp_s`` starts the first 2,000 over one
episode's duration (``BENCH_SCALE_RAMP_S``, 0 for all at once): episodes
that all start together end together, and every episode's end (scoring,
its result back through Ray, writing, the next reset) then lands in one
burst per round that queues on the 2 cores. The run prints:

* throughput in the steady middle of the run (from the C/2-th to the 3C/2-th
  finished episode, after the ramp) as a fraction of Little's law bound C / (K × L) (C
  episodes in flight, K calls each, L seconds per call); goal >= 0.9;
* the peak RSS of each actor, sampled every 5 s while the episodes run; goal <= 2 GiB;
* the driver's own peak RSS, and the CPU time of the job's own thread per
  episode (handing out work, ``ray.wait``/``ray.get``, writing): the
  driver's capacity with Ray's share in it, which ``bench_driver.py`` leaves
  out;
* the episodes' mean duration in the actors against the K × L they would
  take with no overhead.

The fake server runs in a process of its own, as a provider would.

Run: ``make bench-cluster`` (or ``.venv/bin/python tests/bench/bench_scale.py``); about 7 minutes.
Timings on a shared machine are noisy.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import threading
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
from rollout.dataset import read_episodes  # noqa: E402
from rollout.job import RolloutJob  # noqa: E402

LATENCY_S = float(os.environ.get("BENCH_SCALE_LATENCY_S", "20"))
JITTER = float(os.environ.get("BENCH_SCALE_JITTER", "0"))  # each delay uniform in LATENCY_S * (1 ± JITTER)
ACTORS = int(os.environ.get("BENCH_SCALE_ACTORS", "4"))
EPISODES_PER_ACTOR = int(os.environ.get("BENCH_SCALE_EPISODES_PER_ACTOR", "500"))
ROUNDS = float(os.environ.get("BENCH_SCALE_ROUNDS", "2"))  # episodes per slot
CALLS_PER_EPISODE = 6  # the scripted conversation: 3 user turns, 3 agent turns
#: the job's ramp_s: the first C episodes start over one episode's duration (0: all at once)
RAMP_S = float(os.environ.get("BENCH_SCALE_RAMP_S", str(CALLS_PER_EPISODE * LATENCY_S)))


def _serve(latency_s: float, jitter: float, connection, stop) -> None:
    """The fake server's process: send its URL, answer until ``stop`` is set, send how many calls it answered."""
    delays = random.Random(0)
    with FakeLLMServer() as server:
        server.set_handler(
            lambda request: scripted_conversation(request, delay_s=latency_s * (1 + jitter * (2 * delays.random() - 1)))
        )
        connection.send(server.base_url)
        stop.wait()
        connection.send(len(server.requests))


@contextlib.contextmanager
def server_process():
    """The fake server in a process of its own, as a provider is: its CPU is not the driver's.

    Yields ``{"base_url": ...}``; on leaving, ``"calls"`` holds the calls it answered.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    stop = context.Event()
    process = context.Process(target=_serve, args=(LATENCY_S, JITTER, theirs, stop), daemon=True)
    process.start()
    try:
        server = {"base_url": ours.recv()}
        yield server
        stop.set()
        server["calls"] = ours.recv()
    finally:
        stop.set()
        process.join(timeout=10)


def main() -> int:
    import psutil

    concurrent = ACTORS * EPISODES_PER_ACTOR
    episodes = int(concurrent * ROUNDS)
    trials = -(-episodes // 114)  # retail has 114 tasks
    config = RolloutConfig.from_dict(
        dict(
            domains=["retail"],
            tasks="all",
            trials=trials,
            actors=ACTORS,
            cpus_per_actor=0.25,
            episodes_per_actor=EPISODES_PER_ACTOR,
            ramp_s=RAMP_S,
            rows_per_file=1024,
            agent={
                "name": "llm",
                "model": "fake-agent",
                "provider": "openai",
                "timeout_s": 10 * LATENCY_S,
            },
            env={
                "user_strategy": "llm",
                "user_model": "fake-user",
                "user_provider": "openai",
                "max_steps": 30,
                "llm_timeout_s": 10 * LATENCY_S,
            },
        )
    )
    ray.init(address="local", num_cpus=max(2, ACTORS), include_dashboard=False, log_to_driver=False)
    finished: list[float] = []
    peak_rss: dict[int, int] = {}
    sampling = threading.Event()

    def sample_rss(job: RolloutJob) -> None:
        """Every actor's RSS now and then, read by pid (the actors are local processes): a Ray call to an actor
        would wait for one of its episode slots to free, and holding up the driver would slow what is measured."""
        while not sampling.wait(5.0):
            for index, pid in enumerate(job.actor_pids):  # empty until the actors run
                with contextlib.suppress(psutil.Error):
                    peak_rss[index] = max(peak_rss.get(index, 0), psutil.Process(pid).memory_info().rss)

    with server_process() as server:
        config.agent["base_url"] = server["base_url"]
        config.env["user_base_url"] = server["base_url"]

        def on_result(job: RolloutJob, result: dict) -> None:
            finished.append(time.monotonic())

        print(
            f"scale simulation: {ACTORS} actors x {EPISODES_PER_ACTOR} episodes = {concurrent} concurrent, "
            f"{trials * 114} episodes, {CALLS_PER_EPISODE} calls of {LATENCY_S:.0f}s each on average "
            f"(uniform within ±{JITTER:.0%}); the first {concurrent} start over ramp_s={RAMP_S:.0f}s"
        )
        started, driver_cpu_started = time.monotonic(), time.thread_time()
        with tempfile.TemporaryDirectory() as out:
            job = RolloutJob(config, out=out, progress=False)
            sampler = threading.Thread(target=sample_rss, args=(job,), daemon=True)
            sampler.start()
            try:
                summary = job.run(on_result=on_result)
            finally:
                sampling.set()
                sampler.join()
            durations = sorted(read_episodes(out, columns=["duration_s"])["duration_s"].to_pylist())
        wall = time.monotonic() - started
        driver_cpu = time.thread_time() - driver_cpu_started  # the job's own thread only
    ray.shutdown()
    calls = server["calls"]
    bound = concurrent / (CALLS_PER_EPISODE * LATENCY_S)
    low, high = concurrent // 2, min(len(finished) - 1, concurrent * 3 // 2)
    steady = (high - low) / (finished[high] - finished[low])
    print(
        f"  {summary['episodes']} episodes ({summary['errors']} errors), {calls} LLM calls, {wall:.0f}s wall; "
        f"first episode done after {finished[0] - started:.0f}s"
    )
    print(
        f"  steady throughput (episodes {low}..{high}): {steady:.2f} ep/s; Little's law bound {bound:.2f} ep/s; "
        f"fraction {steady / bound:.2f} (goal >= 0.9)"
    )
    print(
        f"  the driver's own thread (hand-out, ray.wait/get, writing): {driver_cpu:.1f}s CPU "
        f"= {1000 * driver_cpu / summary['episodes']:.1f} ms per episode, so one core keeps up with "
        f"{summary['episodes'] / driver_cpu * 60:.0f} concurrent 60 s episodes"
    )
    print(
        f"  episode duration in the actor (reset to last step): mean {sum(durations) / len(durations):.1f}s, "
        f"median {durations[len(durations) // 2]:.1f}s, 95th percentile {durations[int(len(durations) * 0.95)]:.1f}s; "
        f"{CALLS_PER_EPISODE} calls of {LATENCY_S:.0f}s would be {CALLS_PER_EPISODE * LATENCY_S:.0f}s"
    )
    whole = summary["episodes"] / wall
    print(f"  whole run incl. start-up and the first {CALLS_PER_EPISODE * LATENCY_S:.0f}s ramp: {whole:.2f} ep/s")
    print(
        "  actor peak RSS: "
        + ", ".join(f"{rss / 2**30:.2f} GiB" for _, rss in sorted(peak_rss.items()))
        + f" (goal <= 2 GiB); driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        f"; machine: {psutil.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
