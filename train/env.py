"""TauGym for RLlib: ``TauGym-v0`` registered with Tune, the chat as one text observation, a vector env for text.

``register()`` makes ``PPOConfig().environment("TauGym-v0", env_config={...})``
work: ``env_config`` takes :class:`~taugym.config.TauGymConfig` fields
(``task_category``, ``user_strategy``, ``max_steps``, ...) plus

* ``task_ids``: the tasks episodes play (default: the env's split), in
  rounds: every task once per round, in a shuffled order,
* ``episodes_per_task``: how many episodes in a row play the same task (a
  GRPO group; default 1),

and the env runners build :class:`TextVectorEnv` (set
``env_runners(gym_env_vectorize_mode="vector_entry_point")``, as
:func:`train.algorithms.build_config` does).

Why a vector env of our own: Gymnasium's vector envs batch ``Text``
observations as tuples of strings, and RLlib unbatches with dm-tree, which
walks a tuple of strings into one string per env but a single string
into its characters; :class:`TextVectorEnv` keeps each batch as a numpy
object array, so every env's string arrives whole.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import gymnasium as gym
import numpy as np

from taugym import TauEnv
from taugym.config import TauGymConfig
from taugym.env import UnicodeText

ENV_NAME = "TauGym-v0"

#: The env_config keys beyond TauGymConfig's fields.
EXTRA_KEYS = ("task_ids", "episodes_per_task")
#: Keys RLlib adds to an env_config (``EnvContext``) that are not ours to check.
_RLLIB_KEYS = ("num_envs",)


class ChatObservation(gym.Wrapper):
    """TauEnv with one text observation: the chat the agent saw, as JSON.

    The observation is ``json.dumps({"task_id", "messages", "tools"})``:
    ``info["messages"]`` (OpenAI chat format, system prompt first) and
    ``info["tools"]`` (OpenAI tool schemas), what a chat model is prompted
    with; the policy renders it with its chat template. Actions are the
    env's own action strings. ``task_ids`` / ``episodes_per_task`` choose
    the task of each reset (see the module docstring); ``seed`` makes the
    sequence of tasks and users repeatable.
    """

    def __init__(
        self,
        env: TauEnv,
        task_ids: list[str] | None = None,
        episodes_per_task: int = 1,
        seed: int = 0,
    ):
        super().__init__(env)
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be at least 1, got {episodes_per_task}")
        valid = [t.task_id for t in env.domain.tasks]
        if task_ids is None:
            task_ids = [env.domain.tasks[i].task_id for i in env.domain.splits[env.task_split]]
        unknown = [t for t in task_ids if t not in valid]
        if unknown:
            raise ValueError(f"task_ids {unknown} are not tasks of {env.domain.name}; valid: {valid[0]} … {valid[-1]}")
        if not task_ids:
            raise ValueError("task_ids is empty; give at least one task")
        self.task_ids = list(task_ids)
        self.episodes_per_task = int(episodes_per_task)
        self.base_seed = int(seed)
        self.episodes = 0
        self._rng = np.random.default_rng(self.base_seed)
        self._task: str | None = None
        self._round: list[str] = []
        self.observation_space = UnicodeText(max_length=10**8)
        self.action_space = env.action_space

    @staticmethod
    def episode_task_id(episode: Any) -> str | None:
        """The task an RLlib episode of these observations played (read from its first observation)."""
        return json.loads(str(episode.get_observations(0))).get("task_id")

    def _observation(self, info: dict) -> str:
        return json.dumps(
            {"task_id": info.get("task_id"), "messages": info["messages"], "tools": info["tools"]},
            ensure_ascii=False,
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = dict(options or {})
        if "task_id" not in options:
            if self.episodes % self.episodes_per_task == 0:
                if not self._round:  # every task once per round, in a shuffled order
                    self._round = [self.task_ids[i] for i in self._rng.permutation(len(self.task_ids))]
                self._task = self._round.pop()
            options["task_id"] = self._task
        if seed is None:
            seed = zlib.crc32(f"{self.base_seed}/{self.episodes}".encode())
        self.episodes += 1
        _, info = self.env.reset(seed=seed, options=options)
        return self._observation(info), info

    def step(self, action: Any):
        _, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(info), reward, terminated, truncated, info


def split_env_config(env_config: dict) -> tuple[TauGymConfig, dict]:
    """``env_config`` as a :class:`TauGymConfig` and the wrapper's options; unknown keys are refused."""
    config = {k: v for k, v in dict(env_config).items() if k not in _RLLIB_KEYS}
    extra = {k: config.pop(k) for k in EXTRA_KEYS if k in config}
    return TauGymConfig.from_dict(config), extra


def make_chat_env(env_config: dict, index: int = 0) -> ChatObservation:
    """One :class:`ChatObservation` env from an ``env_config`` (its seed offset by the runner and ``index``)."""
    config, extra = split_env_config(env_config)
    worker = int(getattr(env_config, "worker_index", 0) or 0)
    seed = zlib.crc32(f"{config.seed}/{worker}/{index}".encode())
    return ChatObservation(TauEnv(config), seed=seed, **extra)


class TextVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` :class:`ChatObservation` envs stepped in turn, batches kept as object arrays.

    Autoreset is Gymnasium's ``NEXT_STEP`` (what RLlib's env runners
    expect): the step after an episode ends resets that env and ignores
    its action. ``infos`` are left empty (the chat is in the observation).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, env_config: dict, num_envs: int):
        self.envs = [make_chat_env(env_config, index) for index in range(num_envs)]
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._done = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, list) else [None if seed is None else seed + i for i in range(self.num_envs)]
        observations = _objects([env.reset(seed=s, options=options)[0] for env, s in zip(self.envs, seeds)])
        self._done[:] = False
        return observations, {}

    def step(self, actions: Any):
        observations, rewards = [], np.zeros(self.num_envs)
        terminateds = np.zeros(self.num_envs, dtype=bool)
        truncateds = np.zeros(self.num_envs, dtype=bool)
        for i, (env, action) in enumerate(zip(self.envs, list(actions))):
            if self._done[i]:
                observation, _ = env.reset()
            else:
                observation, rewards[i], terminateds[i], truncateds[i], _ = env.step(str(action))
            observations.append(observation)
        self._done = terminateds | truncateds
        return _objects(observations), rewards, terminateds, truncateds, {}

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def _objects(items: list) -> np.ndarray:
    """A 1-D object array (``np.array`` of equal-length strings would make a fixed-width string array)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def env_creator(env_config: dict):
    """What ``TauGym-v0`` is registered with: a :class:`TextVectorEnv` when RLlib asks for ``num_envs``, else one env."""
    if "num_envs" in env_config:
        return TextVectorEnv(env_config, int(env_config["num_envs"]))
    return make_chat_env(env_config)


def register() -> str:
    """Register ``TauGym-v0`` with Ray Tune (idempotent); returns the name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, env_creator)
    return ENV_NAME
