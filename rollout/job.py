"""The rollout job: Ray actors play work items; the driver streams results to Parquet.

* Each :class:`RolloutWorker` actor holds its own envs (one per concurrent
  episode slot and domain) and its agent; the driver hands out work items
  (domain, task id, trial, seed) as slots free up.
* The driver is the only writer: a result is written once, when its episode
  finished; an actor that dies takes only unwritten work with it, which is
  re-queued on a fresh actor (up to ``max_attempts_per_episode``), so the
  dataset ends with exactly one row per (domain, task, trial).
* ``resume=True`` skips every (domain, task, trial) already in the dataset.
* Local Ray by default; an existing cluster when ``address`` or
  ``RAY_ADDRESS`` names one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Optional

import ray

import taugym

from rollout.config import RolloutConfig
from rollout.dataset import ParquetEpisodeWriter, completed_keys, episode_row_from_info
from rollout.episode import WorkItem, episode_id, error_info, item_seed
from rollout.rate_limit import start_rate_limit_service
from rollout.summary import summarize

_log = logging.getLogger("rollout")


@ray.remote
class RolloutWorker:
    """A Ray actor that holds envs and an agent and plays work items."""

    def __init__(self, config: dict, run_id: str, rate_service):
        from taugym.llm import install_rate_limiter_factory

        from rollout.rate_limit import cluster_rate_limiter_factory

        self.config = RolloutConfig.from_dict(config)
        self.run_id = run_id
        self.free_envs: dict[str, list] = {}
        install_rate_limiter_factory(cluster_rate_limiter_factory(rate_service))  # one budget per job
        for domain in self.config.domains:  # load backends and envs now, not in the first episode
            self.free_envs[domain] = [self._env(domain) for _ in range(self.config.episodes_per_actor)]

    def pid(self) -> int:
        return os.getpid()

    def rss_bytes(self) -> int:
        """This actor's resident memory (for the memory benchmark)."""
        import psutil

        return psutil.Process().memory_info().rss

    def _env(self, domain: str):
        from taugym import TauEnv

        pool = self.free_envs.setdefault(domain, [])
        return pool.pop() if pool else TauEnv(self.config.env_config(domain))

    async def run(self, item: dict) -> dict:
        from taugym.agents import make_agent

        from rollout.episode import play_episode

        work = WorkItem(**item)
        env = self._env(work.domain)
        options = self.config.agent_options()
        name = self.config.agent["name"]
        if name == "random":
            options.setdefault("seed", work.seed)
        agent = make_agent(name, **options)
        try:
            return await play_episode(
                env, agent, work, run_id=self.run_id, agent_name=name, agent_model=options.get("model")
            )
        finally:
            self.free_envs[work.domain].append(env)


def work_items(config: RolloutConfig) -> list[WorkItem]:
    """Every (domain, task, trial) the config asks for, in a stable order."""
    from taugym.backends import get_backend

    items = []
    for domain in config.domains:
        env_config = config.env_config(domain)
        loaded = get_backend(env_config.backend).load_domain(domain)
        split = loaded.default_split if config.tasks is None else config.tasks
        if split == "all":
            task_ids = [t.task_id for t in loaded.tasks]
        elif isinstance(split, str):
            if split not in loaded.splits:
                raise ValueError(f"tasks: {split!r} is not a split of {domain}; valid: {sorted(loaded.splits)} or 'all'")
            task_ids = [loaded.tasks[i].task_id for i in loaded.splits[split]]
        else:
            valid = {t.task_id for t in loaded.tasks}
            task_ids = [t for t in config.tasks if t.startswith(f"{domain}-")]
            unknown = [t for t in task_ids if t not in valid]
            if unknown:
                raise ValueError(f"unknown task ids {unknown}; valid: {domain}-000 … {domain}-{len(loaded.tasks) - 1:03d}")
        for task_id in task_ids:
            for trial in range(config.trials):
                items.append(WorkItem(domain, task_id, trial, item_seed(config.seed, domain, task_id, trial)))
    return items


class RolloutJob:
    """The driver of one rollout run (see the module docstring)."""

    def __init__(self, config: RolloutConfig, out: Optional[str] = None, resume: bool = False,
                 address: Optional[str] = None, progress: bool = True):
        self.config = config
        self.out = Path(out or config.out)
        self.resume = resume
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.progress = progress
        self.actors: list = []
        self.actor_pids: list[int] = []
        self.written = 0
        self.errors = 0
        self.replaced_actors = 0

    def _run_id(self) -> str:
        marker = self.out / "run.json"
        if self.resume and marker.exists():
            return json.loads(marker.read_text())["run_id"]
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run_id": run_id}))
        os.replace(tmp, marker)
        return run_id

    def _start_ray(self) -> None:
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            needed = self.config.actors * max(self.config.cpus_per_actor, 0)
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)), include_dashboard=False,
                     log_to_driver=False)

    def _new_actor(self, run_id: str):
        return RolloutWorker.options(
            num_cpus=self.config.cpus_per_actor,
            max_concurrency=self.config.episodes_per_actor,
            max_restarts=0,
        ).remote(self.config.__dict__, run_id, self.rate_service)

    def run(self, on_result: Optional[Callable[["RolloutJob", dict], None]] = None) -> dict:
        """Run every remaining work item; write the datasets and ``summary.json``; return the summary."""
        items = work_items(self.config)
        done = completed_keys(self.out) if self.resume else set()
        if not self.resume and (self.out / "episodes").exists() and completed_keys(self.out):
            raise ValueError(f"{self.out} already holds a dataset; pass --resume to complete it or choose another --out")
        queue = deque(item for item in items if item.key not in done)
        run_id = self._run_id()
        self._start_ray()
        self.rate_service = start_rate_limit_service(run_id)
        self.actors = [self._new_actor(run_id) for _ in range(self.config.actors)]
        self.actor_pids = ray.get([actor.pid.remote() for actor in self.actors])
        slots = self.config.episodes_per_actor
        pending: dict = {}
        load = {i: 0 for i in range(len(self.actors))}
        attempts: dict[tuple, int] = {}
        bar = _progress_bar(len(queue), self.progress)
        started = time.monotonic()
        with ParquetEpisodeWriter(self.out, run_id, writer_id=uuid.uuid4().hex[:6],
                                  max_rows_per_file=self.config.rows_per_file) as writer:
            while queue or pending:
                for index in range(len(self.actors)):
                    while queue and load[index] < slots:
                        item = queue.popleft()
                        ref = self.actors[index].run.remote(item.to_dict())
                        pending[ref] = (item, index)
                        load[index] += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    item, index = pending.pop(ref)
                    load[index] -= 1
                    try:
                        result = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                            ray.exceptions.ActorUnavailableError) as exc:
                        attempts[item.key] = attempts.get(item.key, 0) + 1
                        self._replace_actor(index, run_id)
                        if attempts[item.key] < self.config.max_attempts_per_episode:
                            queue.appendleft(item)
                            continue
                        result = self._lost_item(item, run_id, exc)
                    writer.write(result["episode"], result["steps"])
                    self.written += 1
                    self.errors += bool(result["episode"]["error"])
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(errors=self.errors, refresh=False)
                    if on_result is not None:
                        on_result(self, result)
        if bar is not None:
            bar.close()
        for actor in self.actors:
            ray.kill(actor)
        ray.kill(self.rate_service)
        summary = summarize(self.out)
        summary.update(run_id=run_id, wall_s=time.monotonic() - started, episodes_this_run=self.written,
                       replaced_actors=self.replaced_actors)
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, self.out / "summary.json")
        return summary

    def _replace_actor(self, index: int, run_id: str) -> None:
        """Swap a dead actor for a fresh one (once, however many of its calls fail)."""
        actor = self.actors[index]
        try:
            ray.get(actor.pid.remote(), timeout=10)
            return  # still alive: only the call failed
        except Exception:
            pass
        ray.kill(actor, no_restart=True)
        self.actors[index] = self._new_actor(run_id)
        self.actor_pids[index] = ray.get(self.actors[index].pid.remote())
        self.replaced_actors += 1
        _log.warning("actor %d died; replaced it and re-queued its episodes", index)

    def _lost_item(self, item: WorkItem, run_id: str, exc: Exception) -> dict:
        """The error row of a work item whose actor died every time it ran it."""
        cause = {"source": "actor", "type": type(exc).__name__,
                 "message": f"the actor died {self.config.max_attempts_per_episode} times running this episode"}
        info = {**error_info(self.config.env.get("backend", "tau2"), item, []), "termination": "error", "error": cause}
        row = episode_row_from_info(
            info, run_id=run_id, trial=item.trial, seed=item.seed, agent=self.config.agent["name"],
            agent_model=self.config.agent.get("model"), user_model=None,
            user_strategy=self.config.env.get("user_strategy", "llm"), duration_s=0.0, reward=None,
            terminated=True, truncated=False, num_steps=0, taugym_version=taugym.__version__, llm_usage={},
            episode_id=episode_id(run_id, item),
        )
        return {"episode": row, "steps": []}


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="episodes", unit="ep", file=sys.stderr, dynamic_ncols=True)
