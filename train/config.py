"""The training job's options (``configs/train/*.yaml``), with ``key=value`` overrides like the rollout's."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taugym.config import apply_overrides, check_options, load_yaml_mapping
from taugym.llm.settings import options_dataclass
from train.algorithms import ALGORITHMS


def _require_tracker(key: str, module: str, package: str) -> None:
    """Refuse ``key`` when the experiment tracker it logs to is not installed."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{key} is set but {module} is not installed: pip install {package}, or leave {key} unset")


@dataclass
class TrainConfig:
    """One training run.

    Args:
        algorithm: ``bc``, ``marwil`` (from ``data``), ``ppo`` or ``grpo`` (online in ``env``).
        data: a rollout output folder whose ``steps/`` rows BC/MARWIL learn from.
        env: the ``TauGym-v0`` env_config: TauGymConfig options plus ``task_ids``
            and ``episodes_per_task`` (a GRPO group).
        model: the module's ``model_config``: ``model`` (``tiny`` or a local Hugging
            Face folder), ``max_action_tokens``, ``max_prompt_tokens``,
            ``temperature`` (sampling), ``hidden_size``/``layers``/``heads`` (tiny),
            ``dtype``, ``device``.
        init_checkpoint: start from this checkpoint's weights (e.g. PPO from a BC run).
        iterations: training iterations.
        checkpoint_every: save a checkpoint every N iterations (and always at the end).
        num_env_runners / num_envs_per_env_runner / num_learners / num_gpus_per_learner:
            RLlib's scale options.
        episodes_per_iteration, lr, minibatch_size, num_epochs, train_batch_size, seed:
            the algorithm's (see :func:`train.algorithms.build_config`).
        training: further ``AlgorithmConfig.training`` options (``beta`` for MARWIL,
            ``clip_param``...).
        out: the run folder's parent; each run writes ``out/<algorithm>-<time>``.
        mlflow_tracking_uri: also log each iteration's metrics and the run's options to
            MLflow (Ray's ``MLflowLoggerCallback``) at this tracking URI (``file:./mlruns``,
            ``http://host:5000``); needs ``mlflow`` (``pip install mlflow-skinny``). None: off.
        mlflow_experiment: the MLflow experiment the runs go to (made if missing).
        wandb_project: also log each iteration's metrics and the run's options to this
            Weights & Biases project (Ray's ``WandbLoggerCallback``); needs ``wandb``
            (``pip install wandb``) and W&B's own settings: ``WANDB_API_KEY`` or ``wandb
            login``, or ``WANDB_MODE=offline`` to keep the run in ``<run>/tensorboard/wandb``
            for a later ``wandb sync``. None: off.
    """

    algorithm: str = "bc"
    data: str | None = None
    env: dict = field(default_factory=lambda: {"task_category": "retail", "user_strategy": "scripted"})
    model: dict = field(default_factory=lambda: {"model": "tiny"})
    init_checkpoint: str | None = None
    iterations: int = 10
    checkpoint_every: int = 5
    num_env_runners: int = 1
    num_envs_per_env_runner: int = 1
    num_learners: int = 0
    num_gpus_per_learner: float = 0
    episodes_per_iteration: int = 16
    lr: float = 1e-4
    minibatch_size: int = 8
    num_epochs: int = 1
    train_batch_size: int | None = None
    seed: int = 0
    training: dict = field(default_factory=dict)
    out: str = "runs/train"
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "taugym"
    wandb_project: str | None = None

    def validate(self) -> TrainConfig:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}, got {self.algorithm!r}")
        if self.algorithm in ("bc", "marwil") and not self.data:
            raise ValueError(f"{self.algorithm} learns from a rollout's step rows: set data: <rollout output folder>")
        check_options(
            self,
            positive_ints=("iterations", "checkpoint_every", "episodes_per_iteration", "minibatch_size", "num_epochs"),
            mappings=("env", "model", "training"),
        )
        if self.mlflow_tracking_uri is not None:
            if not isinstance(self.mlflow_tracking_uri, str) or not self.mlflow_tracking_uri:
                raise ValueError(
                    f"mlflow_tracking_uri must be a URI such as file:./mlruns, got {self.mlflow_tracking_uri!r}"
                )
            _require_tracker("mlflow_tracking_uri", "mlflow", "mlflow-skinny")
        if self.wandb_project is not None:
            if not isinstance(self.wandb_project, str) or not self.wandb_project:
                raise ValueError(f"wandb_project must be a W&B project name such as taugym, got {self.wandb_project!r}")
            _require_tracker("wandb_project", "wandb", "wandb")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ``ValueError``."""
        return options_dataclass(cls, values, "train config").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(load_yaml_mapping(path, "train config", "configs/train/"))

    def with_overrides(self, overrides: list[str]) -> TrainConfig:
        """Apply ``key=value`` overrides (YAML values; ``env.max_steps=10`` reaches into a mapping)."""
        return TrainConfig.from_dict(apply_overrides(dataclasses.asdict(self), overrides, "iterations=5"))

    def algorithm_config(self):
        """The RLlib ``AlgorithmConfig`` of this run."""
        from train.algorithms import build_config

        return build_config(
            self.algorithm,
            env_config=self.env,
            model_config=self.model,
            offline_dir=self.data,
            num_env_runners=self.num_env_runners,
            num_envs_per_env_runner=self.num_envs_per_env_runner,
            num_learners=self.num_learners,
            num_gpus_per_learner=self.num_gpus_per_learner,
            episodes_per_iteration=self.episodes_per_iteration,
            lr=self.lr,
            minibatch_size=self.minibatch_size,
            num_epochs=self.num_epochs,
            train_batch_size=self.train_batch_size,
            seed=self.seed,
            training=self.training,
        )
