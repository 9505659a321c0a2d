"""The rollout job on a 3-node Ray cluster (Ray's own ``ray.cluster_utils.Cluster``: a head and two worker nodes
on loopback), losing a node mid-run: a worker node with actors on it, then the node of the cluster-wide limiter."""

from __future__ import annotations

import os
import threading

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import rollout.job
from rollout.dataset import read_episodes, read_steps
from rollout.job import RolloutJob
from rollout.rate_limit import start_rate_limit_service

try:
    from fake_llm_server import fake_llm_server
    from test_llm_env import FAKE_KEY, scripted_conversation
    from test_rollout import keys_of, llm_config
except ImportError:  # pragma: no cover
    from tests.fake_llm_server import fake_llm_server  # type: ignore
    from tests.test_llm_env import FAKE_KEY, scripted_conversation  # type: ignore
    from tests.test_rollout import keys_of, llm_config  # type: ignore

__all__ = ["fake_llm_server"]

NO_HANG_S = 240  # a run that has not ended by then hangs


@pytest.fixture(scope="module")
def cluster():
    """Head + 2 workers of 1 CPU each; node deaths detected within about 3 seconds."""
    os.environ["OPENAI_API_KEY"] = FAKE_KEY  # the actors inherit it; the fake server ignores it
    nodes = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    for _ in range(2):
        nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def _run_in_thread(job: RolloutJob, on_result) -> dict:
    """Run the job; fail (instead of hanging the suite) when it does not end in NO_HANG_S."""
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = job.run(on_result=on_result)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(NO_HANG_S)
    assert not thread.is_alive(), f"the job hung: no end within {NO_HANG_S}s of losing a node"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]


def _node_of(cluster: Cluster, node_id: str):
    return next(node for node in cluster.worker_nodes if node.node_id == node_id)


def test_a_worker_node_lost_mid_run_loses_no_episode_and_doubles_none(tmp_path, cluster, fake_llm_server):
    fake_llm_server.set_handler(lambda request: scripted_conversation(request, delay_s=0.2))
    tasks = [f"retail-{i:03d}" for i in range(9)]
    job = RolloutJob(llm_config(fake_llm_server, tasks, actors=3), out=str(tmp_path), progress=False)
    removed = []

    def remove_a_worker_node_with_an_actor(job, result):
        if removed:
            return
        on_workers = {node.node_id for node in cluster.worker_nodes}
        homes = [h for h in ray.get([actor.node_id.remote() for actor in job.actors]) if h in on_workers]
        assert len(set(ray.get([actor.node_id.remote() for actor in job.actors]))) == 3  # spread over the nodes
        cluster.remove_node(_node_of(cluster, homes[0]), allow_graceful=False)  # mid-episode on it
        removed.append(homes[0])

    summary = _run_in_thread(job, remove_a_worker_node_with_an_actor)
    cluster.add_node(num_cpus=1)  # back to 3 nodes for the next test
    cluster.wait_for_nodes()
    assert removed
    keys = keys_of(tmp_path)
    assert sorted(keys) == sorted(("retail", t, 0) for t in tasks)  # every one, once
    causes = [e["error_cause"] for e in read_episodes(tmp_path, columns=["error_cause"]).to_pylist()]
    assert summary["errors"] == 0, [c for c in causes if c]
    assert job.restarted_actors >= 1  # its actor came back elsewhere and re-ran its episodes
    steps = read_steps(tmp_path)
    assert set(steps["episode_id"].to_pylist()) == set(read_episodes(tmp_path)["episode_id"].to_pylist())
    step_keys = list(zip(steps["episode_id"].to_pylist(), steps["step_index"].to_pylist()))
    assert len(step_keys) == len(set(step_keys))


def test_the_limiter_restarted_after_its_node_died_never_lets_the_cluster_exceed_its_rate(
    tmp_path, cluster, fake_llm_server, monkeypatch
):
    fake_llm_server.set_handler(scripted_conversation)
    limiter_node = sorted(cluster.worker_nodes, key=lambda n: n.node_id)[0]
    services = []

    def on_a_worker_node(suffix: str):  # the job's own limiter, placed where the test can remove its node
        strategy = NodeAffinitySchedulingStrategy(limiter_node.node_id, soft=True)  # soft: Ray may move it
        services.append(start_rate_limit_service(suffix, scheduling_strategy=strategy))
        return services[-1]

    monkeypatch.setattr(rollout.job, "start_rate_limit_service", on_a_worker_node)
    tasks = [f"retail-{i:03d}" for i in range(12)]
    config = llm_config(fake_llm_server, tasks, actors=3)
    config.env["llm_requests_per_minute"] = 600  # 10 per second per model, for all actors together
    config.agent["requests_per_minute"] = 600
    job = RolloutJob(config, out=str(tmp_path), progress=False)
    events: dict = {}

    def remove_the_limiters_node(job, result):
        if "removed" not in events:
            cluster.remove_node(limiter_node, allow_graceful=False)
            events["removed"] = True
        elif "restarted_on" not in events:  # until the node's death is noticed, the old one may still answer
            node = ray.get(services[0].node_id.remote(), timeout=60)
            if node != limiter_node.node_id:
                events["restarted_on"] = node

    summary = _run_in_thread(job, remove_the_limiters_node)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    assert "restarted_on" in events  # Ray restarted the limiter on another node after its node died
    causes = [e["error_cause"] for e in read_episodes(tmp_path, columns=["error_cause"]).to_pylist()]
    assert summary["errors"] == 0, [c for c in causes if c]
    assert sorted(keys_of(tmp_path)) == sorted(("retail", t, 0) for t in tasks)
    burst, per_second = 1, 10
    for model in ("fake-user", "fake-agent"):
        times = sorted(r.t for r in fake_llm_server.requests if r.body["model"] == model)
        assert len(times) >= 3 * len(tasks)  # more where an episode cut off by the node's death ran again
        busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        assert busiest <= per_second + burst, f"{model}: {busiest} requests in one second"
