"""The RLModule over a causal LM, its action distribution and its connectors (RLlib's new API stack).

* :class:`ChatLMModule` (``TorchRLModule`` + ``ValueFunctionAPI``): when
  sampling it generates the action's tokens (:meth:`ChatPolicy.generate`);
  when training it scores the taken action's tokens teacher forced
  (:meth:`ChatPolicy.score`). The batch's ``obs`` are prompt token ids and
  ``actions`` action token ids, both padded with -1.
* :class:`ActionSequence`: the distribution over a whole action: its inputs
  (``action_dist_inputs``) are the per-token log-probs of the action the
  batch holds, so ``logp`` is their sum and RLlib's stock PPO, BC and
  MARWIL losses run unchanged. ``entropy`` and ``kl`` are the one-sample
  estimates (``-logp``, ``logp_self - logp_other``).
* Connectors: :class:`TokenizeChat` (env-to-module: the chat text to prompt
  ids), :class:`DecodeActions` (module-to-env: the action's text in
  ``actions_for_env``, while the episode keeps the token ids and their
  log-probs), :class:`TokenizeChatForLearner` (learner: every step's chat
  to prompt ids, before RLlib's own pieces add actions, rewards and
  advantages).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.distribution import Distribution
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from train.policy import ChatPolicy, tiny_policy

PAD = -1
"""Padding of the token columns (no token id is negative)."""


def build_policy(model_config: dict) -> ChatPolicy:
    """The :class:`ChatPolicy` a module's ``model_config`` names: ``model: tiny`` (built from a config with
    the domain tokenizer) or ``model: <local Hugging Face folder>``."""
    options = {
        k: model_config[k] for k in ("max_action_tokens", "max_prompt_tokens", "opening_tokens") if k in model_config
    }
    model = model_config.get("model", "tiny")
    if model == "tiny":
        sizes = {k: model_config[k] for k in ("hidden_size", "layers", "heads") if k in model_config}
        return tiny_policy(
            tuple(model_config.get("domains", ("retail", "airline"))),
            seed=model_config.get("seed", 0),
            **sizes,
            **options,
        )
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, None: None}[model_config.get("dtype")]
    return ChatPolicy.from_pretrained(model, torch_dtype=dtype, device=model_config.get("device"), **options)


def pad_rows(rows: list, width: int | None = None) -> np.ndarray:
    """Rows of token ids as one ``[N, width]`` int64 array, padded with :data:`PAD`."""
    width = max([len(r) for r in rows] + [1]) if width is None else width
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = np.asarray(row, dtype=np.int64)[:width]
    return out


def _unpad(row: Any) -> list[int]:
    row = row.tolist() if hasattr(row, "tolist") else list(row)
    return [int(t) for t in row if int(t) != PAD]


class ActionSequence(Distribution):
    """A whole action's distribution, given the per-token log-probs of the action in the batch (see the module docstring)."""

    def __init__(self, token_logps: torch.Tensor):
        self.token_logps = token_logps

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs: Any) -> ActionSequence:
        return cls(logits)

    def logp(self, value: Any = None, **kwargs: Any) -> torch.Tensor:
        return self.token_logps.sum(dim=-1)

    def entropy(self, **kwargs: Any) -> torch.Tensor:
        return -self.logp()

    def kl(self, other: ActionSequence, **kwargs: Any) -> torch.Tensor:
        return self.logp() - other.logp()

    def sample(self, **kwargs: Any):
        raise NotImplementedError("actions are sampled by the module (ChatLMModule generates them)")

    def rsample(self, **kwargs: Any):
        raise NotImplementedError("an action sequence has no reparameterised sample")

    @staticmethod
    def required_input_dim(space: Any, **kwargs: Any) -> int:
        return 1

    def to_deterministic(self) -> ActionSequence:
        return self


class ChatLMModule(TorchRLModule, ValueFunctionAPI):
    """An RLModule over :class:`ChatPolicy` (see the module docstring).

    ``model_config``: ``model`` (``tiny`` or a local Hugging Face folder),
    ``domains`` (the tiny model's tokenizer), ``hidden_size``/``layers``/
    ``heads`` (tiny), ``dtype``, ``device``, ``max_action_tokens``,
    ``max_prompt_tokens``, ``opening_tokens``, ``temperature`` (sampling; 0 is greedy),
    ``seed`` (the sampler's generator).
    """

    def setup(self):
        self.policy = build_policy(self.model_config)
        self.temperature = float(self.model_config.get("temperature", 1.0))
        hidden = int(self.policy.model.config.hidden_size)
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        self._generator = torch.Generator().manual_seed(int(self.model_config.get("seed", 0)))
        self.action_dist_cls = ActionSequence

    def get_train_action_dist_cls(self):
        return ActionSequence

    def get_exploration_action_dist_cls(self):
        return ActionSequence

    def get_inference_action_dist_cls(self):
        return ActionSequence

    def _act(self, batch: dict, temperature: float) -> dict:
        actions, logps = [], []
        for prompt in batch[Columns.OBS]:
            prompt = _unpad(prompt)
            if not prompt:  # an episode that ended: the env resets it and ignores the action
                ids, token_logps = [self.policy.eos_id], [0.0]
            else:
                ids, token_logps = self.policy.generate(prompt, temperature, self._generator)
            actions.append(ids)
            logps.append(token_logps)
        width = self.policy.max_action_tokens
        token_logps = np.zeros((len(actions), width), dtype=np.float32)
        for i, row in enumerate(logps):
            token_logps[i, : len(row)] = row
        return {
            Columns.ACTIONS: pad_rows(actions, width),
            Columns.ACTION_DIST_INPUTS: token_logps,
            Columns.ACTION_LOGP: token_logps.sum(axis=-1),
        }

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.policy.forget_prefix()  # new weights: the cached prefix keys and values are stale

    def _forward_inference(self, batch: dict, **kwargs: Any) -> dict:
        return self._act(batch, 0.0)

    def _forward_exploration(self, batch: dict, **kwargs: Any) -> dict:
        return self._act(batch, self.temperature)

    def _forward_train(self, batch: dict, **kwargs: Any) -> dict:
        prompts = [_unpad(p) for p in batch[Columns.OBS]]
        actions = [_unpad(a) for a in batch[Columns.ACTIONS]]
        token_logps, hidden = self.policy.score_and_hidden(prompts, actions, self.temperature or 1.0)
        width = batch[Columns.ACTIONS].shape[-1]
        if token_logps.shape[-1] < width:
            token_logps = torch.nn.functional.pad(token_logps, (0, width - token_logps.shape[-1]))
        return {Columns.ACTION_DIST_INPUTS: token_logps, Columns.EMBEDDINGS: hidden}

    def compute_values(self, batch: dict, embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            prompts = [_unpad(p) for p in batch[Columns.OBS]]
            _, embeddings = self.policy.score_and_hidden(prompts, [[] for _ in prompts])
        return self.value_head(embeddings.float()).squeeze(-1)


def chat_prompt_ids(policy: ChatPolicy, observation: str) -> list[int]:
    """The prompt ids of a :class:`~train.env.ChatObservation` observation (the chat as JSON)."""
    chat = json.loads(str(observation))
    return policy.clip_prompt(policy.prompt_ids(chat["messages"], chat["tools"]))


class TokenizeChat(ConnectorV2):
    """Env-to-module: each env's last observation (the chat as JSON) as prompt ids, ``[B, L]`` padded with -1.

    An episode that just ended gets an empty prompt (the module answers it
    without generating: the env resets and ignores that action). Replaces
    RLlib's default env-to-module pieces (turn them off with
    ``add_default_connectors_to_env_to_module_pipeline=False``).
    """

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs):
        policy = rl_module.policy
        rows = []
        for episode in episodes:
            rows.append([] if episode.is_done else chat_prompt_ids(policy, episode.get_observations(-1)))
        batch[Columns.OBS] = pad_rows(rows)
        return batch


class DecodeActions(ConnectorV2):
    """Module-to-env: the actions' text in ``actions_for_env`` (an object array); ``actions`` stay token ids.

    Replaces RLlib's default module-to-env pieces (turn them off with
    ``add_default_connectors_to_module_to_env_pipeline=False``).
    """

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs):
        batch = {k: (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in batch.items()}
        texts = np.empty(len(batch[Columns.ACTIONS]), dtype=object)
        texts[:] = [rl_module.policy.decode_action(_unpad(row)) for row in batch[Columns.ACTIONS]]
        batch[Columns.ACTIONS_FOR_ENV] = texts
        return batch


class TokenizeChatForLearner(ConnectorV2):
    """Learner: every step's observation (the chat as JSON) as prompt ids, padded with -1 to the batch's longest.

    Put first in the learner pipeline (RLlib then skips its own
    observation piece and adds actions, rewards and advantages around it).
    """

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, **kwargs):
        if Columns.OBS in batch:
            return batch
        module = rl_module[next(iter(rl_module.keys()))] if hasattr(rl_module, "keys") else rl_module
        policy = module.unwrapped().policy if hasattr(module, "unwrapped") else module.policy
        per_episode = []
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            observations = episode.get_observations(slice(0, len(episode)))
            per_episode.append((episode, [chat_prompt_ids(policy, o) for o in observations]))
        width = max([len(ids) for _, rows in per_episode for ids in rows] + [1])
        for i, (episode, rows) in enumerate(per_episode):
            if "_" not in episode.id_:  # RLlib's own observation piece does the same (keys its items per episode)
                episode.id_ += "_" + str(i)
            self.add_n_batch_items(
                batch,
                Columns.OBS,
                items_to_add=list(pad_rows(rows, width)),
                num_items=len(episode),
                single_agent_episode=episode,
            )
        return batch
