"""The chat policy in RLlib: text observations kept whole, BC from step rows, a PPO update, GRPO's advantages."""

from __future__ import annotations

import asyncio
import copy
import json

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.spaces.space_utils import unbatch

from train.algorithms import GroupAdvantages, build_config, grpo_token_loss
from train.env import TextVectorEnv, env_creator

torch.set_num_threads(1)

ENV = {
    "task_category": "retail",
    "user_strategy": "scripted",
    "max_steps": 3,
    "step_penalty": 0.1,
    "task_ids": ["retail-001", "retail-002"],
}
MODEL = {"max_action_tokens": 8, "max_prompt_tokens": 256}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_text_observations_reach_each_env_whole_through_rllibs_unbatching():
    env = TextVectorEnv(ENV, num_envs=2)
    observations, _ = env.reset(seed=0)
    for observation in unbatch(observations):  # what RLlib's env runner does with a vector env's batch
        assert isinstance(observation, str)
        chat = json.loads(observation)
        assert chat["messages"][0]["role"] == "system" and chat["task_id"] in ENV["task_ids"]
    actions = np.empty(2, dtype=object)
    actions[:] = ["[action] What is your zip code?", "[finish]"]
    observations, rewards, terminated, truncated, _ = env.step(actions)
    first, second = unbatch(observations)
    assert json.loads(first)["messages"][-2]["content"] == "What is your zip code?"
    assert terminated.tolist() == [False, True]
    observations, *_ = env.step(actions)  # the finished env starts a new episode (NEXT_STEP autoreset)
    roles = [m["role"] for m in json.loads(unbatch(observations)[1])["messages"]]
    assert roles == ["system", "assistant", "user"]  # greeting and the user's opening: a fresh conversation


def test_episodes_play_every_task_once_per_round_in_groups():
    from train.env import make_chat_env

    tasks = ["retail-001", "retail-002", "retail-005"]
    env = make_chat_env({**ENV, "task_ids": tasks, "episodes_per_task": 2})
    played = [json.loads(env.reset()[0])["task_id"] for _ in range(12)]
    groups = played[::2]
    assert played[1::2] == groups  # a group: consecutive episodes of one task
    assert sorted(groups[:3]) == sorted(groups[3:]) == tasks  # each round plays every task once
    again = make_chat_env({**ENV, "task_ids": tasks, "episodes_per_task": 2})
    assert [json.loads(again.reset()[0])["task_id"] for _ in range(12)] == played  # the seed fixes the order


def test_env_config_refuses_unknown_keys():
    with pytest.raises(ValueError, match="max_stepz"):
        env_creator({**ENV, "max_stepz": 3})
    with pytest.raises(ValueError, match="retail-999"):
        env_creator({**ENV, "task_ids": ["retail-999"]})


def _oracle_steps(out):
    from rollout.dataset import ParquetEpisodeWriter
    from rollout.episode import WorkItem, play_episode
    from taugym import TauEnv
    from taugym.agents import OraclePolicy

    env = TauEnv(task_category="retail", user_strategy="scripted")
    with ParquetEpisodeWriter(out, "bc") as writer:
        result = asyncio.run(
            play_episode(
                env,
                OraclePolicy(),
                WorkItem("retail", "retail-001", 0, 1),
                run_id="bc",
                agent_name="oracle",
                agent_model=None,
            )
        )
        writer.write(result["episode"], result["steps"])
    return len(result["steps"])


def test_behaviour_cloning_from_step_rows_lowers_the_loss(local_ray, tmp_path):
    steps = _oracle_steps(tmp_path)
    config = build_config(
        "bc",
        offline_dir=str(tmp_path),
        model_config={**MODEL, "max_action_tokens": 64},
        minibatch_size=steps,
        lr=3e-3,
    )
    algo = config.build_algo()
    try:
        losses = [algo.train()["learners"]["default_policy"]["policy_loss"] for _ in range(4)]
    finally:
        algo.stop()
    assert losses[-1] < losses[0] - 10, losses  # nats per demonstrated action


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_one_update_raises_the_log_prob_of_sampled_actions_with_positive_advantage(local_ray, algorithm):
    """PPO (GAE over its critic) and GRPO (advantages within a group of one task's episodes, token-level loss)."""
    config = build_config(
        algorithm,
        env_config={**ENV, "episodes_per_task": 2},  # GRPO's groups: the 2 episodes of one task
        model_config=MODEL,
        num_env_runners=1,
        episodes_per_iteration=2,
        minibatch_size=8,
        lr=1e-3,
    )
    algo = config.build_algo()
    try:
        episodes = algo.env_runner_group.foreach_env_runner(
            lambda runner: runner.sample(num_episodes=2, explore=True), local_env_runner=False
        )[0]
        for episode in episodes:  # the remote runner's observations arrive as whole chats
            assert all(json.loads(str(o))["messages"][0]["role"] == "system" for o in episode.get_observations())
            assert episode.get_extra_model_outputs(Columns.ACTION_LOGP).shape == (len(episode),)
        if algorithm == "grpo":  # the two episodes play one task: the first one scored, the other did not
            assert len({json.loads(str(e.get_observations(0)))["task_id"] for e in episodes}) == 1
            episodes = copy.deepcopy(episodes)  # writable copies of what the remote runner sent
            episodes[0].set_rewards(new_data=1.0, at_indices=-1)
        learner = algo.learner_group._learner
        batch = learner._learner_connector(
            rl_module=learner.module,
            batch={},
            episodes=copy.deepcopy(episodes),
            shared_data={},
            metrics=learner.metrics,
        )["default_policy"]
        module = learner.module["default_policy"]
        positive = (batch[Postprocessing.ADVANTAGES] > 0) & batch[Columns.LOSS_MASK]
        assert int(positive.sum()) > 0
        with torch.no_grad():
            before = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS].sum(-1)
        assert torch.allclose(
            before[batch[Columns.LOSS_MASK]], batch[Columns.ACTION_LOGP][batch[Columns.LOSS_MASK]], atol=1e-3
        )
        algo.learner_group.update(episodes=episodes, num_epochs=1, minibatch_size=64)
        with torch.no_grad():
            after = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS].sum(-1)
    finally:
        algo.stop()
    assert float((after - before)[positive].mean()) > 0


class _Episode:
    """The part of an episode GroupAdvantages reads."""

    def __init__(self, task, rewards):
        self.task, self.rewards = task, rewards

    def get_rewards(self):
        return np.asarray(self.rewards)

    def get_observations(self, index):
        return json.dumps({"task_id": self.task})

    def __len__(self):
        return len(self.rewards)


def test_grpo_advantages_are_normalised_within_the_episodes_of_a_task():
    episodes = [_Episode("a", [0, 1.0]), _Episode("a", [0, 0.0]), _Episode("b", [0, 0, 1.0]), _Episode("c", [1.0])]
    piece = GroupAdvantages()
    piece.single_agent_episode_iterator = lambda episodes, **kwargs: iter(episodes)
    batch = piece(rl_module=None, episodes=episodes, batch={"p": {}})["p"]
    advantages = np.asarray(batch[Postprocessing.ADVANTAGES])
    assert np.allclose(advantages[:2], 1.0, atol=1e-4) and np.allclose(advantages[2:4], -1.0, atol=1e-4)
    assert np.allclose(advantages[4:], 0.0)  # a task played once has no group to compare with


def test_grpo_weighs_each_episode_the_same_whatever_its_length():
    """A failing episode that runs long must not push down shared tokens more than a short success pushes them up."""
    episodes = [_Episode("a", [0, 1.0]), _Episode("a", [0, 0, 0, 0, 0, 0.0])]
    piece = GroupAdvantages()
    piece.single_agent_episode_iterator = lambda episodes, **kwargs: iter(episodes)
    advantages = np.asarray(piece(rl_module=None, episodes=episodes, batch={"p": {}})["p"][Postprocessing.ADVANTAGES])
    success, failure = advantages[:2], advantages[2:]
    assert len(failure) == 6 and success.min() > 0 > failure.max()
    assert abs(success.sum() + failure.sum()) < 1e-3  # the two episodes' steps weigh the same in total


def _token_loss_gradient(old, actions, advantages, shift=0.0, clip_param=0.2, length_normalized=True):
    """The gradient of GRPO's token loss with respect to the learner's token log-probs (``old + shift``)."""
    new = (torch.as_tensor(old, dtype=torch.float32) + shift).requires_grad_(True)
    loss, _ = grpo_token_loss(
        new_token_logps=new,
        old_token_logps=torch.as_tensor(old, dtype=torch.float32),
        actions=torch.as_tensor(actions),
        advantages=torch.as_tensor(advantages, dtype=torch.float32),
        clip_param=clip_param,
        length_normalized=length_normalized,
    )
    loss.backward()
    return new.grad


def test_grpo_loss_weighs_each_step_the_same_whatever_its_action_length():
    """A long action sampled in a failing episode must not outweigh a short correct one, token for token."""
    old = [[-0.1, -0.2, 0.0, 0.0], [-1.0, -2.0, -3.0, -4.0]]
    actions = [[5, 6, -1, -1], [7, 8, 9, 10]]  # a 2-token action and a 4-token one (-1 pads)
    grad = _token_loss_gradient(old, actions, advantages=[1.0, -1.0])
    # descent raises the short, positive step's tokens and lowers the long, negative one's
    assert (grad[0, :2] < 0).all() and (grad[1] > 0).all()
    assert torch.all(grad[0, 2:] == 0)  # padding gets no gradient
    # each step's tokens together carry the same weight: 1/steps, spread over its own tokens
    assert torch.allclose(grad.abs().sum(-1), torch.tensor([0.5, 0.5]))


def test_grpo_loss_stops_pushing_a_token_once_its_ratio_leaves_the_clip_range():
    old, actions = [[-1.0, -1.0]], [[3, 4]]
    inside = _token_loss_gradient(old, actions, advantages=[1.0], shift=0.1)
    beyond = _token_loss_gradient(old, actions, advantages=[1.0], shift=0.5)  # ratio e^0.5 > 1.2
    assert (inside < 0).all() and torch.all(beyond == 0)


def test_grpo_loss_without_length_normalisation_weighs_every_token_the_same():
    old, actions = [[-0.1, -0.2, 0.0, 0.0], [-1.0, -2.0, -3.0, -4.0]], [[5, 6, -1, -1], [7, 8, 9, 10]]
    grad = _token_loss_gradient(old, actions, advantages=[1.0, 1.0], length_normalized=False)
    valid = grad[torch.tensor(actions) >= 0]
    assert torch.allclose(valid, torch.full_like(valid, -1 / (2 * 4)))  # 1/steps/action budget, for every token


def test_grpo_can_learn_from_the_better_than_group_episodes_only():
    episodes = [_Episode("a", [0, 1.0]), _Episode("a", [0, 0.0])]
    piece = GroupAdvantages(negative_weight=0.0)
    piece.single_agent_episode_iterator = lambda episodes, **kwargs: iter(episodes)
    advantages = np.asarray(piece(rl_module=None, episodes=episodes, batch={"p": {}})["p"][Postprocessing.ADVANTAGES])
    assert np.allclose(advantages[:2], 1.0, atol=1e-4) and np.all(advantages[2:] == 0)


def test_grpo_options_out_of_range_are_refused():
    with pytest.raises(ValueError, match="negative_advantage_weight must be in"):
        build_config("grpo", env_config=ENV, model_config=MODEL, training={"negative_advantage_weight": -1})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_config("grpo", env_config=ENV, model_config=MODEL, training={"optimizer": "adagrad"})


def test_init_checkpoint_weights_reach_every_remote_env_runner_before_it_samples(local_ray, tmp_path):
    from train.cli import load_module_weights

    def checksum(module):
        return round(float(sum(p.double().sum() for p in module.parameters())), 6)

    source = build_config("grpo", env_config=ENV, model_config=MODEL, num_env_runners=0, seed=1).build_algo()
    try:
        source.save_to_path(str(tmp_path / "ckpt"))
        expected = checksum(source.learner_group._learner.module["default_policy"])
    finally:
        source.stop()
    algo = build_config("grpo", env_config=ENV, model_config=MODEL, num_env_runners=2, seed=0).build_algo()
    try:
        before = algo.env_runner_group.foreach_env_runner(lambda r: checksum(r.module), local_env_runner=False)
        load_module_weights(algo, tmp_path / "ckpt")
        after = algo.env_runner_group.foreach_env_runner(lambda r: checksum(r.module), local_env_runner=False)
    finally:
        algo.stop()
    assert len(after) == 2 and expected not in before  # the runners were built with other weights
    assert after == [expected, expected]
