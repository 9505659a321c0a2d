"""Report benchmark: ``taugym report`` of 10,000 synthetic episodes must take <= 30 s and write <= 15 MB.

The run (``tests/synthetic_runs.py``) has the shape of an LLM run: three
domains, 25 trials per task, conversations of 3 to 9 tool calls with order
and product records as tool results (about 9 KB of conversation per
episode besides the shared system prompt and tools), mixed rewards, errors
and failed checks. Writing the dataset is not timed; building the page is.

Run: ``make bench`` (or ``.venv/bin/python tests/bench/bench_report.py [EPISODES]``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the synthetic runs

from synthetic_runs import write_synthetic_run  # noqa: E402

from rollout.dataset import read_episodes  # noqa: E402
from rollout.report import build_report  # noqa: E402

LIMIT_S = 30.0
LIMIT_MB = 15.0
TRIALS = 25


def main(episodes: int = 10_000) -> int:
    tasks = episodes // TRIALS
    domains = {"retail": tasks * 45 // 100, "airline": tasks * 20 // 100}
    domains["telecom"] = tasks - sum(domains.values())
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        write_synthetic_run(Path(out), domains, TRIALS)
        written = read_episodes(out, columns=["messages"])
        raw_mb = written.nbytes / 1e6
        print(
            f"report of {written.num_rows} synthetic episodes ({', '.join(f'{d} {n} tasks' for d, n in domains.items())}, "
            f"{TRIALS} trials; {raw_mb:.0f} MB of messages in Arrow; dataset written in {time.monotonic() - started:.1f}s)"
        )
        del written
        started = time.monotonic()
        page = build_report(out)
        seconds = time.monotonic() - started
        size_mb = page.stat().st_size / 1e6
    ok = seconds <= LIMIT_S and size_mb <= LIMIT_MB
    print(
        f"  built in {seconds:.1f}s (limit {LIMIT_S:.0f}s), {size_mb:.1f} MB (limit {LIMIT_MB:.0f} MB): {'ok' if ok else 'OVER THE LIMIT'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
