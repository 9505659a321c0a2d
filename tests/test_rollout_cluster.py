"""The rollout job on an existing Ray cluster named by --address (here: a head node started on loopback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rollout.dataset import read_episodes

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rollout_runs_on_an_existing_cluster_given_by_address(tmp_path):
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    # a throwaway cluster on loopback; token auth off so the driver needs no shared token
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    head = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        config = tmp_path / "job.yaml"
        config.write_text(
            json.dumps(
                {
                    "domains": ["airline"],
                    "tasks": ["airline-000", "airline-001", "airline-002"],
                    "agent": {"name": "oracle"},
                    "env": {"user_strategy": "scripted"},
                    "actors": 1,
                    "cpus_per_actor": 1,
                }
            )
        )
        command = [
            sys.executable,
            "-m",
            "rollout",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
            "--address",
            f"127.0.0.1:{port}",
            "--no-progress",
        ]
        deadline = time.monotonic() + 120
        while True:  # the head takes a few seconds to come up
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Started a local Ray instance" not in done.stderr  # it joined the cluster
        rewards = read_episodes(tmp_path / "out")["reward"].to_pylist()
        assert rewards == [1.0, 1.0, 1.0]
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head and the processes it started
        head.wait()
        _forget_cluster(port)


def _forget_cluster(port: int) -> None:
    """`ray start` notes the head's address for later `ray.init("auto")` calls; the head is gone."""
    import tempfile

    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if note.exists() and note.read_text().strip().endswith(f":{port}"):
        note.unlink()
