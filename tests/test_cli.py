"""The rollout command line: misuse gets one clear line and rc 2, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollout.dataset import completed_keys

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "domains": ["retail"],
    "tasks": ["retail-000"],
    "agent": {"name": "oracle"},
    "env": {"user_strategy": "scripted"},
    "actors": 1,
    "cpus_per_actor": 1,
}


def rollout(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rollout", "--no-progress", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rollout_in_process(*args: str) -> subprocess.CompletedProcess:
    """``taugym rollout ...`` called in this process (the console script's ``main``): misuse is refused before
    any job starts, so this answers as the command does without the seconds of a new interpreter's imports."""
    from rollout.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            code = main(["rollout", "--no-progress", *args])
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
    return subprocess.CompletedProcess(["taugym", "rollout", *args], code, "", stderr.getvalue())


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]


@pytest.fixture
def small_config(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(json.dumps(SMALL))
    return path


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("domains: [retail\ntasks: all\n", ("is not valid YAML", "line")),
        ("env: 5\n", ("env must be a mapping",)),
        ("tasks: [5]\n", ("a split name, or a list of task ids",)),
        ("- retail\n- airline\n", ("must be a mapping of option names",)),
    ],
    ids=["invalid-yaml", "env-not-a-mapping", "task-not-a-string", "not-a-mapping"],
)
def test_a_bad_config_file_is_refused_with_a_message(tmp_path, text, fragments):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert_refused(rollout_in_process("--config", str(path), "--out", str(tmp_path / "out")), str(path), *fragments)


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("env={user_strategy: scripted", ("override 'env={user_strategy: scripted'", "not valid YAML")),
        ("tasks=[5]", ("tasks must be",)),
        ("seed=abc", ("seed must be an integer",)),
        ("ramp_s=-1", ("ramp_s must be a number of seconds >= 0",)),
    ],
)
def test_a_bad_override_is_refused_with_a_message(tmp_path, small_config, override, fragments):
    assert_refused(
        rollout_in_process("--config", str(small_config), "--out", str(tmp_path / "out"), override), *fragments
    )


def test_a_config_that_is_a_folder_is_refused(tmp_path):
    assert_refused(
        rollout_in_process("--config", str(tmp_path), "--out", str(tmp_path / "out")), "is a folder", "YAML file"
    )


def test_an_out_that_is_a_file_empty_or_under_a_file_is_refused(tmp_path, small_config):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    assert_refused(rollout_in_process("--config", str(small_config), "--out", str(a_file)), "--out", "is a file")
    assert_refused(
        rollout_in_process("--config", str(small_config), "--out", str(a_file / "run")), "--out", "cannot be created"
    )
    assert_refused(rollout_in_process("--config", str(small_config), "--out", ""), "--out", "empty")
    assert a_file.read_text() == "not a folder"


def test_an_unwritable_out_is_refused(tmp_path, monkeypatch):
    """The message a user gets where the OS refuses writes (as root every folder is writable,
    so the OS's answer is what is set here, not the folder's mode)."""
    from rollout.cli import check_out_folder

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    with pytest.raises(ValueError, match="not writable"):
        check_out_folder(str(locked / "run"), "runs/default")
    assert not (locked / "run").exists()


def test_an_unreachable_cluster_address_fails_fast(tmp_path, small_config):
    started = time.monotonic()
    result = rollout("--config", str(small_config), "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1")
    assert_refused(result, "127.0.0.1:1", "cannot reach")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()  # refused before any work started


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> dict:
    """A job started by ``python -m rollout`` with an override after the flags, and sent Ctrl-C once it has
    published files: its config, --out, whether it still ran at Ctrl-C, its exit code and stderr."""
    folder = tmp_path_factory.mktemp("interrupted")
    config = folder / "job.yaml"
    # 4 trials of every retail task: long enough that the job is still running when the first files are published
    config.write_text(json.dumps({**SMALL, "tasks": "all", "trials": 4}))
    out = folder / "out"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollout",
            "--no-progress",
            "--config",
            str(config),
            "--out",
            str(out),
            "rows_per_file=5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a terminal's Ctrl-C reaches a process whose SIGINT is the default; a shell's background job (CI
        # scripts, nohup) starts its children with SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(completed_keys(out)) < 5 and driver.poll() is None:
        time.sleep(0.2)
    running = driver.poll() is None
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = driver.communicate(timeout=120)
    return {"config": config, "out": out, "running": running, "returncode": driver.returncode, "stderr": stderr}


def test_ctrl_c_says_what_was_published_and_how_to_resume(interrupted_run):
    stderr, out = interrupted_run["stderr"], interrupted_run["out"]
    assert interrupted_run["running"], "the job ended before Ctrl-C could be sent: " + stderr[-3000:]
    assert interrupted_run["returncode"] == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    published = len(completed_keys(out))
    assert 5 <= published < 4 * 114
    assert f"{published} episode(s)" in stderr and "--resume" in stderr and str(out) in stderr, stderr[-3000:]


def test_overrides_may_come_before_and_after_the_flags(interrupted_run, tmp_path):
    # the interrupted job ran with rows_per_file=5 after its flags; resume a copy of its output
    assert interrupted_run["running"], interrupted_run["stderr"][-3000:]
    out = tmp_path / "out"
    shutil.copytree(interrupted_run["out"], out)
    config = str(interrupted_run["config"])
    resumed = ("--config", config, "--out", str(out), "rows_per_file=5", "--resume", "env.max_steps=12")
    # the module's entry point as a new process; the console script's main() here (the same refusal, before any job)
    changed = subprocess.run(
        [sys.executable, "-m", "rollout", *resumed], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert changed.returncode == 2 and "env.max_steps was" in changed.stderr, changed.stderr
    changed = rollout_in_process(*resumed)
    assert changed.returncode == 2 and "env.max_steps was" in changed.stderr, changed.stderr
