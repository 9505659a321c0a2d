"""The rollout job: Ray actors play work items; the driver streams results to Parquet.

* Each :class:`RolloutWorker` actor holds its own envs (one per concurrent
  episode slot and domain) and its agent; the driver hands out work items
  (domain, task id, trial, seed) as slots free up, spread over the
  cluster's nodes (local Ray unless ``address`` or ``RAY_ADDRESS`` names one),
  the least loaded actor first; ``ramp_s`` spreads the first round's starts.
* The driver is the only writer, and writes only results that come back.
  An actor checks its episode's rows and converts them to Arrow
  (:func:`~rollout.dataset.episode_tables`, most of a write's cost), so the
  driver only holds the tables and writes files:
  Ray restarts a dead actor (``max_restarts``), also on another node, and
  re-runs its unanswered calls (``max_task_retries``) up to
  ``max_attempts_per_episode`` times, after which the episode is an error
  row. So the dataset ends with exactly one row per (domain, task, trial).
* The run owns its output (:class:`~rollout.store.OutputLease`). Before any
  actor starts, LLM keys and endpoints are checked and ``DIR/run.json``
  records what defines the results; a resume that changes it is refused
  (:mod:`rollout.preflight`).
* ``resume=True`` skips every (domain, task, trial) already in the dataset;
  ``retry_errors=True`` also re-runs those whose row is an error row, and
  each new row supersedes its error row in the commit that publishes it.
* ``max_cost_usd`` (the whole dataset's LLM cost): once reached, no more
  episodes start; the summary says ``stopped``, and a resume with a higher
  cap goes on.
* ``out`` is a local folder or a URI any pyarrow or fsspec filesystem knows
  (``s3://bucket/prefix``, ``gs://…``): the same publishing protocol on it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

import ray
from tqdm import tqdm

import taugym
from rollout.config import RolloutConfig
from rollout.dataset import (
    ParquetEpisodeWriter,
    completed_keys,
    episode_row_from_info,
    episode_tables,
    error_rows,
    read_episodes,
)
from rollout.episode import WorkItem, episode_id, error_info, item_seed, play_episode
from rollout.preflight import check_llm_access, record_differences, results_record
from rollout.rate_limit import cluster_rate_limiter_factory, start_rate_limit_service
from rollout.store import OutputLease, Store, is_uri
from rollout.summary import dataset_card, summarize
from taugym import TauEnv
from taugym.agents import make_agent
from taugym.backends import get_backend
from taugym.llm import install_rate_limiter_factory

_log = logging.getLogger("rollout")


@ray.remote
class RolloutWorker:
    """A Ray actor that holds envs and an agent and plays work items."""

    def __init__(self, config: dict, run_id: str, rate_service):
        self.config = RolloutConfig.from_dict(config)
        self.run_id = run_id
        self.free_envs: dict[str, list] = {}
        install_rate_limiter_factory(cluster_rate_limiter_factory(rate_service))  # one budget per job
        for domain in self.config.domains:  # load backends and envs now, not in the first episode
            self.free_envs[domain] = [self._env(domain) for _ in range(self.config.episodes_per_actor)]

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on (hex id)."""
        return ray.get_runtime_context().get_node_id()

    def rss_bytes(self) -> int:
        """This actor's resident memory (for the memory benchmark)."""
        import psutil

        return psutil.Process().memory_info().rss

    def _env(self, domain: str):
        pool = self.free_envs.setdefault(domain, [])
        return pool.pop() if pool else TauEnv(self.config.env_config(domain))

    async def run(self, item: dict, retry: bool = False) -> dict:
        work = WorkItem(**item)
        env = self._env(work.domain)
        options = self.config.agent_options()
        name = self.config.agent["name"]
        agent = make_agent(name, episode_seed=work.seed, **options)
        try:
            result = await play_episode(
                env, agent, work, run_id=self.run_id, agent_name=name, agent_model=options.get("model"), retry=retry
            )
        finally:
            self.free_envs[work.domain].append(env)
        return stored_result(self.config, work, self.run_id, result, retry)


#: The episode columns a result carries beside its tables: what the driver counts and callers of ``on_result`` read.
RESULT_COLUMNS = (
    "episode_id",
    "domain",
    "task_id",
    "trial",
    "reward",
    "error",
    "error_cause",
    "termination",
    "num_steps",
    "cost_usd",
)


def stored_result(config: RolloutConfig, item: WorkItem, run_id: str, result: dict, retry: bool) -> dict:
    """A played episode as it goes to the writer: ``{"episode": its RESULT_COLUMNS, "tables": (episodes, steps)}``.

    The rows are checked and converted where the episode was played (the
    costly part of a write). Rows that cannot be stored become an error row
    saying why, not a stopped job.
    """
    try:
        tables = episode_tables(result["episode"], result["steps"])
    except (ValueError, UnicodeError) as exc:
        result = lost_episode(config, item, run_id, exc, unstorable(exc), retry)
        tables = episode_tables(result["episode"], result["steps"])
    return {"episode": {name: result["episode"][name] for name in RESULT_COLUMNS}, "tables": tables}


def unstorable(exc: Exception) -> str:
    """The error cause of an episode whose rows could not be stored."""
    return f"the episode's rows could not be stored: {exc}"[:2000]


def lost_episode(config: RolloutConfig, item: WorkItem, run_id: str, exc: Exception, message: str, retry: bool) -> dict:
    """The error row (no steps) of a work item whose actor died every time it ran it, or whose rows were unstorable."""
    cause = {"source": "actor", "type": type(exc).__name__, "message": message}
    info = {**error_info(config.env.get("backend", "tau2"), item, []), "termination": "error", "error": cause}
    row = episode_row_from_info(
        info,
        run_id=run_id,
        trial=item.trial,
        seed=item.seed,
        agent=config.agent["name"],
        agent_model=config.agent.get("model"),
        user_model=None,
        user_strategy=config.env.get("user_strategy", "llm"),
        duration_s=0.0,
        reward=None,
        terminated=True,
        truncated=False,
        num_steps=0,
        taugym_version=taugym.__version__,
        llm_usage={},
        episode_id=episode_id(run_id, item, retry=retry),
    )
    return {"episode": row, "steps": []}


def work_items(config: RolloutConfig) -> list[WorkItem]:
    """Every (domain, task, trial) the config asks for, in a stable order."""
    _refuse_repeats("domains", config.domains, "list each domain once")
    if isinstance(config.tasks, list):
        _refuse_repeats("tasks", config.tasks, "list each task once; trials: N runs every task N times")
    items = []
    for domain in config.domains:
        loaded = get_backend(config.env_config(domain).backend).load_domain(domain)
        for task_id in config.task_ids(loaded):
            for trial in range(config.trials):
                items.append(WorkItem(domain, task_id, trial, item_seed(config.seed, domain, task_id, trial)))
    return items


def _refuse_repeats(option: str, values: list, hint: str) -> None:
    """Two equal entries would give two rows with the same (domain, task, trial)."""
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{option} names {', '.join(repeated)} more than once; {hint}")


class RolloutJob:
    """The driver of one rollout run (see the module docstring)."""

    def __init__(
        self,
        config: RolloutConfig,
        out: str | None = None,
        resume: bool = False,
        address: str | None = None,
        progress: bool = True,
        retry_errors: bool = False,
    ):
        self.config = config
        self.out = output_location(out or config.out)
        self.resume = resume or retry_errors
        self.retry_errors = retry_errors
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.progress = progress
        self.actors: list = []
        self.actor_pids: list[int] = []
        self.written = 0
        self.errors = 0
        self.restarted_actors = 0
        self.spent_usd = 0.0
        self.stopped: str | None = None

    def _run_id(self, store: Store) -> str:
        """The run id: a new one, or on resume the recorded one, after checking the config did not change."""
        record = results_record(self.config)
        marker = store.get("run.json") if self.resume else None
        if marker is not None:
            recorded = json.loads(marker)
            if "results" not in recorded:
                raise ValueError(
                    f"{self.out}/run.json has no record of the config that made it (an older TauGym); "
                    "choose another --out"
                )
            differences = record_differences(recorded["results"], json.loads(json.dumps(record)))
            if differences:
                raise ValueError(
                    f"--resume with a config that changes the results of {self.out}: {'; '.join(differences)}. "
                    "Resume with the config it was made with, or write to another --out"
                )
            return recorded["run_id"]
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        store.put("run.json", json.dumps({"run_id": run_id, "results": record}, indent=2).encode())
        return run_id

    def _start_ray(self) -> None:
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            needed = self.config.actors * max(self.config.cpus_per_actor, 0)
            ray.init(
                address="local",
                num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)),
                include_dashboard=False,
                log_to_driver=False,
            )

    def _new_actor(self, run_id: str, items: int):
        # Ray restarts a dead actor and re-runs its unfinished calls; each call at most
        # max_attempts_per_episode times, so restarts are bounded by the work too.
        attempts = self.config.max_attempts_per_episode
        return RolloutWorker.options(
            num_cpus=self.config.cpus_per_actor,
            scheduling_strategy="SPREAD",  # over the nodes: a node lost takes as few episodes as it can
            max_concurrency=self.config.episodes_per_actor,
            max_restarts=max(1, attempts * items),
            max_task_retries=attempts - 1,
        ).remote(self.config.__dict__, run_id, self.rate_service)

    def run(self, on_result: Callable[[RolloutJob, dict], None] | None = None) -> dict:
        """Run every remaining work item; write the datasets and ``summary.json``; return the summary.

        Raises ``ValueError`` (saying what to do) before any work starts when
        another run owns ``out``, the folder holds a dataset and ``resume``
        is off, a resume changes what defines the results, or an LLM's key
        is missing or its endpoint unreachable.
        """
        items = work_items(self.config)
        store = Store(self.out)
        with OutputLease(store) as lease:
            return self._run(items, store, lease, on_result)

    def _run(self, items: list[WorkItem], store: Store, lease: OutputLease, on_result) -> dict:
        done = completed_keys(self.out)
        if not self.resume and done:
            raise ValueError(
                f"{self.out} already holds a dataset; pass --resume to complete it or choose another --out"
            )
        errors = error_rows(self.out) if self.retry_errors else {}
        queue = deque(item for item in items if item.key not in done or item.key in errors)
        check_llm_access(self.config)
        run_id = self._run_id(store)
        self.spent_usd = sum(read_episodes(self.out, columns=["cost_usd"])["cost_usd"].to_pylist())
        if queue:  # a resume of a finished dataset has nothing to play: no Ray, no actors
            self._start_ray()
            self.rate_service = start_rate_limit_service(run_id)
            self.actors = [self._new_actor(run_id, len(queue)) for _ in range(self.config.actors)]
            self.actor_pids = ray.get([actor.pid.remote() for actor in self.actors])
        slots = self.config.episodes_per_actor
        pending: dict = {}
        load = {i: 0 for i in range(len(self.actors))}
        written: set = set()
        node_losses: dict = {}
        bar = tqdm(
            total=len(queue), desc="episodes", unit="ep", file=sys.stderr, dynamic_ncols=True, disable=not self.progress
        )
        started = time.monotonic()
        with ParquetEpisodeWriter(
            self.out, run_id, writer_id=uuid.uuid4().hex[:6], lease=lease, max_rows_per_file=self.config.rows_per_file
        ) as writer:
            self.started, ramp_started = 0, time.monotonic()  # this run's starts, which the ramp paces
            ramping = self._hand_out(queue, pending, load, slots, ramp_started)
            while queue or pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.05 if ramping else 1.0)
                if ready and len(pending) > 1:  # and every other one done by now: one pass over thousands in flight
                    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                results = []
                for ref in ready:
                    item, index = pending.pop(ref)
                    load[index] -= 1
                    try:
                        result = ray.get(ref)
                    except (
                        ray.exceptions.RayActorError,
                        ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ActorUnavailableError,
                    ) as exc:
                        if _node_lost(exc) and node_losses.get(item.key, 0) < self.config.max_attempts_per_episode:
                            # Ray spent its retries while a dead node was not yet known to be dead: not the
                            # episode's fault; run it again (bounded), on the actor Ray restarts elsewhere
                            node_losses[item.key] = node_losses.get(item.key, 0) + 1
                            queue.appendleft(item)
                            continue
                        result = self._lost_item(item, run_id, exc)  # Ray's retries are spent
                    if item.key in written:  # never twice, whatever went wrong upstream
                        raise RuntimeError(f"episode {item.key} came back twice; nothing more is written")
                    written.add(item.key)
                    self.spent_usd += result["episode"]["cost_usd"]
                    results.append((item, result))
                # the freed slots play again while the results are written
                ramping = self._hand_out(queue, pending, load, slots, ramp_started)
                for item, result in results:
                    self._write(writer, result, item, run_id, errors.get(item.key))
                    bar.update(1)
                    bar.set_postfix(errors=self.errors, refresh=False)
                    if on_result is not None:
                        on_result(self, result)
                writer.publish_due()  # the age limit holds while episodes are slow to finish
        bar.close()
        if self.actors:
            pids = ray.get([actor.pid.remote() for actor in self.actors])
            self.restarted_actors = sum(a != b for a, b in zip(pids, self.actor_pids))
            for actor in self.actors:
                ray.kill(actor)
            ray.kill(self.rate_service)
        summary = summarize(self.out)
        summary.update(
            run_id=run_id,
            wall_s=time.monotonic() - started,
            episodes_this_run=self.written,
            restarted_actors=self.restarted_actors,
            cost_usd=self.spent_usd,
        )
        if self.stopped:
            summary["stopped"] = self.stopped
        store.put("summary.json", json.dumps(summary, indent=2).encode())
        store.put("README.md", dataset_card(results_record(self.config), summary, run_id).encode())
        return summary

    def _hand_out(self, queue: deque, pending: dict, load: dict, slots: int, ramp_started: float) -> bool:
        """Give queued work items to the least loaded actors with a free slot; none once ``max_cost_usd`` is spent.

        Within ``ramp_s`` of ``ramp_started``, the k-th of the first
        ``actors × slots`` starts no earlier than ``(k - 1) / (actors × slots)``
        of the ramp. Returns whether the ramp still holds work back.
        """
        if self.config.max_cost_usd is not None and self.spent_usd >= self.config.max_cost_usd:
            if queue:
                self.stopped = (
                    f"max_cost_usd reached: ${self.spent_usd:.4f} spent of ${self.config.max_cost_usd}; "
                    f"{len(queue)} episode(s) not started"
                )
            queue.clear()
        slots_in_all = len(self.actors) * slots
        elapsed = time.monotonic() - ramp_started
        ramping = elapsed < self.config.ramp_s
        may_start = 1 + int(slots_in_all * elapsed / self.config.ramp_s) if ramping else float("inf")
        while queue and len(pending) < slots_in_all and self.started < may_start:
            index = min(load, key=load.get)
            item = queue.popleft()
            pending[self.actors[index].run.remote(item.to_dict(), self.retry_errors)] = (item, index)
            load[index] += 1
            self.started += 1
        return ramping and bool(queue)

    def _write(
        self, writer: ParquetEpisodeWriter, result: dict, item: WorkItem, run_id: str, supersedes: str | None
    ) -> None:
        """Write one result; tables the writer refuses become an error row saying why, not a stopped job."""
        try:
            writer.write_tables(*result["tables"], supersedes=supersedes)
        except ValueError as exc:  # e.g. an actor of another TauGym version
            result = self._lost_item(item, run_id, exc, unstorable(exc))
            writer.write_tables(*result["tables"], supersedes=supersedes)
        self.written += 1
        self.errors += bool(result["episode"]["error"])

    def _lost_item(self, item: WorkItem, run_id: str, exc: Exception, message: str | None = None) -> dict:
        """The result of a work item whose actor died every time it ran it (or whose rows could not be stored)."""
        message = message or f"the actor died {self.config.max_attempts_per_episode} times running this episode"
        lost = lost_episode(self.config, item, run_id, exc, message, self.retry_errors)
        return stored_result(self.config, item, run_id, lost, self.retry_errors)


def _node_lost(exc: Exception) -> bool:
    """Whether an actor call failed because the actor's node went away (not because the episode crashed it)."""
    message = str(exc).lower()
    return isinstance(exc, ray.exceptions.ActorUnavailableError) or "node has died" in message or "node died" in message


def output_location(out: str | os.PathLike) -> Path | str:
    """A local ``--out`` as a Path; a URI (``s3://bucket/prefix``, ``gs://…``) as given, read through its filesystem."""
    return str(out).rstrip("/") if is_uri(out) else Path(out)
