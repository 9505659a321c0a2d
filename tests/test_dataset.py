"""The rollout dataset: what users of DIR/episodes and DIR/steps rely on.

Rows (messages with tool calls included) come back unchanged through
pyarrow, pandas and Ray Data; files are partitioned by domain; files are
published at a row count or an age; files appear only complete; a crash never
leaves an episode row without its steps; bad rows are refused with the column named.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from rollout.dataset import (
    EPISODE_SCHEMA,
    RLLIB_INPUT_READ_SCHEMA,
    STEP_SCHEMA,
    ParquetEpisodeWriter,
    completed_keys,
    episode_row_from_info,
    read_episodes,
    read_steps,
    step_row,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers
def make_episode(i: int, domain: str = "retail", trial: int = 0, steps: int = 2, run_id: str = "run1"):
    """A synthetic finished episode: (episode row, step rows)."""
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": f"#W{i}"})},
    }
    row = {
        "run_id": run_id,
        "episode_id": f"{run_id}:{domain}-{i:03d}:{trial}:x",
        "backend": "tau2",
        "domain": domain,
        "task_id": f"{domain}-{i:03d}",
        "trial": trial,
        "seed": 1000 + i,
        "agent": "oracle",
        "agent_model": None,
        "user_model": "gpt-4o" if i % 2 else None,
        "user_strategy": "scripted",
        "reward": float(i % 2),
        "reward_breakdown": json.dumps({"reward": float(i % 2), "db_check": {"db_match": bool(i % 2)}}),
        "terminated": True,
        "truncated": False,
        "error": False,
        "error_cause": None,
        "termination": "agent",
        "num_steps": steps,
        "messages": [
            {
                "role": "system",
                "content": "You are a support agent.",
                "tool_calls": None,
                "tool_call_id": None,
                "name": None,
            },
            {
                "role": "user",
                "content": f"Where is order #W{i}? ünïcode ✓",
                "tool_calls": None,
                "tool_call_id": None,
                "name": None,
            },
            {"role": "assistant", "content": None, "tool_calls": [call], "tool_call_id": None, "name": None},
            {
                "role": "tool",
                "content": '{"status": "delivered"}',
                "tool_calls": None,
                "tool_call_id": f"call_{i}",
                "name": "get_order_details",
            },
        ],
        "tools": json.dumps(
            [{"type": "function", "function": {"name": "get_order_details", "parameters": {"type": "object"}}}]
        ),
        "llm_calls": 3,
        "llm_retries": 1,
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "cost_usd": 0.002,
        "duration_s": 1.5,
        "taugym_version": "0.1.0",
        "source_format": None,
        "source_file": None,
        "source_position": None,
    }
    step_rows = [
        step_row(
            row,
            step_index=k,
            observation=f"obs {k}",
            action=f"act {k}",
            reward=0.0 if k < steps - 1 else row["reward"],
            next_observation=f"obs {k + 1}",
            terminated=k == steps - 1,
            truncated=False,
            prompt=row["messages"][: 2 + 2 * k],
            completion=[{"role": "assistant", "content": f"act {k}"}],
        )
        for k in range(steps)
    ]
    return row, step_rows


def visible_files(out: Path) -> list[Path]:
    """The files a plain reader lists (it skips every name, file or folder, that starts with '.' or '_')."""
    return [
        p
        for p in out.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(out).parts)
    ]


def hidden_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".")]


def assert_every_episode_has_its_steps(out: Path) -> None:
    episodes = read_episodes(out, columns=["episode_id", "num_steps"]).to_pylist()
    steps = read_steps(out, columns=["episode_id"]).column("episode_id").to_pylist()
    for episode in episodes:
        assert steps.count(episode["episode_id"]) == episode["num_steps"], episode


@pytest.fixture(scope="module")
def oracle_episode():
    """A real TauEnv episode (retail-000, oracle policy, scripted user) as the rollout writes it."""
    import asyncio

    from rollout.episode import WorkItem, play_episode
    from taugym import TauEnv
    from taugym.agents import OraclePolicy

    env = TauEnv(task_category="retail", user_strategy="scripted")
    result = asyncio.run(
        play_episode(
            env,
            OraclePolicy(),
            WorkItem("retail", "retail-000", 0, 7),
            run_id="run1",
            agent_name="oracle",
            agent_model=None,
        )
    )
    return result["episode"], result["steps"], env._info()


# --------------------------------------------------------------- round trip
def test_real_episode_round_trips_through_pyarrow_and_pandas(tmp_path, oracle_episode):
    row, steps, info = oracle_episode
    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        writer.write(row, steps)

    [back] = read_episodes(tmp_path).to_pylist()
    assert back == row
    assert back["reward"] == 1.0 and back["termination"] == "agent" and back["error"] is False
    assert json.loads(back["tools"]) == info["tools"]
    assert json.loads(back["reward_breakdown"]) == info["evaluation"]
    assert back["messages"][0]["role"] == "system"
    calls = [m for m in back["messages"] if m["tool_calls"]]
    assert calls and all(m["content"] is None for m in calls)
    for message in calls:
        for call in message["tool_calls"]:
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
    tool_results = [m for m in back["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_results] == [m["tool_calls"][0]["id"] for m in calls]
    assert read_steps(tmp_path).to_pylist() == steps
    assert [s["next_observation"] for s in steps[:-1]] == [s["observation"] for s in steps[1:]]

    # pandas: with the pyarrow backend a messages cell is a list of dicts, ready for chat fine-tuning
    df = pd.read_parquet(tmp_path / "episodes", dtype_backend="pyarrow")
    assert list(df.columns).count("domain") == 1
    assert df["messages"].iloc[0] == row["messages"]
    # ... with the default numpy backend, a sequence of dicts
    messages = pd.read_parquet(tmp_path / "episodes")["messages"].iloc[0]
    assert [m["role"] for m in messages] == [m["role"] for m in row["messages"]]
    assert all(isinstance(m, dict) for m in messages)


def test_hugging_face_datasets_loads_messages_and_tools_for_chat_fine_tuning(tmp_path, oracle_episode, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    row, steps, info = oracle_episode
    with ParquetEpisodeWriter(tmp_path / "out", "run1") as writer:
        writer.write(row, steps)
    files = sorted(str(p) for p in (tmp_path / "out" / "episodes").rglob("*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    example = loaded[0]
    # TRL's conversational format: a list of {role, content, tool_calls, ...} and the tool schemas
    assert [m["role"] for m in example["messages"]] == [m["role"] for m in info["messages"]] + ["assistant"]
    assert example["messages"][0]["content"] == info["messages"][0]["content"]
    assert example["messages"][-1]["content"] == "[finish]"  # the agent's end of the episode
    assert example["tools"] == info["tools"] and example["domain"] == "retail"
    called = [m for m in example["messages"] if m["tool_calls"]]
    first = next(m for m in info["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert called[0]["tool_calls"][0]["function"]["name"] == first["name"]
    assert called[0]["tool_calls"][0]["function"]["arguments"] == json.loads(first["arguments"])  # a dict, not text


def test_ray_data_reads_episodes_and_steps(tmp_path, oracle_episode):
    import ray
    from ray.rllib.core.columns import Columns

    row, steps, _ = oracle_episode
    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        writer.write(row, steps)
        writer.write(*make_episode(1, domain="airline"))
    # a staged file (what a crash before the commit leaves) sits beside them: Ray Data must not read it
    [published] = visible_files(tmp_path / "steps" / "airline")
    shutil.copy(published, published.with_name(f".{published.stem}-9.parquet.tmp"))

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        episodes = {r["episode_id"]: r for r in ray.data.read_parquet(str(tmp_path / "episodes")).take_all()}
        step_rows = ray.data.read_parquet(str(tmp_path / "steps")).take_all()
    finally:
        ray.shutdown()

    assert set(episodes) == {row["episode_id"], make_episode(1, domain="airline")[0]["episode_id"]}
    real = episodes[row["episode_id"]]
    assert real["domain"] == "retail"
    assert isinstance(real["messages"], list) and real["messages"] == row["messages"]
    assert len(step_rows) == len(steps) + 2
    # RLlib's offline API maps its columns onto ours with RLLIB_INPUT_READ_SCHEMA
    rllib_names = {v for k, v in vars(Columns).items() if not k.startswith("_")}
    assert set(RLLIB_INPUT_READ_SCHEMA) <= rllib_names
    assert RLLIB_INPUT_READ_SCHEMA == {
        Columns.EPS_ID: "episode_id",
        Columns.OBS: "observation",
        Columns.ACTIONS: "action",
        Columns.REWARDS: "reward",
        Columns.NEXT_OBS: "next_observation",
        Columns.TERMINATEDS: "terminated",
        Columns.TRUNCATEDS: "truncated",
    }
    assert set(RLLIB_INPUT_READ_SCHEMA.values()) <= set(step_rows[0])


# ------------------------------------------------------------- partitioning
def test_a_folder_per_domain_and_one_domain_column_for_every_reader(tmp_path):
    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        for i in range(3):
            writer.write(*make_episode(i, domain="retail"))
        for i in range(2):
            writer.write(*make_episode(i, domain="airline"))

    for kind in ("episodes", "steps"):
        assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["airline", "retail"]
    for path in visible_files(tmp_path):
        assert path.parent.name in ("airline", "retail") and path.name.startswith("part-run1-0-")
        stored = pq.read_table(path, columns=["domain"])[
            "domain"
        ].to_pylist()  # in the file too, for readers that ignore folders
        assert set(stored) == {path.parent.name}

    table = read_episodes(tmp_path)
    assert table.schema.equals(EPISODE_SCHEMA)
    assert sorted(table["domain"].to_pylist()) == ["airline"] * 2 + ["retail"] * 3
    assert read_steps(tmp_path).schema.equals(STEP_SCHEMA)

    discovered = ds.dataset(tmp_path / "episodes", format="parquet").to_table()
    assert discovered.schema.names.count("domain") == 1
    assert all(
        task.startswith(domain)
        for domain, task in zip(discovered["domain"].to_pylist(), discovered["task_id"].to_pylist())
    )
    df = pd.read_parquet(tmp_path / "steps", filters=[("domain", "=", "airline")])
    assert list(df.columns).count("domain") == 1 and set(df["domain"]) == {"airline"} and len(df) == 4


# ------------------------------------------------------------ publishing
def test_files_are_published_at_max_rows_per_file_and_by_age(tmp_path):
    out = tmp_path / "rows"
    with ParquetEpisodeWriter(out, "run1", max_rows_per_file=2) as writer:
        for i in range(5):
            writer.write(*make_episode(i))
            assert read_episodes(out).num_rows == 2 * ((i + 1) // 2)  # a file every two episodes, none held longer
            assert hidden_files(out) == []  # nothing half written on disk in between
    assert [pq.read_metadata(p).num_rows for p in sorted(visible_files(out / "episodes"))] == [2, 2, 1]
    assert read_steps(out).num_rows == 10

    with ParquetEpisodeWriter(tmp_path / "age", "run1", max_seconds_per_file=0.2) as writer:
        writer.write(*make_episode(0))
        assert read_episodes(tmp_path / "age").num_rows == 0
        time.sleep(0.3)
        writer.write(*make_episode(1))  # the oldest is now old enough: published with both rows
        assert read_episodes(tmp_path / "age").num_rows == 2
        writer.write(*make_episode(2))
        time.sleep(0.3)
        writer.publish_due()  # a caller's timer publishes without waiting for the next episode
        assert read_episodes(tmp_path / "age").num_rows == 3


def test_rows_are_invisible_until_published(tmp_path):
    writer = ParquetEpisodeWriter(tmp_path, "run1")
    for i in range(3):
        writer.write(*make_episode(i))
    assert read_episodes(tmp_path).num_rows == 0 and read_steps(tmp_path).num_rows == 0
    assert completed_keys(tmp_path) == set()
    assert visible_files(tmp_path) == []

    writer.close()
    writer.close()  # idempotent
    assert read_episodes(tmp_path).num_rows == 3 and read_steps(tmp_path).num_rows == 6
    assert hidden_files(tmp_path) == []
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(*make_episode(4))


def test_writer_dropped_without_close_publishes_nothing_and_frees_the_output(tmp_path):
    writer = ParquetEpisodeWriter(tmp_path, "run1")
    writer.write(*make_episode(0))
    with pytest.warns(ResourceWarning, match="1 episode"):
        del writer
        gc.collect()
    assert visible_files(tmp_path) == [] and read_episodes(tmp_path).num_rows == 0
    ParquetEpisodeWriter(tmp_path, "run2").close()  # the dropped writer's lease is gone


# ------------------------------------------------------------------ crashes
CRASH_SCRIPT = """
import os, sys
sys.path[:0] = [{root!r}, {tests!r}]
from test_dataset import make_episode
from rollout.dataset import ParquetEpisodeWriter

mode, out = sys.argv[1], sys.argv[2]
from rollout.store import Store
if mode == "between-renames":  # die after the steps file is made visible, before its episodes file
    real_move = Store.move
    def move(self, src, dst):
        if dst.startswith("episodes/"):
            os._exit(1)
        real_move(self, src, dst)
    Store.move = move
if mode == "before-commit":  # die when the second set is staged, before its manifest record is written
    real_put = Store.put
    def put(self, rel, data):
        if rel.startswith("_manifest/") and any(self.entries("_manifest")):
            os._exit(1)
        real_put(self, rel, data)
    Store.put = put
writer = ParquetEpisodeWriter(out, "run1", max_rows_per_file=3)
for i in range(8):
    writer.write(*make_episode(i, steps=1 + i % 3))
os._exit(1)  # mid-file: episodes 6 and 7 are held in memory, unpublished
"""


def crash(out: Path, mode: str) -> None:
    script = CRASH_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), mode, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr


def test_crash_mid_file_leaves_only_complete_files_with_steps(tmp_path):
    crash(tmp_path, "mid-file")

    for path in visible_files(tmp_path):  # every visible file is whole
        pq.read_table(path)
    assert read_episodes(tmp_path).num_rows == 6
    assert_every_episode_has_its_steps(tmp_path)
    assert completed_keys(tmp_path) == {("retail", f"retail-{i:03d}", 0) for i in range(6)}

    # resume with the same ids: published files are kept, names never clash
    before = {p: p.read_bytes() for p in visible_files(tmp_path)}
    with ParquetEpisodeWriter(tmp_path, "run1", max_rows_per_file=3) as writer:
        assert hidden_files(tmp_path) == []
        for i in (6, 7):
            writer.write(*make_episode(i, steps=1 + i % 3))
    assert all(p.read_bytes() == data for p, data in before.items())
    assert completed_keys(tmp_path) == {("retail", f"retail-{i:03d}", 0) for i in range(8)}
    assert_every_episode_has_its_steps(tmp_path)


def test_crash_between_renames_never_shows_an_episode_without_steps(tmp_path):
    crash(tmp_path, "between-renames")  # the set was committed; its steps file is visible, its episodes file not yet

    assert len(visible_files(tmp_path / "steps")) == 1 and visible_files(tmp_path / "episodes") == []
    assert read_episodes(tmp_path).num_rows == 3  # the manifest's record of what is published
    assert_every_episode_has_its_steps(tmp_path)
    assert read_steps(tmp_path).num_rows == 6

    ParquetEpisodeWriter(tmp_path, "run1").close()  # the next writer finishes the publish
    assert len(visible_files(tmp_path / "episodes")) == 1 and hidden_files(tmp_path) == []
    assert raw_table(tmp_path, "episodes").num_rows == 3


def raw_table(out: Path, kind: str):
    """What a plain reader (pyarrow.dataset, which Ray Data and RLlib use) sees in DIR/<kind>."""
    return ds.dataset(out / kind, format="parquet", partitioning="hive").to_table()


def test_a_raw_reader_of_steps_never_sees_an_unpublished_or_repeated_set(tmp_path):
    crash(tmp_path, "between-renames")
    published = set(read_episodes(tmp_path)["episode_id"].to_pylist())
    assert set(raw_table(tmp_path, "steps")["episode_id"].to_pylist()) <= published

    # the next run (a writer with new ids, as a resumed job has) completes the dataset
    wanted = {("retail", f"retail-{i:03d}", 0) for i in range(8)}
    with ParquetEpisodeWriter(tmp_path, "run1", writer_id="resumed") as writer:
        for i in range(8):
            if ("retail", f"retail-{i:03d}", 0) not in completed_keys(tmp_path):
                writer.write(*make_episode(i, steps=1 + i % 3))
    episodes, steps = raw_table(tmp_path, "episodes"), raw_table(tmp_path, "steps")
    keys = list(zip(episodes["domain"].to_pylist(), episodes["task_id"].to_pylist(), episodes["trial"].to_pylist()))
    assert sorted(keys) == sorted(wanted)
    step_keys = list(zip(steps["episode_id"].to_pylist(), steps["step_index"].to_pylist()))
    assert len(step_keys) == len(set(step_keys)) == sum(episodes["num_steps"].to_pylist())
    assert hidden_files(tmp_path) == []


def test_a_crash_before_the_commit_leaves_files_no_reader_sees_and_the_next_writer_removes(tmp_path):
    crash(tmp_path, "before-commit")
    assert {p.name.endswith(".parquet.tmp") for p in hidden_files(tmp_path / "episodes")} == {True}
    assert read_episodes(tmp_path).num_rows == 3 and raw_table(tmp_path, "episodes").num_rows == 3
    assert raw_table(tmp_path, "steps").num_rows == read_steps(tmp_path).num_rows
    ParquetEpisodeWriter(tmp_path, "run2", writer_id="other").close()
    assert hidden_files(tmp_path) == []
    assert read_episodes(tmp_path).num_rows == 3


# -------------------------------------------------------------- one run owns its output
def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    first = ParquetEpisodeWriter(tmp_path, "run1")
    with pytest.raises(ValueError, match=r"(?s)another run.*pid \d+.*choose another"):
        ParquetEpisodeWriter(tmp_path, "run2")
    first.write(*make_episode(0))
    first.close()  # the output is free again
    with ParquetEpisodeWriter(tmp_path, "run2") as second:
        second.write(*make_episode(1))
    assert read_episodes(tmp_path).num_rows == 2


def test_a_killed_writer_never_blocks_the_next(tmp_path):
    crash(tmp_path, "mid-file")  # killed while holding the output
    started = time.monotonic()
    ParquetEpisodeWriter(tmp_path, "run1").close()
    assert time.monotonic() - started < 5


# -------------------------------------------------------------- resume keys
def test_completed_keys_lists_domain_task_and_trial(tmp_path):
    assert completed_keys(tmp_path / "missing") == set()
    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        writer.write(*make_episode(0, domain="retail", trial=0))
        writer.write(*make_episode(0, domain="retail", trial=1))
        writer.write(*make_episode(3, domain="airline", trial=0))
        errored, _ = make_episode(4, domain="airline", steps=0)
        errored.update(
            error=True, error_cause="user: RateLimitError: too many requests", reward=None, termination="error"
        )
        writer.write(errored, [])
    assert completed_keys(tmp_path) == {
        ("retail", "retail-000", 0),
        ("retail", "retail-000", 1),
        ("airline", "airline-003", 0),
        ("airline", "airline-004", 0),
    }
    assert read_episodes(tmp_path, columns=["reward"]).column("reward").null_count == 1


# -------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("reward_breakdown"), r"missing column\(s\) \['reward_breakdown'\]"),
        (lambda r: r.update(api_key="sk-...", extra=1), r"unknown column\(s\) \['api_key', 'extra'\]"),
        (lambda r: r.update(trial="0"), r"column 'trial': Could not convert '0'.*int32"),
        (lambda r: r.update(trial=2**31), r"column 'trial': Value 2147483648 too large"),
        (lambda r: r.update(seed=7.5), r"'seed' must be an integer, got 7.5"),
        (lambda r: r.update(terminated=None), r"'terminated' must not be None"),
        (lambda r: r.update(reward_breakdown="{not json"), r"'reward_breakdown' must be JSON text"),
        (lambda r: r["messages"][1].update(role=None), r"'messages\[1\].role' must not be None"),
        (lambda r: r.update(domain="re/tail"), r"column 'domain'"),
        (
            lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments={"order_id": 1}),
            r"'messages\[2\].tool_calls\[0\].function.arguments' must be JSON text",
        ),
        (lambda r: r["messages"][1].update(reasoning="..."), r"'messages\[1\]' has unknown key\(s\) \['reasoning'\]"),
    ],
)
def test_bad_episode_rows_are_refused_naming_the_column(tmp_path, change, message):
    row, steps = make_episode(0)
    change(row)
    writer = ParquetEpisodeWriter(tmp_path, "run1")
    with pytest.raises(ValueError, match=message):
        writer.write(row, steps)
    writer.close()
    assert read_episodes(tmp_path).num_rows == 0


def test_numpy_numbers_are_accepted_and_stored_as_python_values(tmp_path):
    import numpy as np

    row, steps = make_episode(0, steps=1)
    row.update(num_steps=np.int32(1), seed=np.int64(7), reward=np.float64(1.0), cost_usd=0, terminated=np.bool_(True))
    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        writer.write(row, steps)
    [back] = read_episodes(tmp_path, columns=["num_steps", "seed", "reward", "cost_usd", "terminated"]).to_pylist()
    assert back == {"num_steps": 1, "seed": 7, "reward": 1.0, "cost_usd": 0.0, "terminated": True}


def test_step_rows_must_belong_to_their_episode(tmp_path):
    row, steps = make_episode(0, steps=2)
    with ParquetEpisodeWriter(tmp_path, "run1") as writer:
        with pytest.raises(ValueError, match=r"num_steps=2 but 1 step rows"):
            writer.write(row, steps[:1])
        with pytest.raises(ValueError, match=r"step 1: column 'episode_id'"):
            writer.write(row, [steps[0], dict(steps[1], episode_id="other")])
        with pytest.raises(ValueError, match=r"step 0 row: missing column\(s\) \['next_observation'\]"):
            writer.write(row, [{k: v for k, v in steps[0].items() if k != "next_observation"}, steps[1]])
        with pytest.raises(ValueError, match=r"'step_index' is \[1, 0\]"):
            writer.write(row, steps[::-1])
    assert read_episodes(tmp_path).num_rows == 0 and read_steps(tmp_path).num_rows == 0


def test_episode_row_from_info_normalises_an_openai_conversation():
    info = {
        "task_id": "retail-003",
        "domain": "retail",
        "backend": "tau2",
        "episode_id": "abc",
        "messages": [
            {"role": "system", "content": "policy"},
            {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]},
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
            },
            {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "ok"},
            {"role": "assistant", "content": "done", "tool_calls": []},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "termination": "error",
        "evaluation": None,
        "error": {
            "source": "user",
            "type": "AuthenticationError",
            "message": "Incorrect API key provided: sk-abcdefghijklmnopqrstuvwxyz123456",
        },
    }
    kwargs = dict(
        run_id="run1",
        trial=2,
        seed=5,
        agent="llm",
        agent_model="gpt-4o-mini",
        user_model="gpt-4o",
        user_strategy="llm",
        duration_s=3.0,
        reward=None,
        terminated=True,
        truncated=False,
        num_steps=3,
        taugym_version="0.1.0",
        llm_usage={
            "calls": 4,
            "retries": 1,
            "failures": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_usd": 0.01,
            "total_tokens": 15,
        },
    )
    row = episode_row_from_info(info, **kwargs)
    messages = row["messages"]
    assert messages[1]["content"] == "hello there"
    assert messages[2]["content"] is None and messages[2]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    assert messages[0]["tool_calls"] is None and messages[4]["tool_calls"] is None
    assert row["error"] is True and "sk-abc" not in row["error_cause"] and "AuthenticationError" in row["error_cause"]
    assert row["reward"] is None and row["reward_breakdown"] == "null"
    assert (row["llm_calls"], row["llm_retries"], row["prompt_tokens"], row["cost_usd"]) == (4, 1, 10, 0.01)
    # two tasks reset with the same seed share the env's episode id; the row's ids still differ
    other = episode_row_from_info(dict(info, task_id="retail-004"), **kwargs)
    assert other["episode_id"] != row["episode_id"]
    with pytest.raises(ValueError, match="termination"):
        episode_row_from_info({k: v for k, v in info.items() if k != "termination"}, **kwargs)
