"""`--out` on object storage: the same publishing protocol over a real S3 API (moto's server on 127.0.0.1).

The job writes to ``s3://…`` through pyarrow's S3 filesystem; the tests kill
it in the middle of a publish, resume it, and read the result with every
reader a user has: :mod:`rollout.dataset`, a plain ``pyarrow.dataset`` of the
S3 folder, Ray Data and Hugging Face ``datasets`` (through the loaders).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
import ray

from rollout.cli import check_out_folder
from rollout.dataset import (
    ParquetEpisodeWriter,
    completed_keys,
    read_episodes,
    read_steps,
)
from rollout.training_data import load_sft, load_steps_ray

try:
    from test_dataset import make_episode
except ImportError:  # pragma: no cover
    from tests.test_dataset import make_episode  # type: ignore

REPO = Path(__file__).resolve().parents[1]
BUCKET = "taugym-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on 127.0.0.1; its credentials in the environment (a fresh secret, never printed)."""
    port = _free_port()
    secret = secrets.token_hex(16)
    env = {
        "AWS_ACCESS_KEY_ID": "taugym-test-key-id",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(BUCKET)
        yield {"secret": secret, **env}
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _s3() -> pafs.FileSystem:
    """pyarrow's S3 filesystem as a user gets it from a URI (it reads AWS_ENDPOINT_URL, the credentials)."""
    return pafs.FileSystem.from_uri(f"s3://{BUCKET}")[0]


def _bucket_objects(prefix: str) -> list[pafs.FileInfo]:
    fs = _s3()
    selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    return [i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]


def _raw(prefix: str, kind: str):
    """What a plain reader of the S3 folder sees (pyarrow.dataset: what Ray Data and RLlib use)."""
    return ds.dataset(f"{BUCKET}/{prefix}/{kind}", format="parquet", filesystem=_s3()).to_table()


def _keys(table) -> list[tuple]:
    return list(zip(table["domain"].to_pylist(), table["task_id"].to_pylist(), table["trial"].to_pylist()))


# A job run by the CLI, killed (SIGKILL) in the middle of its second publish: the commit record is
# written and the set's steps file moved to its final name, its episodes file not yet.
CRASH_DRIVER = """
import os, signal, sys
sys.path[:0] = [{root!r}]
from rollout.store import Store
real_move = Store.move
moves = []
def move(self, src, dst):
    if dst.startswith("episodes/"):
        moves.append(dst)
        if len(moves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real_move(self, src, dst)
Store.move = move
from rollout.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_job_writing_to_s3_killed_mid_publish_resumes_to_exactly_once_for_every_reader(tmp_path, s3_server):
    prefix = "runs/crashed"
    out = f"s3://{BUCKET}/{prefix}"
    tasks = [f"retail-{i:03d}" for i in range(6)]
    config = tmp_path / "job.yaml"
    config.write_text(
        json.dumps(
            {
                "domains": ["retail"],
                "tasks": tasks,
                "agent": {"name": "oracle"},
                "env": {"user_strategy": "scripted"},
                "actors": 1,
                "cpus_per_actor": 1,
                "rows_per_file": 2,
            }
        )
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # one Ray for all
    try:
        _crash_resume_and_read(out, prefix, config, tasks, s3_server["secret"])
    finally:
        ray.shutdown()


def _crash_resume_and_read(out: str, prefix: str, config: Path, tasks: list[str], secret: str) -> None:
    address = ray.get_runtime_context().gcs_address  # the drivers join the test's Ray
    args = ["rollout", "--config", str(config), "--out", out, "--address", address, "--no-progress"]
    crashed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH_DRIVER.format(root=str(REPO))), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]

    published = read_episodes(out)  # the manifest: both committed sets, 2 + 2 episodes
    assert published.num_rows == 4 and len(set(_keys(published))) == 4
    raw_episodes, raw_steps = _raw(prefix, "episodes"), _raw(prefix, "steps")
    assert raw_episodes.num_rows == 2  # the second set's episodes file was not moved yet
    assert set(_keys(raw_episodes)) <= set(_keys(published))
    assert set(raw_steps["episode_id"].to_pylist()) <= set(published["episode_id"].to_pylist())

    resumed = subprocess.run(
        [sys.executable, "-m", "rollout", *args[1:], "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    wanted = sorted(("retail", t, 0) for t in tasks)
    episodes, steps = read_episodes(out), read_steps(out)
    assert sorted(_keys(episodes)) == wanted
    assert sorted(_keys(_raw(prefix, "episodes"))) == wanted
    raw_steps = _raw(prefix, "steps")
    step_keys = list(zip(raw_steps["episode_id"].to_pylist(), raw_steps["step_index"].to_pylist()))
    assert len(step_keys) == len(set(step_keys)) == sum(episodes["num_steps"].to_pylist()) == steps.num_rows
    sft = load_sft(out, min_reward=None)  # a Hugging Face datasets.Dataset
    assert sorted(zip(sft["domain"], sft["task_id"], sft["trial"])) == wanted
    names = [info.path.rpartition("/")[2] for info in _bucket_objects(prefix)]
    assert not [n for n in names if n.startswith(".")], names  # no staged file, no unfinished put left
    assert {"summary.json", "run.json", "README.md"} <= set(names)

    by_loader = load_steps_ray(out, columns=["episode_id", "step_index"]).take_all()  # Ray Data
    plain = ray.data.read_parquet(f"{out}/steps", columns=["episode_id", "step_index"]).take_all()
    for rows in (by_loader, plain):
        assert sorted((r["episode_id"], r["step_index"]) for r in rows) == sorted(step_keys)

    # the secret is never in what the job printed or wrote
    assert secret not in crashed.stdout + crashed.stderr + resumed.stdout + resumed.stderr
    fs = _s3()
    for info in _bucket_objects(prefix):
        with fs.open_input_stream(info.path) as stream:
            assert secret.encode() not in stream.read()


def test_a_second_run_into_the_same_s3_prefix_is_refused(s3_server):
    out = f"s3://{BUCKET}/runs/owned"
    first = ParquetEpisodeWriter(out, "run1")
    try:
        with pytest.raises(ValueError, match=r"another run is writing to s3://.*runs/owned"):
            ParquetEpisodeWriter(out, "run2")
        first.write(*make_episode(0))
    finally:
        first.close()
    with ParquetEpisodeWriter(out, "run2") as second:
        second.write(*make_episode(1))
    assert completed_keys(out) == {("retail", "retail-000", 0), ("retail", "retail-001", 0)}


def test_unusable_out_uris_are_refused_before_any_work_with_what_to_do(s3_server, monkeypatch):
    with pytest.raises(ValueError, match=r"neither pyarrow .* nor fsspec .* knows this filesystem"):
        check_out_folder("nosuchfs://bucket/run", "runs/default")
    with pytest.raises(ValueError, match=r"names no folder"):
        check_out_folder("memory://", "runs/default")
    _s3().open_output_stream(f"{BUCKET}/runs/a-file").close()
    with pytest.raises(ValueError, match=r"is a file; name a folder"):
        check_out_folder(f"s3://{BUCKET}/runs/a-file", "runs/default")
    closed = _free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")  # nothing answers there
    with pytest.raises(ValueError, match=r"cannot be read .*check the credentials and endpoint") as refused:
        check_out_folder(f"s3://{BUCKET}/runs/x", "runs/default")
    assert s3_server["secret"] not in str(refused.value)


def test_any_fsspec_filesystem_holds_a_dataset_through_the_same_protocol():
    out = "memory://taugym-test/run"  # fsspec's in-memory filesystem, wrapped for pyarrow
    with ParquetEpisodeWriter(out, "run1", max_rows_per_file=2) as writer:
        for i in range(3):
            writer.write(*make_episode(i, steps=1 + i % 2))
    assert completed_keys(out) == {("retail", f"retail-{i:03d}", 0) for i in range(3)}
    assert read_steps(out).num_rows == 1 + 2 + 1
    import fsspec

    names = fsspec.filesystem("memory").find("/taugym-test/run")
    assert names and not [n for n in names if n.rpartition("/")[2].startswith(".")]


def test_a_file_uri_is_the_local_folder(tmp_path):
    with ParquetEpisodeWriter(f"file://{tmp_path}", "run1") as writer:
        writer.write(*make_episode(0))
    assert completed_keys(tmp_path) == {("retail", "retail-000", 0)}
