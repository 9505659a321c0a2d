"""Driver capacity: how many finished episodes per second the rollout driver can take in and write.

The driver is the job's only writer: every result comes back to it (Ray
deserialises it) and goes through ``ParquetEpisodeWriter.write_tables``.
The actor that played the episode has already checked its rows and
converted them to Arrow (``rollout.job.stored_result``), the costly part.
This benchmark makes such results from synthetic finished episodes of an
LLM run's shape (tests/synthetic_runs.py: a retail system prompt and tools,
3–9 tool calls, prose turns; no env, no LLM; 400 distinct ones, repeated:
the writer does not look at ids) and feeds them, each unpickled first as a
result from Ray would be, at 1k, 10k and 100k episodes, each size in a fresh
process. It prints episodes/s (wall clock and per CPU-second of the driver
process, which does not depend on how busy the machine is), the result
payload and the Parquet written in MB per CPU-second, and the process's
peak RSS; and, apart, an actor's CPU time per episode for its share
(``stored_result``).

From episodes per CPU-second: one driver with a core of its own keeps up
with ``episodes/s × L`` concurrent episodes of ``L`` seconds each (Little's
law), here printed for L = 60 s.

Run: ``make bench-cluster`` (or ``.venv/bin/python tests/bench/bench_driver.py [N ...]``).
Timings on a shared machine are noisy: read them as a order of magnitude.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: synthetic runs

SIZES = [1_000, 10_000, 100_000]
TEMPLATES = 400  # distinct episodes, re-keyed for each write
EPISODE_LENGTH_S = 60.0


def measure(episodes: int) -> dict:
    """Write ``episodes`` synthetic results the way the driver does; return the figures."""
    from synthetic_runs import synthetic_episode

    from rollout.config import RolloutConfig
    from rollout.dataset import ParquetEpisodeWriter
    from rollout.episode import WorkItem
    from rollout.job import stored_result

    config = RolloutConfig.from_dict({})
    blobs, actor_cpu = [], 0.0
    for i in range(TEMPLATES):  # results as they arrive from Ray: made by an actor, pickled
        row, steps = synthetic_episode("bench", "retail", i % 114, i // 114, i)
        item = WorkItem("retail", row["task_id"], row["trial"], 0)
        cpu_started = time.process_time()
        result = stored_result(config, item, "bench", {"episode": row, "steps": steps}, retry=False)
        actor_cpu += time.process_time() - cpu_started
        assert result["episode"]["error_cause"] == row["error_cause"], result["episode"]["error_cause"]  # stored as is
        blobs.append(pickle.dumps(result, protocol=5))
    payload = 0
    with tempfile.TemporaryDirectory() as out:
        started, cpu_started = time.perf_counter(), time.process_time()
        with ParquetEpisodeWriter(out, "bench", writer_id="driver", max_rows_per_file=256) as writer:
            for n in range(episodes):
                blob = blobs[n % TEMPLATES]
                payload += len(blob)
                result = pickle.loads(blob)
                writer.write_tables(*result["tables"])
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        written = sum(p.stat().st_size for p in Path(out).rglob("*.parquet"))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "episodes": episodes,
        "seconds": elapsed,
        "episodes_per_s": episodes / elapsed,
        "cpu_seconds": cpu,
        "episodes_per_cpu_s": episodes / cpu,
        "payload_mb_per_s": payload / elapsed / 1e6,
        "parquet_mb_per_s": written / elapsed / 1e6,
        "parquet_bytes_per_episode": written / episodes,
        "peak_rss_mib": peak_kib / 1024,
        "actor_cpu_ms_per_episode": 1000 * actor_cpu / TEMPLATES,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    sizes = [int(a) for a in sys.argv[1:]] or SIZES
    print(f"driver capacity: synthetic LLM-shaped episodes through ParquetEpisodeWriter.write, pid {os.getpid()}")
    print(
        f"{'episodes':>9} {'wall s':>7} {'CPU s':>7} {'ep/s':>6} {'ep/CPU-s':>9} {'payload MB/CPU-s':>17} "
        f"{'parquet MB/CPU-s':>17} {'B/episode':>10} {'peak RSS MiB':>13} {'concurrent 60 s episodes':>25}"
    )
    for episodes in sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(episodes)], capture_output=True, text=True, check=True
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        per_cpu = r["episodes"] / r["cpu_seconds"]
        print(
            f"{r['episodes']:>9} {r['seconds']:>7.1f} {r['cpu_seconds']:>7.1f} {r['episodes_per_s']:>6.0f} "
            f"{per_cpu:>9.0f} {r['payload_mb_per_s'] * r['seconds'] / r['cpu_seconds']:>17.1f} "
            f"{r['parquet_mb_per_s'] * r['seconds'] / r['cpu_seconds']:>17.2f} {r['parquet_bytes_per_episode']:>10.0f} "
            f"{r['peak_rss_mib']:>13.0f} {per_cpu * EPISODE_LENGTH_S:>25.0f}"
        )
    print(
        f"an actor's share (stored_result: checks and conversion to Arrow): {r['actor_cpu_ms_per_episode']:.1f} ms CPU per episode"
    )
    print(
        "(one driver with a core of its own serves ep/CPU-s × episode length concurrent episodes; wall-clock "
        "figures on a shared machine are lower by the share of a core the process got)"
    )


if __name__ == "__main__":
    main()
