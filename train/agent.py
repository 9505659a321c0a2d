"""A trained checkpoint as a TauGym agent, so the rollout job plays it (Ray actors, Parquet, pass^k).

In a rollout config::

    agent:
      name: train.agent:CheckpointPolicy
      checkpoint: runs/train/bc-.../checkpoints/final
      temperature: 0.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from taugym.agents.base import Policy
from train.policy import ChatPolicy

#: Where an RLlib algorithm checkpoint keeps the module's weights.
MODULE_PATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"


def load_policy(checkpoint: str | Path) -> ChatPolicy:
    """The :class:`ChatPolicy` of an RLlib algorithm checkpoint, an RLModule checkpoint, or a Hugging Face folder."""
    path = Path(checkpoint)
    if (path / "config.json").exists():
        return ChatPolicy.from_pretrained(path)
    for candidate in (path / MODULE_PATH, path):
        if (candidate / "module_state.pkl").exists() or (candidate / "class_and_ctor_args.pkl").exists():
            from ray.rllib.core.rl_module.rl_module import RLModule

            return RLModule.from_checkpoint(str(candidate.resolve())).policy
    raise ValueError(
        f"{checkpoint} is neither an RLlib checkpoint of the chat policy (with {MODULE_PATH}) nor a Hugging Face "
        "folder; give a run's checkpoints/<name> folder or an exported model folder"
    )


class CheckpointPolicy(Policy):
    """Plays a trained checkpoint: the chat of ``info`` as the prompt, the generated turn as the action.

    Args:
        checkpoint: an RLlib checkpoint of ``python -m train``, or a Hugging Face folder.
        temperature: 0 (default) is greedy.
        seed: the sampler's seed (temperature > 0); the rollout job gives each episode its own
            (the episode's seed) unless the agent's config sets one.
    """

    name = "checkpoint"

    def __init__(self, checkpoint: str, temperature: float = 0.0, seed: int = 0):
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        self.policy = load_policy(checkpoint)
        self.temperature = float(temperature)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._behaviour: dict | None = None

    def act(self, observation: dict, info: dict) -> Any:
        torch.set_num_threads(1)
        prompt = self.policy.clip_prompt(self.policy.prompt_ids(info["messages"], info["tools"]))
        ids, logps = self.policy.generate(prompt, self.temperature, self.generator)
        self._behaviour = {"token_ids": ids, "logprobs": logps}
        return self.policy.decode_action(ids)

    def behaviour(self) -> dict | None:
        return self._behaviour
