"""RLlib configs for the chat policy: BC / MARWIL from step rows, PPO and GRPO online.

:func:`build_config` is the one place that wires TauGym into RLlib: the
registered ``TauGym-v0`` env with :class:`~train.env.TextVectorEnv`, the
:class:`~train.module.ChatLMModule` and its connectors (RLlib's default
env-to-module and module-to-env pieces are off: they batch and unbatch text
as nested structures), and the learner connector first in the learner
pipeline.

GRPO is PPO's clipped objective with no critic, and advantages computed
per group of episodes of the same task: each step of an episode gets
``(R - mean(R_group)) / (std(R_group) + 1e-6)`` (0 for a group of one),
where ``R`` is the episode's return, times ``mean episode length / its
length``, so that each episode weighs the same whatever its length (a
failing episode that runs to ``max_steps`` would otherwise push down the
tokens it shares with the successful ones more often than those push them
up) (:class:`GroupAdvantages`, which
replaces RLlib's GAE piece in :class:`GRPOLearner`). Groups come from
``env_config.episodes_per_task`` (consecutive episodes of one env play
the same task).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.evaluation.postprocessing import Postprocessing

from train.env import ChatObservation, register
from train.module import ChatLMModule, DecodeActions, TokenizeChat, TokenizeChatForLearner

ALGORITHMS = ("bc", "marwil", "ppo", "grpo")


def tokenize_chat(env: Any = None, spaces: Any = None, device: Any = None) -> ConnectorV2:
    return TokenizeChat()


def decode_actions(env: Any = None, spaces: Any = None) -> ConnectorV2:
    return DecodeActions()


def tokenize_chat_for_learner(observation_space: Any = None, action_space: Any = None, device: Any = None):
    return TokenizeChatForLearner()


class GroupAdvantages(ConnectorV2):
    """GRPO's advantages: each episode's return normalised within the episodes of its task (see the module docstring)."""

    def __call__(self, *, rl_module, episodes, batch, **kwargs):
        from ray.rllib.connectors.common.numpy_to_tensor import NumpyToTensor

        episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        returns = [float(np.sum(e.get_rewards())) for e in episodes]
        tasks = [json.loads(str(e.get_observations(0))).get("task_id") for e in episodes]
        groups: dict[Any, list[float]] = defaultdict(list)
        for task, value in zip(tasks, returns):
            groups[task].append(value)
        advantages = []
        mean_length = float(np.mean([len(e) for e in episodes])) if episodes else 1.0
        for task, value, episode in zip(tasks, returns, episodes):
            group = np.asarray(groups[task])
            advantage = 0.0 if len(group) < 2 else (value - group.mean()) / (group.std() + 1e-6)
            weight = mean_length / len(episode)  # an episode's steps weigh the same together, whatever its length
            advantages.append(np.full(len(episode), advantage * weight, dtype=np.float32))
        for module_id in batch:
            flat = np.concatenate(advantages) if advantages else np.zeros(0, dtype=np.float32)
            batch[module_id][Postprocessing.ADVANTAGES] = flat
            batch[module_id][Postprocessing.VALUE_TARGETS] = np.zeros_like(flat)
        converted = NumpyToTensor(as_learner_connector=True)(
            rl_module=rl_module,
            batch={
                mid: {k: b[k] for k in (Postprocessing.ADVANTAGES, Postprocessing.VALUE_TARGETS)}
                for mid, b in batch.items()
            },
            episodes=[],
        )
        for mid, columns in converted.items():
            batch[mid].update(columns)
        return batch


def _grpo_learner_class():
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

    class GRPOLearner(PPOTorchLearner):
        """PPO's learner with :class:`GroupAdvantages` in place of GAE."""

        def build(self) -> None:
            super().build()
            if self._learner_connector is not None:
                self._learner_connector.remove(GeneralAdvantageEstimation)
                self._learner_connector.append(GroupAdvantages())

    return GRPOLearner


def module_spec(model_config: dict) -> RLModuleSpec:
    return RLModuleSpec(module_class=ChatLMModule, model_config=dict(model_config))


def build_config(
    algorithm: str,
    *,
    env_config: dict | None = None,
    model_config: dict | None = None,
    offline_dir: str | None = None,
    num_env_runners: int = 1,
    num_envs_per_env_runner: int = 1,
    num_learners: int = 0,
    num_gpus_per_learner: float = 0,
    episodes_per_iteration: int = 16,
    lr: float = 1e-4,
    minibatch_size: int = 8,
    num_epochs: int = 1,
    train_batch_size: int | None = None,
    seed: int = 0,
    training: dict | None = None,
) -> AlgorithmConfig:
    """An RLlib ``AlgorithmConfig`` for ``algorithm`` (``bc``, ``marwil``, ``ppo``, ``grpo``).

    ``bc``/``marwil`` read ``offline_dir`` (a rollout output folder) and
    need no env; ``ppo``/``grpo`` play ``TauGym-v0`` with ``env_config``
    on ``num_env_runners`` remote env runners (0: in the driver).
    ``episodes_per_iteration`` sets the env steps per iteration from
    ``env_config.max_steps`` unless ``train_batch_size`` is given.
    ``training`` passes further ``.training(...)`` options (e.g. ``beta``
    for MARWIL, ``clip_param`` for PPO).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}, got {algorithm!r}")
    env_config = dict(env_config or {})
    model_config = {"seed": seed, **(model_config or {})}
    extra = dict(training or {})
    if algorithm in ("bc", "marwil"):
        if offline_dir is None:
            raise ValueError(f"{algorithm} learns from step rows: give offline_dir (a rollout output folder)")
        from ray.rllib.algorithms.bc import BCConfig
        from ray.rllib.algorithms.marwil import MARWILConfig

        from taugym.env import UnicodeText
        from train.offline import offline_data_kwargs

        config = BCConfig() if algorithm == "bc" else MARWILConfig()
        text = UnicodeText(max_length=10**8)
        config.environment(observation_space=text, action_space=text)
        config.offline_data(**offline_data_kwargs(offline_dir))
        config.training(
            lr=lr,
            train_batch_size_per_learner=train_batch_size or minibatch_size,
            **extra,
        )
    else:
        from ray.rllib.algorithms.ppo import PPOConfig

        max_steps = int(env_config.get("max_steps", 30))
        config = PPOConfig().environment(register(), env_config=env_config)
        config.env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            gym_env_vectorize_mode="vector_entry_point",
            env_to_module_connector=tokenize_chat,
            module_to_env_connector=decode_actions,
            add_default_connectors_to_env_to_module_pipeline=False,
            add_default_connectors_to_module_to_env_pipeline=False,
            batch_mode="complete_episodes",
            rollout_fragment_length=max_steps,
            num_cpus_per_env_runner=1,
        )
        batch_size = train_batch_size or episodes_per_iteration * max_steps
        options = {
            "lr": lr,
            "train_batch_size_per_learner": batch_size,
            "minibatch_size": min(minibatch_size, batch_size),
            "num_epochs": num_epochs,
            "use_kl_loss": False,
            "entropy_coeff": 0.0,
        }
        if algorithm == "grpo":
            options.update(use_critic=False, vf_loss_coeff=0.0, learner_class=_grpo_learner_class())
        options.update(extra)
        config.training(**options)
    config.rl_module(rl_module_spec=module_spec(model_config))
    config.learners(
        num_learners=num_learners,
        num_gpus_per_learner=num_gpus_per_learner,
        learner_connector=tokenize_chat_for_learner,
    )
    config.debugging(seed=seed)
    config.reporting(metrics_num_episodes_for_smoothing=episodes_per_iteration)  # each iteration's own episodes
    return config


__all__ = ["ALGORITHMS", "ChatObservation", "GroupAdvantages", "build_config", "module_spec"]
