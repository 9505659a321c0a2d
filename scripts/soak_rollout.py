"""Soak test of the rollout job (not part of `make test`): kills, a concurrent run, a changed resume, a hostile LLM.

    .venv/bin/python scripts/soak_rollout.py [--runs 3] [--work DIR]

1. ``--runs`` runs of the default job (configs/rollout/default.yaml), each
   SIGKILLed at a random moment and resumed (killed again up to twice) until done;
2. while one of them runs, a second run into the same folder (must be refused);
3. a resume with a changed config (must be refused, naming the difference);
4. an LLM run against the local fake server answering with unpaired
   surrogates, 5,000-digit numbers and 30% faults, then ``--retry-errors``.

Then, for every folder: each (domain, task, trial) once in ``episodes/`` and
in a raw ``pyarrow.dataset`` read of ``steps/``, no hidden files, and no
traceback in any output. Prints the figures; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import pyarrow.dataset as ds  # noqa: E402

from rollout.dataset import completed_keys  # noqa: E402

failures: list[str] = []
outputs: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def rollout(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "rollout", "--no-progress", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    outputs.append(done.stderr + done.stdout)
    return done


def killed_run(args: list[str], delay_s: float) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-m", "rollout", "--no-progress", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(delay_s)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


def check_folder(out: Path, expected: int, label: str) -> None:
    episodes = ds.dataset(out / "episodes", format="parquet", partitioning="hive").to_table()
    keys = list(zip(*(episodes[c].to_pylist() for c in ("domain", "task_id", "trial"))))
    check(
        len(keys) == len(set(keys)) == expected,
        f"{label}: {len(keys)} episode rows, {len(set(keys))} keys, {expected} wanted",
    )
    steps = ds.dataset(out / "steps", format="parquet", partitioning="hive").to_table()
    step_keys = list(zip(steps["episode_id"].to_pylist(), steps["step_index"].to_pylist()))
    check(
        len(step_keys) == len(set(step_keys)) == sum(episodes["num_steps"].to_pylist())
        and set(steps["episode_id"].to_pylist()) <= set(episodes["episode_id"].to_pylist()),
        f"{label}: {len(step_keys)} raw step rows, each of a published episode, none twice",
    )
    hidden = [p for p in out.rglob(".*")]
    check(not hidden, f"{label}: {len(hidden)} hidden files")


def default_runs(work: Path, runs: int, rng: random.Random) -> None:
    config = "configs/rollout/default.yaml"
    for n in range(runs):
        out = work / f"default-{n}"
        kills = 0
        # small files (an execution setting: a resume may change it) so a kill lands between commits
        args = ["--config", config, "--out", str(out), "rows_per_file=16"]
        killed_run(args, rng.uniform(20, 50))
        kills += 1
        if n == 0:  # a second run while the first is alive
            driver = subprocess.Popen(
                [sys.executable, "-m", "rollout", "--no-progress", *args, "--resume"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(20)
            second = rollout(*args, "--resume", timeout=120)
            check(
                second.returncode == 2 and "another run is writing" in second.stderr,
                f"a concurrent run is refused: {second.stderr.strip()[:160]}",
            )
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
            kills += 1
        before = len(completed_keys(out))
        changed = rollout(*args, "--resume", "env.max_steps=12", timeout=120)
        check(
            changed.returncode == 2 and "env.max_steps was 30, now 12" in changed.stderr,
            f"a changed resume is refused: {changed.stderr.strip()[:160]}",
        )
        started = time.monotonic()
        done = rollout(*args, "--resume")
        check(
            done.returncode == 0,
            f"default-{n}: killed {kills}x with {before}/164 published, "
            f"resumed in {time.monotonic() - started:.0f}s, rc={done.returncode}",
        )
        check_folder(out, 164, f"default-{n}")


def llm_run(work: Path) -> None:
    from fake_llm_server import FakeLLMServer, Reply, random_failures  # noqa: F401
    from test_llm_env import scripted_conversation

    rng = random.Random(7)

    def hostile(request):
        if rng.random() < 0.3:
            return rng.choice([Reply.server_error(503), Reply.rate_limit(retry_after_s=0.1), Reply.invalid_json()])
        reply = scripted_conversation(request)
        if reply.text:
            reply.text += " \ud800 " + "9" * 5000
        else:
            reply.tool_calls[0]["function"]["arguments"] = '{"order_id": "' + "9" * 5000 + '\\ud800"}'
        return reply

    with FakeLLMServer(handler=hostile) as server:
        out = work / "llm"
        config = work / "llm.yaml"
        config.write_text(
            json.dumps(
                {
                    "domains": ["retail"],
                    "tasks": [f"retail-{i:03d}" for i in range(20)],
                    "trials": 1,
                    "actors": 2,
                    "cpus_per_actor": 0.5,
                    "episodes_per_actor": 4,
                    "agent": {
                        "name": "llm",
                        "model": "fake-agent",
                        "provider": "openai",
                        "base_url": server.base_url,
                        "timeout_s": 5,
                        "backoff_initial_s": 0.05,
                        "backoff_max_s": 0.2,
                        "max_attempts": 2,
                    },
                    "env": {
                        "user_strategy": "llm",
                        "user_model": "fake-user",
                        "user_provider": "openai",
                        "user_base_url": server.base_url,
                        "llm_timeout_s": 5,
                        "llm_backoff_initial_s": 0.05,
                        "llm_backoff_max_s": 0.2,
                        "llm_max_attempts": 2,
                    },
                }
            )
        )
        env = {"OPENAI_API_KEY": "sk-soak-fake-key-000000000000"}
        first = rollout("--config", str(config), "--out", str(out), env=env)
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
        check(
            first.returncode == 0,
            f"LLM run (surrogates, 5,000-digit numbers, 30% faults): rc={first.returncode}, "
            f"{summary.get('episodes')} episodes, {summary.get('errors')} errors",
        )
        retried = rollout("--config", str(config), "--out", str(out), "--resume", "--retry-errors", env=env)
        summary = json.loads((out / "summary.json").read_text())
        check(
            retried.returncode == 0,
            f"--retry-errors: rc={retried.returncode}, re-ran {summary.get('episodes_this_run')}, "
            f"{summary.get('errors')} errors left",
        )
        check_folder(out, 20, "llm")
        check(
            "sk-soak" not in "".join(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()),
            "llm: no key in the folder",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="taugym-soak-"))
    started = time.monotonic()
    default_runs(work, args.runs, random.Random(args.seed))
    llm_run(work)
    check(not any("Traceback" in o for o in outputs), f"no traceback in {len(outputs)} command outputs")
    print(f"{len(failures)} failed checks; {time.monotonic() - started:.0f}s; folders in {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
