"""``python -m train``: a run folder with metrics and checkpoints, resume, export, evaluation beside the baseline."""

from __future__ import annotations

import json
import struct

import pytest
from test_train_rllib import _oracle_steps

from rollout.dataset import read_episodes, read_steps
from train.cli import main
from train.config import TrainConfig
from train.policy import ChatPolicy

SMALL = ["model.max_action_tokens=16", "model.max_prompt_tokens=256", "minibatch_size=4"]


def test_the_train_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="iteratons"):
        TrainConfig.from_yaml("configs/train/bc.yaml").with_overrides(["iteratons=3"])
    with pytest.raises(ValueError, match="algorithm must be one of"):
        TrainConfig.from_dict({"algorithm": "dqn"})
    with pytest.raises(ValueError, match="set data"):
        TrainConfig.from_dict({"algorithm": "bc"})
    with pytest.raises(ValueError, match="mlflow_tracking_uri must be a URI"):
        TrainConfig.from_dict({"algorithm": "ppo", "mlflow_tracking_uri": ""})
    with pytest.raises(ValueError, match="wandb_project must be a W&B project name"):
        TrainConfig.from_dict({"algorithm": "ppo", "wandb_project": ""})
    assert main(["--config", "configs/train/bc.yaml", "iteratons=3"]) == 2


def _tensorboard_scalars(folder) -> dict:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value)] (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def _mlflow_losses(tracking_uri: str) -> dict:
    """Iteration -> policy_loss over every finished run of the ``taugym`` experiment, read with MLflow's own client;
    each run logged the options it was given."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("taugym")
    losses = {}
    for logged in client.search_runs([experiment.experiment_id]):
        assert logged.info.status == "FINISHED" and logged.data.params["algorithm"] == "bc"
        losses.update({m.step: m.value for m in client.get_metric_history(logged.info.run_id, "policy_loss")})
    return losses


def _wandb_losses(folder) -> dict:
    """training_iteration -> policy_loss over every offline W&B run under ``folder``, read from W&B's run
    files (``run-*.wandb``: a 7-byte header, then LevelDB-log chunks in 32 KiB blocks of W&B's ``Record``s)."""
    from wandb.proto.wandb_internal_pb2 import Record

    losses = {}
    for path in sorted(folder.glob("**/offline-run-*/run-*.wandb")):
        data, at, pending = path.read_bytes(), 7, b""
        while at + 7 <= len(data):
            if 32768 - at % 32768 < 7:  # a block's tail too short for a chunk header is padding
                at += 32768 - at % 32768
                continue
            length, kind = struct.unpack("<HB", data[at + 4 : at + 7])
            pending += data[at + 7 : at + 7 + length]
            at += 7 + length
            if kind in (1, 4):  # a whole record, or a record's last chunk
                record, pending = Record.FromString(pending), b""
                if record.WhichOneof("record_type") == "history":
                    row = {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                    if "policy_loss" in row:  # W&B adds rows of its own (the run's system metrics)
                        losses[row["training_iteration"]] = row["policy_loss"]
    return losses


def test_train_resume_export_and_evaluate_a_checkpoint(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps a folder store only when asked
    monkeypatch.setenv("WANDB_MODE", "offline")  # W&B keeps the run in the run folder for a later wandb sync

    data = tmp_path / "data"
    _oracle_steps(data)
    args = ["--config", "configs/train/bc.yaml", "--out", str(tmp_path / "runs"), f"data={data}", *SMALL]
    try:
        tracking = f"file:{tmp_path / 'mlruns'}"
        trackers = [f"mlflow_tracking_uri={tracking}", "wandb_project=taugym"]
        assert main([*args, "iterations=2", "checkpoint_every=1", *trackers]) == 0
        (run,) = (tmp_path / "runs").glob("bc-*")
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-00001", "iter-00002"]
        assert main(["--resume", str(run), "iterations=3"]) == 0
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [1, 2, 3] and all("policy_loss" in r for r in rows)
        logged = _tensorboard_scalars(run / "tensorboard")
        assert [step for step, _ in logged["ray/tune/learners/default_policy/policy_loss"]] == [1, 2, 3]
        losses = {row["iteration"]: row["policy_loss"] for row in rows}  # iterations 1, 2, 3 (asserted above)
        assert _mlflow_losses(tracking) == losses
        assert _wandb_losses(run) == losses
        checkpoint = json.loads((run / "metrics.json").read_text())["checkpoint"]
        assert checkpoint.endswith("iter-00003")

        assert main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path / "hf")]) == 0
        exported = ChatPolicy.from_pretrained(tmp_path / "hf")
        assert exported.tokenizer.chat_template and exported.prompt_ids([{"role": "user", "content": "hi"}])

        out = tmp_path / "eval"
        capsys.readouterr()
        tasks = "retail-001,retail-005"  # a train-split and a test-split task
        code = main(["evaluate", "--checkpoint", checkpoint, "--tasks", tasks, "--out", str(out), "--max-steps", "2"])
        printed = capsys.readouterr().out
        assert code == 0
        assert "do-nothing" in printed and "train-split tasks (trained on: not held-out)" in printed
        assert "test-split tasks" in printed
        episodes = read_episodes(out, columns=["task_id", "reward", "agent"]).to_pylist()
        assert sorted(e["task_id"] for e in episodes) == ["retail-001", "retail-005"]
        assert all(e["agent"] == "train.agent:CheckpointPolicy" for e in episodes)
        steps = read_steps(out, columns=["completion_token_ids", "completion_logprobs"]).to_pylist()
        assert steps and all(s["completion_token_ids"] and s["completion_logprobs"] for s in steps)
        held_out = [
            "evaluate",
            "--checkpoint",
            checkpoint,
            "--tasks",
            tasks,
            "--out",
            str(tmp_path / "e2"),
            "--held-out",
        ]
        assert main(held_out) == 2
    finally:
        ray.shutdown()


def test_an_iteration_row_weighs_every_task_the_same():
    from train.cli import _iteration_row

    result = {"env_runners": {"task_return_sum": {"a": 2.0, "b": 0.0}, "task_episodes": {"a": 2, "b": 4}}}
    row = _iteration_row(1, result, 1.0)
    assert row["task_return_mean"] == 0.5 and row["tasks"] == 2  # not 2/6: b's four episodes count as one task


def test_an_online_grpo_iteration_reports_its_return_per_task(tmp_path):
    import ray

    args = ["--config", "configs/train/grpo.yaml", "--out", str(tmp_path / "runs"), *SMALL]
    args += ["iterations=1", "env.max_steps=2", "env.episodes_per_task=2", "episodes_per_iteration=4"]
    try:
        assert main([*args, "env.task_ids=[retail-001,retail-002]", "env.step_penalty=0.1"]) == 0
    finally:
        ray.shutdown()  # main started Ray in this process
    (run,) = (tmp_path / "runs").glob("grpo-*")
    (row,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert row["tasks"] in (1, 2) and row["num_episodes"] >= 4
    assert -0.2 - 1e-6 <= row["task_return_mean"] <= 1.0  # two steps at most, 0.1 off each
