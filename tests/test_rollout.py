"""The rollout job: every episode lands exactly once, through actor deaths, driver kills and provider outages."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from rollout.cli import main
from rollout.config import RolloutConfig
from rollout.dataset import ParquetEpisodeWriter, completed_keys, read_episodes, read_steps
from rollout.episode import WorkItem
from rollout.job import RolloutJob, stored_result, work_items

try:
    from fake_llm_server import FakeLLMServer, Reply, fake_llm_server
    from test_dataset import oracle_episode
    from test_llm_env import FAKE_KEY, scripted_conversation
except ImportError:  # pragma: no cover
    from tests.fake_llm_server import FakeLLMServer, Reply, fake_llm_server  # type: ignore
    from tests.test_dataset import oracle_episode  # type: ignore
    from tests.test_llm_env import FAKE_KEY, scripted_conversation  # type: ignore

__all__ = ["fake_llm_server", "oracle_episode"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ["OPENAI_API_KEY"] = FAKE_KEY  # the actors inherit it; the fake server ignores it
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def oracle_config(**changes) -> RolloutConfig:
    values = dict(
        domains=["retail", "airline"],
        tasks=["retail-000", "retail-001", "retail-002", "airline-000", "airline-001"],
        trials=2,
        agent={"name": "oracle"},
        env={"user_strategy": "scripted"},
        actors=2,
        cpus_per_actor=0.5,
    )
    values.update(changes)
    return RolloutConfig.from_dict(values)


ONE_TASK = {"domains": ["retail"], "tasks": ["retail-000"], "trials": 1}
"""One retail episode: the actors load no other domain."""


def llm_config(server: FakeLLMServer, tasks, **changes) -> RolloutConfig:
    return RolloutConfig.from_dict(llm_settings(server, tasks, **changes))


def llm_settings(server: FakeLLMServer, tasks, **changes) -> dict:
    """The LLM agent and the LLM user, both answered by ``server``."""
    values = dict(
        domains=["retail"],
        tasks=tasks,
        trials=1,
        actors=2,
        cpus_per_actor=0.5,
        episodes_per_actor=2,
        agent={
            "name": "llm",
            "model": "fake-agent",
            "provider": "openai",
            "base_url": server.base_url,
            "timeout_s": 2.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
        },
        env={
            "user_strategy": "llm",
            "user_model": "fake-user",
            "user_provider": "openai",
            "user_base_url": server.base_url,
            "llm_timeout_s": 2.0,
            "llm_backoff_initial_s": 0.05,
            "llm_backoff_max_s": 0.2,
        },
    )
    values.update(changes)
    return values


def keys_of(out: Path) -> list[tuple]:
    table = read_episodes(out).select(["domain", "task_id", "trial"])
    return list(zip(*(table[c].to_pylist() for c in ("domain", "task_id", "trial"))))


def test_rollout_writes_every_episode_once_with_steps_and_summary(tmp_path):
    results = []
    summary = RolloutJob(oracle_config(), out=str(tmp_path), progress=False).run(
        on_result=lambda job, result: results.append(result)
    )
    # the actors send checked Arrow tables: the driver, the job's one writer, converts nothing
    assert len(results) == 10 and all(isinstance(r["tables"][1], pa.Table) for r in results)
    keys = keys_of(tmp_path)
    assert len(keys) == len(set(keys)) == 10
    episodes = read_episodes(tmp_path)
    assert pc.all(pc.equal(episodes["reward"], 1.0)).as_py()
    steps = read_steps(tmp_path)
    assert steps.num_rows == sum(episodes["num_steps"].to_pylist())
    first = episodes.to_pylist()[0]
    assert first["messages"][0]["role"] == "system" and json.loads(first["tools"])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["episodes"] == 10 and written["errors"] == 0
    assert written["domains"]["retail"]["pass^k"] == {"1": 1.0, "2": 1.0}
    assert summary["domains"]["airline"]["mean_reward"] == 1.0
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == ["airline", "retail"]


def test_an_actor_killed_mid_episode_is_restarted_and_nothing_is_lost_or_doubled(tmp_path, fake_llm_server):
    fake_llm_server.set_handler(lambda request: scripted_conversation(request, delay_s=0.3))
    tasks = [f"retail-{i:03d}" for i in range(8)]
    job = RolloutJob(llm_config(fake_llm_server, tasks), out=str(tmp_path), progress=False)
    killed = []

    def kill_one_actor(job, result):
        if not killed:  # the other actor is mid-episode, waiting on the LLM
            os.kill(job.actor_pids[1], signal.SIGKILL)
            killed.append(job.actor_pids[1])

    summary = job.run(on_result=kill_one_actor)
    keys = keys_of(tmp_path)
    assert sorted(keys) == sorted(("retail", t, 0) for t in tasks)
    assert job.restarted_actors >= 1 and summary["errors"] == 0  # Ray restarted it and re-ran its episodes
    steps = read_steps(tmp_path)
    assert set(steps["episode_id"].to_pylist()) == set(read_episodes(tmp_path)["episode_id"].to_pylist())


def test_a_second_run_is_refused_while_a_driver_lives_and_a_killed_driver_resumes_at_once(tmp_path, fake_llm_server):
    tasks = [f"retail-{i:03d}" for i in range(7)]
    started = []
    held = threading.Event()

    def hold_from_the_sixth_episode(request):
        # 4 episodes published (rows_per_file=2), the 5th held unpublished by the writer, the 6th in flight
        messages = request.messages
        if "<scenario>" in (messages[0].get("content") or "") and not any(m["role"] == "assistant" for m in messages):
            started.append(request.t)  # the user simulator's first turn: an episode begins
        if len(started) > 5:
            held.set()
            return Reply.hang()
        return scripted_conversation(request)

    fake_llm_server.set_handler(hold_from_the_sixth_episode)
    settings = llm_settings(fake_llm_server, tasks, actors=1, cpus_per_actor=1, episodes_per_actor=1, rows_per_file=2)
    settings["env"]["llm_timeout_s"] = 120.0  # the held request lasts until the driver is killed
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(settings))
    work_items(RolloutConfig.from_yaml(config))  # the tasks loaded here now: the second run below starts at once
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rollout", "--config", str(config), "--out", str(out), "--no-progress"]
    driver = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (held.is_set() and len(completed_keys(out)) >= 4):
        time.sleep(0.2)
    assert driver.poll() is None, "the driver was to be killed mid-run"
    for resume in (False, True):  # a second run into the same --out, while the first is writing
        with pytest.raises(ValueError, match=r"another run is writing to .*pid \d+"):
            RolloutJob(RolloutConfig.from_yaml(config), out=str(out), resume=resume, progress=False).run()
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()
    before = completed_keys(out)
    assert 4 <= len(before) < 7, "the driver was to be killed mid-run"
    fake_llm_server.set_handler(scripted_conversation)  # the 6th episode, and the rest, now play
    # what --resume runs, here in the test process (its Ray is up): the killed driver's lease is taken over at once
    RolloutJob(RolloutConfig.from_yaml(config), out=str(out), resume=True, progress=False).run()
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == 7
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 7 and summary["errors"] == 0
    assert summary["episodes_this_run"] == 7 - len(before)
    assert len({e["run_id"] for e in read_episodes(out, columns=["run_id"]).to_pylist()}) == 1


def test_rate_limit_holds_for_the_whole_cluster(tmp_path, fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    tasks = [f"retail-{i:03d}" for i in range(4)]
    config = llm_config(fake_llm_server, tasks)
    config.env["llm_requests_per_minute"] = 600  # 10 per second for all actors together
    config.agent["requests_per_minute"] = 600
    summary = RolloutJob(config, out=str(tmp_path), progress=False).run()
    assert summary["errors"] == 0
    for model in ("fake-user", "fake-agent"):
        times = [r.t for r in fake_llm_server.requests if r.body["model"] == model]
        assert len(times) == 12
        assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 11
    episodes = read_episodes(tmp_path).to_pylist()
    assert all(e["llm_calls"] == 6 for e in episodes)  # user and agent accounting land in the dataset


def test_command_line_entry_points_and_bad_overrides(tmp_path):
    console = Path(sys.executable).with_name("taugym")
    for command in ([sys.executable, "-m", "rollout", "--help"], [str(console), "rollout", "--help"]):
        shown = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "--resume" in shown.stdout
    # the same parser, called in this process: no new interpreter per refusal
    for override, expected in (("actors", "key=value"), ("env.user_strategy=robot", "'llm', 'scripted'")):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as refused:
            sys.exit(main(["rollout", "--out", str(tmp_path), override]))
        assert refused.value.code == 2 and expected in stderr.getvalue()


def test_an_existing_dataset_is_never_overwritten_without_resume(tmp_path):
    RolloutJob(oracle_config(**ONE_TASK, actors=1), out=str(tmp_path), progress=False).run()
    with pytest.raises(ValueError, match="--resume"):
        RolloutJob(oracle_config(**ONE_TASK, actors=1), out=str(tmp_path), progress=False).run()
    resumed = RolloutJob(oracle_config(**ONE_TASK, actors=1), out=str(tmp_path), resume=True, progress=False)
    summary = resumed.run()
    assert summary["episodes"] == 1 and summary["episodes_this_run"] == 0
    assert resumed.actors == []  # nothing left to play: no actor was started for it


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "rollout").glob("*.yaml")))
def test_shipped_rollout_configs_are_valid(path):
    config = RolloutConfig.from_yaml(path)
    assert config.domains and config.agent["name"]


def test_unknown_agent_options_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="has no option"):
        oracle_config(agent={"name": "llm", "modle": "gpt-4o"})


def test_llm_agent_settings_default_to_the_envs_and_its_own_options_win():
    config = oracle_config(
        agent={"name": "llm", "model": "gpt-4o-mini", "timeout_s": 5.0},
        env={"user_strategy": "scripted", "llm_requests_per_minute": 500, "llm_max_attempts": 3, "llm_timeout_s": 9.0},
    )
    options = config.agent_options()
    assert (options["requests_per_minute"], options["max_attempts"], options["timeout_s"]) == (500, 3, 5.0)
    assert options["model"] == "gpt-4o-mini"


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"tasks": ["retail-000", "retail-001", "retail-000"]}, "retail-000"),
        ({"domains": ["retail", "retail"], "tasks": ["retail-000"]}, "retail"),
    ],
)
def test_duplicate_tasks_or_domains_in_a_config_are_refused(tmp_path, changes, named):
    with pytest.raises(ValueError, match=f"{named}.* more than once"):
        RolloutJob(oracle_config(**changes), out=str(tmp_path), progress=False).run()
    assert read_episodes(tmp_path).num_rows == 0


def test_an_unpaired_surrogate_from_a_model_never_stops_the_job(tmp_path, fake_llm_server):
    def with_surrogates(request):
        reply = scripted_conversation(request)
        if reply.text:
            reply.text += " \ud800"  # one half of a UTF-16 pair: not encodable as UTF-8
        else:
            reply.tool_calls[0]["function"]["arguments"] = json.dumps({"order_id": "#W2378156\ud800"})
        return reply

    fake_llm_server.set_handler(with_surrogates)
    summary = RolloutJob(
        llm_config(fake_llm_server, ["retail-000", "retail-001"], actors=1), out=str(tmp_path), progress=False
    ).run()
    episodes = read_episodes(tmp_path).to_pylist()
    assert len(episodes) == 2 and summary["errors"] == 0, [e["error_cause"] for e in episodes]
    texts = [m["content"] for e in episodes for m in e["messages"] if m["content"]]
    assert any(t.endswith("\ufffd") for t in texts)  # replaced by U+FFFD, the rest of the text kept
    assert read_steps(tmp_path).num_rows == sum(e["num_steps"] for e in episodes)


def test_rows_an_actor_cannot_store_become_an_error_row_and_the_writer_takes_only_checked_tables(
    tmp_path, oracle_episode
):
    config = oracle_config(**ONE_TASK)
    item = WorkItem("retail", "retail-000", 0, 7)
    episode, steps, _ = oracle_episode
    unstorable = {"episode": {**episode, "num_steps": episode["num_steps"] + 1}, "steps": steps}  # rows that disagree
    result = stored_result(config, item, "run1", unstorable, retry=False)
    assert result["episode"]["error"] and result["episode"]["num_steps"] == 0
    assert "could not be stored" in result["episode"]["error_cause"] and "num_steps" in result["episode"]["error_cause"]
    with ParquetEpisodeWriter(tmp_path / "out", "run1") as writer:
        writer.write_tables(*result["tables"])
        episodes, steps = result["tables"]
        with pytest.raises(ValueError, match="episode_tables"):  # tables not made by the checks
            writer.write_tables(episodes.replace_schema_metadata({}), steps)
        with pytest.raises(ValueError, match="one episode"):
            writer.write_tables(pa.concat_tables([episodes, episodes]), steps)
    assert read_episodes(tmp_path / "out")["error_cause"].to_pylist() == [result["episode"]["error_cause"]]


def test_resume_with_a_changed_config_is_refused_naming_the_difference(tmp_path):
    RolloutJob(oracle_config(**ONE_TASK), out=str(tmp_path), progress=False).run()
    for changes, named in (
        ({"agent": {"name": "random"}}, "agent.name"),
        ({"env": {"user_strategy": "scripted", "max_steps": 12}}, "env.max_steps"),
        ({"tasks": ["retail-000", "retail-001"]}, "tasks"),
        ({"trials": 2}, "trials"),
        ({"seed": 5}, "seed"),
    ):
        with pytest.raises(ValueError, match=rf"(?s){named}.*was .* now "):
            RolloutJob(
                oracle_config(**{**ONE_TASK, **changes}),
                out=str(tmp_path),
                resume=True,
                progress=False,
            ).run()
    assert "retail" in (tmp_path / "run.json").read_text()  # what defines the results is recorded in the folder
    # how it runs may change
    summary = RolloutJob(
        oracle_config(**ONE_TASK, actors=1, rows_per_file=3),
        out=str(tmp_path),
        resume=True,
        progress=False,
    ).run()
    assert summary["episodes"] == 1


def test_missing_credentials_or_an_unreachable_provider_are_refused_before_actors_start(
    tmp_path, fake_llm_server, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match=r"OPENAI_API_KEY"):
        RolloutJob(llm_config(fake_llm_server, ["retail-000"]), out=str(tmp_path), progress=False).run()
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    config = llm_config(fake_llm_server, ["retail-000"])
    config.agent["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens there
    with pytest.raises(ValueError, match=r"cannot reach .*127.0.0.1:9"):
        RolloutJob(config, out=str(tmp_path), progress=False).run()
    assert fake_llm_server.requests == [] and read_episodes(tmp_path).num_rows == 0


def test_a_provider_down_is_recorded_as_errors_not_dropped_and_retry_errors_replaces_them_exactly_once(
    tmp_path, fake_llm_server
):
    import pyarrow.dataset as ds

    fake_llm_server.set_handler(lambda request: Reply.server_error(503))  # down for good
    config = llm_config(fake_llm_server, ["retail-000", "retail-001"], actors=1)
    config.env["llm_max_attempts"] = 2
    summary = RolloutJob(config, out=str(tmp_path), progress=False).run()
    errors = read_episodes(tmp_path).to_pylist()
    assert [e["error"] for e in errors] == [True, True]
    assert all("LLMCallError" in e["error_cause"] and "2 attempt" in e["error_cause"] for e in errors)
    assert all(e["reward"] is None for e in errors)
    assert all(e["llm_calls"] >= 1 and e["llm_retries"] >= 1 for e in errors), errors  # the failed call is counted
    assert summary["errors"] == 2 and summary["domains"]["retail"]["errors"] == 2
    assert FAKE_KEY not in json.dumps(errors, default=str)

    fake_llm_server.set_handler(scripted_conversation)  # the provider is back
    summary = RolloutJob(config, out=str(tmp_path), resume=True, progress=False).run()
    assert summary["errors"] == 2 and summary["episodes_this_run"] == 0  # a plain resume keeps them
    summary = RolloutJob(config, out=str(tmp_path), resume=True, retry_errors=True, progress=False).run()
    assert summary["errors"] == 0 and summary["episodes"] == 2 and summary["episodes_this_run"] == 2
    for table in (
        read_episodes(tmp_path),
        ds.dataset(tmp_path / "episodes", format="parquet", partitioning=None).to_table(),
    ):
        rows = table.to_pylist()
        assert sorted((r["task_id"], r["error"]) for r in rows) == [("retail-000", False), ("retail-001", False)]
    steps = ds.dataset(tmp_path / "steps", format="parquet", partitioning=None).to_table()
    assert set(steps["episode_id"].to_pylist()) == set(read_episodes(tmp_path)["episode_id"].to_pylist())
    summary = RolloutJob(config, out=str(tmp_path), resume=True, retry_errors=True, progress=False).run()
    assert summary["episodes_this_run"] == 0 and summary["episodes"] == 2


def test_ramp_s_spreads_the_first_episodes_starts_and_every_episode_still_lands_once(tmp_path, fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    tasks = [f"retail-{i:03d}" for i in range(8)]
    config = llm_config(fake_llm_server, tasks, actors=2, episodes_per_actor=4, ramp_s=4.0)
    summary = RolloutJob(config, out=str(tmp_path), progress=False).run()
    assert summary["errors"] == 0 and sorted(keys_of(tmp_path)) == [("retail", t, 0) for t in tasks]
    first_calls = sorted(  # each episode's first user-simulator call: its start
        r.t
        for r in fake_llm_server.requests
        if "<scenario>" in (r.messages[0].get("content") or "")
        and not any(m["role"] == "assistant" for m in r.messages)
    )
    assert len(first_calls) == 8
    # the 8th slot may not start before 7/8 of the ramp; all at once they start within a fraction of a second
    assert first_calls[-1] - first_calls[0] >= 1.5


def test_max_cost_usd_stops_starting_episodes_and_a_resume_with_a_higher_cap_goes_on(tmp_path, fake_llm_server):
    fake_llm_server.set_handler(scripted_conversation)
    tasks = ["retail-000", "retail-001", "retail-002"]
    config = llm_config(fake_llm_server, tasks, actors=1, episodes_per_actor=1, max_cost_usd=1e-9)
    config.agent["model"] = config.env["user_model"] = "gpt-4o-mini"  # priced in litellm's cost map
    summary = RolloutJob(config, out=str(tmp_path), progress=False).run()
    assert "max_cost_usd" in summary["stopped"] and summary["episodes"] == 1 and summary["cost_usd"] > 0
    config.max_cost_usd = 100.0  # how the job runs may change on resume
    summary = RolloutJob(config, out=str(tmp_path), resume=True, progress=False).run()
    assert "stopped" not in summary and sorted(keys_of(tmp_path)) == [("retail", t, 0) for t in tasks]


def test_a_sampling_policy_gets_each_episodes_seed_unless_its_config_sets_one():
    from taugym.agents import OraclePolicy, RandomPolicy, make_agent

    def draws(policy: RandomPolicy) -> list[float]:
        return [policy.rng.random() for _ in range(3)]

    items = work_items(RolloutConfig.from_dict({"domains": ["retail"], "tasks": ["retail-001"], "trials": 2}))
    first, second = (make_agent("random", episode_seed=item.seed) for item in items)
    assert draws(first) == draws(RandomPolicy(seed=items[0].seed)) != draws(second)  # trials sample differently
    assert draws(make_agent("random", episode_seed=items[0].seed, seed=5)) == draws(RandomPolicy(seed=5))
    assert isinstance(make_agent("oracle", episode_seed=7), OraclePolicy)  # a policy without a seed gets none
