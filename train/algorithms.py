"""RLlib configs for the chat policy: BC / MARWIL from step rows, PPO and GRPO online.

:func:`build_config` is the one place that wires TauGym into RLlib: the
registered ``TauGym-v0`` env with :class:`~train.env.TextVectorEnv`, the
:class:`~train.module.ChatLMModule` and its connectors (RLlib's default
env-to-module and module-to-env pieces are off: they batch and unbatch text
as nested structures), and the learner connector first in the learner
pipeline.

GRPO is PPO's clipped objective with no critic, taken per token as in
GRPO's own loss (each action token's ratio to the sampler's log-prob,
clipped, averaged over the action's tokens, then over steps:
:func:`grpo_token_loss`), with advantages computed
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

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.evaluation.postprocessing import Postprocessing

from train.env import ChatObservation, register
from train.module import ChatLMModule, DecodeActions, TokenizeChat, TokenizeChatForLearner

ALGORITHMS = ("bc", "marwil", "ppo", "grpo")
#: GRPO's optimizers (``training.optimizer``): Adam (RLlib's default), plain SGD, SGD with momentum 0.9.
OPTIMIZERS = ("adam", "sgd", "momentum")


def tokenize_chat(env: Any = None, spaces: Any = None, device: Any = None) -> ConnectorV2:
    return TokenizeChat()


def decode_actions(env: Any = None, spaces: Any = None) -> ConnectorV2:
    return DecodeActions()


def tokenize_chat_for_learner(observation_space: Any = None, action_space: Any = None, device: Any = None):
    return TokenizeChatForLearner()


class GroupAdvantages(ConnectorV2):
    """GRPO's advantages: each episode's return normalised within the episodes of its task (see the module docstring)."""

    def __init__(self, negative_weight: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.negative_weight = float(negative_weight)

    def __call__(self, *, rl_module, episodes, batch, **kwargs):
        from ray.rllib.connectors.common.numpy_to_tensor import NumpyToTensor

        episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        returns = [float(np.sum(e.get_rewards())) for e in episodes]
        tasks = [ChatObservation.episode_task_id(e) for e in episodes]
        groups: dict[Any, list[float]] = defaultdict(list)
        for task, value in zip(tasks, returns):
            groups[task].append(value)
        advantages = []
        mean_length = float(np.mean([len(e) for e in episodes])) if episodes else 1.0
        for task, value, episode in zip(tasks, returns, episodes):
            group = np.asarray(groups[task])
            advantage = 0.0 if len(group) < 2 else (value - group.mean()) / (group.std() + 1e-6)
            if advantage < 0:
                advantage *= self.negative_weight
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


def grpo_token_loss(
    *,
    new_token_logps: torch.Tensor,
    old_token_logps: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    clip_param: float,
    loss_mask: torch.Tensor | None = None,
    length_normalized: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's clipped objective, per token: ``-mean_steps( mean_tokens( min(r_t A, clip(r_t) A) ) )``.

    ``r_t = exp(logp_t - old_logp_t)`` is each action token's ratio to the
    sampler's log-prob (the episode keeps them, ``action_dist_inputs``);
    ``A`` is the step's advantage; tokens are the action's (``actions`` not
    :data:`~train.module.PAD`), averaged within each step, so a step weighs
    the same whatever its length: a long, rambling action sampled in a
    failing episode does not outweigh a short correct tool call. With
    ``length_normalized=False`` each step's sum is divided by the action
    budget (the columns' width) instead, as Dr. GRPO does: every token
    weighs the same, so a long correct tool call is learnt as much per
    token as a short one. Returns the
    loss and statistics (``token_nll``: mean ``-logp_t``; ``approx_kl``:
    mean ``old_logp_t - logp_t``; ``clip_fraction``).
    """
    width = min(new_token_logps.shape[-1], old_token_logps.shape[-1], actions.shape[-1])
    new, old = new_token_logps[..., :width], old_token_logps[..., :width].to(new_token_logps.dtype)
    tokens = (actions[..., :width] >= 0).to(new.dtype)
    counts = tokens.sum(-1).clamp(min=1.0)
    ratio = torch.exp((new - old) * tokens)
    advantage = advantages.to(new.dtype).unsqueeze(-1)
    surrogate = torch.min(advantage * ratio, advantage * ratio.clamp(1 - clip_param, 1 + clip_param))
    per_step = (surrogate * tokens).sum(-1) / (counts if length_normalized else width)
    steps = torch.ones_like(per_step, dtype=torch.bool) if loss_mask is None else loss_mask.bool()
    n = steps.sum().clamp(min=1)

    def mean_over_steps(values: torch.Tensor) -> torch.Tensor:
        return values[steps].sum() / n

    with torch.no_grad():
        stats = {
            "token_nll": mean_over_steps((-new * tokens).sum(-1) / counts),
            "approx_kl": mean_over_steps(((old - new) * tokens).sum(-1) / counts),
            "clip_fraction": mean_over_steps(
                (((ratio - 1).abs() > clip_param).to(new.dtype) * tokens).sum(-1) / counts
            ),
        }
    return -mean_over_steps(per_step), stats


def log_return_by_task(*, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
    """RLlib ``on_episode_end`` callback: each finished episode's return and count under its task
    (``task_return_sum/<task>``, ``task_episodes/<task>``; summed over env runners each iteration)."""
    if metrics_logger is None:
        return
    task = ChatObservation.episode_task_id(episode)
    metrics_logger.log_value(("task_return_sum", task), float(episode.get_return()), reduce="sum")
    metrics_logger.log_value(("task_episodes", task), 1, reduce="sum")


def _grpo_learner_class():
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY

    class GRPOLearner(PPOTorchLearner):
        """PPO's learner with :class:`GroupAdvantages` in place of GAE and GRPO's token-level loss."""

        def build(self) -> None:
            super().build()
            if self._learner_connector is not None:
                self._learner_connector.remove(GeneralAdvantageEstimation)
                weight = self.config.learner_config_dict.get("negative_advantage_weight", 1.0)
                self._learner_connector.append(GroupAdvantages(negative_weight=weight))

        def configure_optimizers_for_module(self, module_id, config=None) -> None:
            config = config or self.config
            optimizer = config.learner_config_dict.get("optimizer", "adam")
            if optimizer == "adam":
                return super().configure_optimizers_for_module(module_id, config)
            params = self.get_parameters(self._module[module_id])
            self.register_optimizer(
                module_id=module_id,
                optimizer=torch.optim.SGD(params, lr=config.lr, momentum=0.9 if optimizer == "momentum" else 0.0),
                params=params,
                lr_or_lr_schedule=config.lr,
            )

        def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
            loss, stats = grpo_token_loss(
                new_token_logps=fwd_out[Columns.ACTION_DIST_INPUTS],
                old_token_logps=batch[Columns.ACTION_DIST_INPUTS],
                actions=batch[Columns.ACTIONS],
                advantages=batch[Postprocessing.ADVANTAGES],
                clip_param=config.clip_param,
                loss_mask=batch.get(Columns.LOSS_MASK),
                length_normalized=config.learner_config_dict.get("length_normalized", True),
            )
            zero = torch.zeros((), device=loss.device)
            self.metrics.log_dict(
                {POLICY_LOSS_KEY: loss, VF_LOSS_KEY: zero, ENTROPY_KEY: stats["token_nll"], **stats},
                key=module_id,
                window=1,
            )
            return loss

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
    for MARWIL, ``clip_param`` for PPO); GRPO also takes ``optimizer``
    (one of :data:`OPTIMIZERS`) and ``negative_advantage_weight`` (in
    [0, 1]; 1, the default, is GRPO's own: negative advantages are scaled by
    it, so 0 learns from the better-than-group episodes only).
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
            options.update(use_critic=False, vf_loss_coeff=0.0)
            optimizer = extra.pop("optimizer", "adam")
            if optimizer not in OPTIMIZERS:
                raise ValueError(f"training.optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
            negative_weight = float(extra.pop("negative_advantage_weight", 1.0))
            if not 0.0 <= negative_weight <= 1.0:
                raise ValueError(
                    f"training.negative_advantage_weight must be in [0, 1] (1 is GRPO's own), got {negative_weight}"
                )
            config.learners(
                learner_class=_grpo_learner_class(),
                learner_config_dict={
                    "optimizer": optimizer,
                    "negative_advantage_weight": negative_weight,
                    "length_normalized": bool(extra.pop("length_normalized", True)),
                },
            )
        options.update(extra)
        config.training(**options)
        config.callbacks(on_episode_end=log_return_by_task)
    config.rl_module(rl_module_spec=module_spec(model_config))
    config.learners(
        num_learners=num_learners,
        num_gpus_per_learner=num_gpus_per_learner,
        learner_connector=tokenize_chat_for_learner,
    )
    config.debugging(seed=seed)
    config.reporting(metrics_num_episodes_for_smoothing=episodes_per_iteration)  # each iteration's own episodes
    return config


__all__ = ["ALGORITHMS", "ChatObservation", "GroupAdvantages", "build_config", "grpo_token_loss", "module_spec"]
