"""``python -m train`` and ``taugym train``: train, evaluate and export the chat policy.

* ``python -m train --config configs/train/bc.yaml [key=value ...]``: a run
  folder ``<out>/<algorithm>-<time>/`` with ``config.yaml``,
  ``metrics.jsonl`` (one line per iteration), ``metrics.json`` (the last
  iteration and the final checkpoint), RLlib checkpoints under
  ``checkpoints/`` and TensorBoard event files under ``tensorboard/``
  (Ray's own ``TBXLoggerCallback``: ``tensorboard --logdir <out>``), and MLflow's
  tracking server or folder when ``mlflow_tracking_uri`` is set (Ray's ``MLflowLoggerCallback``),
  and a W&B project when ``wandb_project`` is set (Ray's ``WandbLoggerCallback``);
  ``--resume RUN`` goes on from its latest checkpoint.
* ``python -m train evaluate --checkpoint CKPT --tasks retail-001,...``:
  plays the checkpoint through the rollout job (a Parquet dataset in
  ``--out``) and prints the do-nothing baseline (``[finish]`` at once) on
  the same tasks beside it, each task labelled with its split.
* ``python -m train export --checkpoint CKPT --out DIR``: a Hugging Face
  model folder (weights, tokenizer, chat template).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def train_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m train", description="Train the chat policy with RLlib.")
    parser.add_argument("--config", help="train YAML, e.g. configs/train/bc.yaml")
    parser.add_argument("--out", help="the run folder's parent (default: the config's out)")
    parser.add_argument("--resume", metavar="RUN", help="go on with the run in folder RUN from its latest checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. iterations=3 lr=1e-3")
    return parser


def evaluate_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m train evaluate", description="Evaluate a checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="an RLlib checkpoint of python -m train, or an HF folder")
    parser.add_argument("--tasks", required=True, help="comma-separated task ids, e.g. retail-001,airline-004")
    parser.add_argument("--out", help="the evaluation dataset's folder (default: runs/eval-<time>)")
    parser.add_argument("--max-steps", type=int, default=30, help="steps per episode (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=1, help="episodes per task (pass^k; default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument(
        "--held-out", action="store_true", help="report the tasks as held-out: refused when one is a train-split task"
    )
    return parser


def export_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m train export", description="Export a checkpoint.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="the Hugging Face folder to write")
    return parser


# ---------------------------------------------------------------- training
def _iteration_row(iteration: int, result: dict, seconds: float) -> dict:
    learner = result.get("learners", {}).get("default_policy", {})
    runners = result.get("env_runners", {})
    row: dict[str, Any] = {"iteration": iteration, "seconds": round(seconds, 3)}
    for key in ("policy_loss", "vf_loss", "total_loss", "entropy", "mean_kl_loss", "approx_kl", "clip_fraction"):
        if key in learner:
            row[key] = float(learner[key])
    norms = [v for k, v in learner.items() if k.startswith("gradients_") and k.endswith("_global_norm")]
    if norms:
        row["gradient_norm"] = float(norms[0])
    sums, counts = runners.get("task_return_sum") or {}, runners.get("task_episodes") or {}
    by_task = {task: float(sums[task]) / float(counts[task]) for task in sums if float(counts.get(task) or 0) > 0}
    if by_task:  # every task weighs the same, however many of its episodes this iteration happened to finish
        row["task_return_mean"] = sum(by_task.values()) / len(by_task)
        row["tasks"] = len(by_task)
    for key in ("episode_return_mean", "episode_len_mean", "num_episodes", "num_env_steps_sampled"):
        if key in runners:
            row[key] = float(runners[key])
    return row


def load_module_weights(algo: Any, checkpoint: str | Path) -> None:
    """Put the policy weights of ``checkpoint`` (any algorithm's) into ``algo`` and its env runners."""
    from train.agent import MODULE_PATH

    module_dir = Path(checkpoint).resolve() / MODULE_PATH
    if not module_dir.is_dir():
        raise ValueError(f"{checkpoint} has no {MODULE_PATH}; give a checkpoint folder written by python -m train")
    algo.restore_from_path(str(module_dir), component="learner_group/learner/rl_module/default_policy")
    if algo.env_runner_group is not None:
        # RLlib's sync_weights is fire-and-forget for remote env runners (timeout 0): set the weights on every
        # runner and wait, so that each holds the checkpoint's when this returns.
        import ray

        state = algo.learner_group.get_state(components="learner/rl_module", inference_only=True)
        state_ref = ray.put({"rl_module": state["learner"]["rl_module"]})
        algo.env_runner_group.foreach_env_runner(lambda runner: runner.set_state(ray.get(state_ref)))


def start_ray() -> None:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False
            )


class _TrainingRun:
    """What Ray's logger callbacks (TensorBoard's, MLflow's, W&B's) read of a Tune trial."""

    evaluated_params: dict = {}

    def __init__(self, run_dir: Path, config: dict):
        self.local_path = str(run_dir / "tensorboard")
        self.config = config
        self.name = run_dir.name
        self.trial_id = run_dir.name
        self.experiment_dir_name = run_dir.parent.name

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return self.name


def _experiment_trackers(config: Any) -> list:
    """Ray's logger callbacks for experiment trackers beside TensorBoard: MLflow when ``mlflow_tracking_uri``
    is set, W&B when ``wandb_project`` is."""
    trackers = []
    if config.mlflow_tracking_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        trackers.append(
            MLflowLoggerCallback(tracking_uri=config.mlflow_tracking_uri, experiment_name=config.mlflow_experiment)
        )
    if config.wandb_project:
        from ray.air.integrations.wandb import WandbLoggerCallback

        # the logging actor runs in a Ray worker: the driver's WANDB_MODE (offline, disabled) goes with it
        mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
        trackers.append(WandbLoggerCallback(project=config.wandb_project, **mode))
    for tracker in trackers:
        tracker.setup()
    return trackers


def run_training(config: Any, run_dir: Path, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``config`` (a :class:`~train.config.TrainConfig`) into ``run_dir``; returns ``metrics.json``'s content."""
    import dataclasses

    import torch
    import yaml

    torch.set_num_threads(1)  # Ray sets it in workers only; 2 threads on a small machine are slower, not faster
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics_path.read_text().splitlines()] if resume and metrics_path.exists() else []
    )
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    start_ray()
    from ray.tune.logger import TBXLoggerCallback

    algo = config.algorithm_config().build_algo()
    tensorboard, trackers = TBXLoggerCallback(), []  # TensorBoard's trial starts with its first result
    logged_run = _TrainingRun(run_dir, dataclasses.asdict(config))
    try:
        trackers = _experiment_trackers(config)
        logged_run.init_local_path()  # W&B's logging actor starts in it
        for tracker in trackers:
            tracker.log_trial_start(logged_run)
        start = 0
        if resume:
            saved = sorted(p for p in checkpoints.glob("iter-*") if p.is_dir())
            if saved and algo.env_runner_group is None:  # offline: RLlib's restore would sync env runners it has not
                algo.learner_group.restore_from_path(str((saved[-1] / "learner_group").resolve()))
            elif saved:
                algo.restore_from_path(str(saved[-1].resolve()))
            if saved:
                start = int(saved[-1].name.split("-")[1])
            rows = [r for r in rows if r["iteration"] <= start]
        elif config.init_checkpoint:
            load_module_weights(algo, config.init_checkpoint)
        with metrics_path.open("w") as sink:
            for row in rows:
                sink.write(json.dumps(row) + "\n")
            for iteration in range(start + 1, config.iterations + 1):
                began = time.monotonic()
                result = algo.train()
                row = _iteration_row(iteration, result, time.monotonic() - began)
                tensorboard.log_trial_result(iteration, logged_run, {**result, "training_iteration": iteration})
                for tracker in trackers:  # the metrics of metrics.jsonl, not RLlib's hundreds of keys
                    tracker.log_trial_result(iteration, logged_run, {**row, "training_iteration": iteration})
                rows.append(row)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                if not quiet:
                    shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "iteration")
                    print(f"iteration {iteration}/{config.iterations}: {shown}", file=sys.stderr, flush=True)
                if iteration % config.checkpoint_every == 0 and iteration < config.iterations:
                    algo.save_to_path(str((checkpoints / f"iter-{iteration:05d}").resolve()))
        final = (checkpoints / f"iter-{config.iterations:05d}").resolve()
        algo.save_to_path(str(final))
    finally:
        for logger in (tensorboard, *trackers):
            logger.log_trial_end(logged_run, failed=sys.exc_info()[0] is not None)
            logger.on_experiment_end(trials=[logged_run])  # W&B's waits here for its run to finish writing
        algo.stop()
    summary = {"algorithm": config.algorithm, "iterations": len(rows), "last": rows[-1] if rows else None}
    summary["checkpoint"] = str(final)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_train_command(args: argparse.Namespace) -> int:
    from train.config import TrainConfig

    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").exists():
                raise ValueError(f"--resume {run_dir}: no config.yaml there; give a run folder of python -m train")
            config = TrainConfig.from_yaml(run_dir / "config.yaml").with_overrides(args.overrides)
        else:
            if not args.config:
                raise ValueError("give --config configs/train/<name>.yaml (or --resume RUN)")
            config = TrainConfig.from_yaml(args.config).with_overrides(args.overrides)
            parent = Path(args.out or config.out)
            run_dir = parent / f"{config.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}"
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = run_training(config, run_dir, resume=bool(args.resume))
    print(f"run: {run_dir}; metrics: {run_dir / 'metrics.jsonl'}; checkpoint: {summary['checkpoint']}")
    return 0


# ---------------------------------------------------------------- evaluation
def task_split(task_id: str, backend: str = "tau2") -> str:
    """``train`` or ``test`` (the backend's split holding the task), else ``-``."""
    from taugym.backends import get_backend

    domain = get_backend(backend).load_domain(task_id.rsplit("-", 1)[0])
    for split in ("train", "test"):
        if any(domain.tasks[i].task_id == task_id for i in domain.splits.get(split, [])):
            return split
    return "-"


def do_nothing_rewards(task_ids: list[str], max_steps: int = 30) -> dict[str, float]:
    """Each task's reward when the agent sends ``[finish]`` at once (the baseline every evaluation prints)."""
    from taugym import TauEnv

    envs: dict[str, TauEnv] = {}
    rewards = {}
    for task_id in task_ids:
        domain = task_id.rsplit("-", 1)[0]
        env = envs.setdefault(domain, TauEnv(task_category=domain, user_strategy="scripted", max_steps=max_steps))
        env.reset(seed=0, options={"task_id": task_id})
        rewards[task_id] = float(env.step("[finish]")[1])
    return rewards


def evaluate(
    checkpoint: str,
    task_ids: list[str],
    out: str,
    max_steps: int = 30,
    trials: int = 1,
    temperature: float = 0.0,
    held_out: bool = False,
) -> dict:
    """Play ``checkpoint`` on ``task_ids`` through the rollout job into ``out``; return per-task rewards,
    the do-nothing baseline and each task's split (see the module docstring)."""
    from rollout.config import RolloutConfig
    from rollout.dataset import read_episodes
    from rollout.job import RolloutJob

    splits = {t: task_split(t) for t in task_ids}
    if held_out and any(s == "train" for s in splits.values()):
        trained = [t for t, s in splits.items() if s == "train"]
        raise ValueError(f"--held-out, but {trained} are train-split tasks; leave out --held-out or those tasks")
    domains = list(dict.fromkeys(t.rsplit("-", 1)[0] for t in task_ids))
    config = RolloutConfig.from_dict(
        {
            "domains": domains,
            "tasks": list(task_ids),
            "trials": trials,
            "seed": 0,
            "agent": {
                "name": "train.agent:CheckpointPolicy",
                "checkpoint": str(Path(checkpoint).resolve()),
                "temperature": temperature,
            },
            "env": {"backend": "tau2", "user_strategy": "scripted", "max_steps": max_steps},
            "actors": 1,
            "cpus_per_actor": 1,
            "episodes_per_actor": 1,
            "out": out,
        }
    )
    start_ray()
    RolloutJob(config, out=out, progress=False).run()
    rows = read_episodes(out, columns=["task_id", "reward"]).to_pylist()
    rewards: dict[str, list[float]] = {t: [] for t in task_ids}
    for row in rows:
        rewards[row["task_id"]].append(float(row["reward"] or 0.0))
    return {
        "rewards": rewards,
        "baseline": do_nothing_rewards(task_ids, max_steps),
        "splits": splits,
        "out": out,
    }


def format_evaluation(result: dict) -> str:
    lines = [f"{'task':<14} {'split':<6} {'policy':>7} {'do-nothing':>11}"]
    for task, values in result["rewards"].items():
        mean = sum(values) / len(values) if values else float("nan")
        lines.append(f"{task:<14} {result['splits'][task]:<6} {mean:>7.2f} {result['baseline'][task]:>11.2f}")
    for split in ("train", "test", "-"):
        tasks = [t for t, s in result["splits"].items() if s == split]
        if not tasks:
            continue
        solved = sum(1 for t in tasks if result["rewards"][t] and min(result["rewards"][t]) >= 1.0)
        base = sum(1 for t in tasks if result["baseline"][t] >= 1.0)
        label = {"train": "train-split tasks (trained on: not held-out)", "test": "test-split tasks"}.get(split, split)
        lines.append(f"{label}: policy 1.0 on {solved}/{len(tasks)}, do-nothing 1.0 on {base}/{len(tasks)}")
    return "\n".join(lines)


def run_evaluate_command(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    out = args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = evaluate(args.checkpoint, tasks, out, args.max_steps, args.trials, args.temperature, args.held_out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_evaluation(result))
    print(f"dataset: {out}")
    return 0


def run_export_command(args: argparse.Namespace) -> int:
    from train.agent import load_policy

    try:
        policy = load_policy(args.checkpoint)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    policy.save_pretrained(args.out)
    print(f"Hugging Face folder: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m train [evaluate|export] ...``"""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        return run_evaluate_command(evaluate_parser().parse_args(argv[1:]))
    if argv[:1] == ["export"]:
        return run_export_command(export_parser().parse_args(argv[1:]))
    return run_train_command(train_parser().parse_intermixed_args(argv))
