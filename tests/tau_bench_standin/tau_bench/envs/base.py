"""The stand-in's ``Env``: v1's episode loop and scoring rule, in our own words.

* ``step`` records every action in ``actions``; a ``respond`` action goes to the
  user simulator, any other runs the tool on ``data`` (an exception becomes the
  text ``"Error: <exception>"``); a terminate tool ends the episode and scores it.
* ``calculate_reward`` hashes the data, loads fresh data, replays the task's
  actions on it through ``step`` (terminate tools skipped), hashes again, and
  requires the two hashes equal; then requires each of the task's outputs
  (lower-cased) in some ``respond`` message (lower-cased, commas removed).
* The data hash is SHA-256 of ``str()`` of the data turned into nested tuples
  with dict items sorted by key.
"""

import hashlib
import random
from typing import Any, Callable, Dict, List, Optional, Union

from tau_bench.envs.user import UserStrategy, load_user
from tau_bench.types import (
    RESPOND_ACTION_NAME,
    Action,
    EnvInfo,
    EnvResetResponse,
    EnvResponse,
    RewardActionInfo,
    RewardOutputInfo,
    RewardResult,
    Task,
)


def to_hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((key, to_hashable(value[key])) for key in sorted(value))
    if isinstance(value, list):
        return tuple(to_hashable(v) for v in value)
    if isinstance(value, set):
        return tuple(sorted(to_hashable(v) for v in value))
    return value


def consistent_hash(value: Any) -> str:
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()


class Env:
    def __init__(
        self,
        data_load_func: Callable[[], Dict[str, Any]],
        tools: List[type],
        tasks: List[Task],
        wiki: str,
        rules: List[str],
        user_strategy: Union[str, UserStrategy],
        user_model: str,
        user_provider: Optional[str] = None,
        task_index: Optional[int] = None,
    ) -> None:
        self.data_load_func = data_load_func
        self.data = data_load_func()
        self.tools_map = {tool.get_info()["function"]["name"]: tool for tool in tools}
        self.tools_info = [tool.get_info() for tool in tools]
        self.terminate_tools: List[str] = []
        self.tasks = tasks
        self.task_index = task_index if task_index is not None else random.randrange(len(tasks))
        self.task = tasks[self.task_index]
        self.wiki = wiki
        self.rules = rules
        self.user = load_user(user_strategy=user_strategy, model=user_model, provider=user_provider)
        self.actions: List[Action] = []

    def reset(self, task_index: Optional[int] = None) -> EnvResetResponse:
        self.task_index = task_index if task_index is not None else random.randrange(len(self.tasks))
        self.task = self.tasks[self.task_index]
        self.data = self.data_load_func()
        self.actions = []
        first = self.user.reset(instruction=self.task.instruction)
        return EnvResetResponse(observation=first, info=EnvInfo(task=self.task, source="user"))

    def step(self, action: Action) -> EnvResponse:
        self.actions.append(action)
        info = EnvInfo(task=self.task, source=action.name)
        done = False
        if action.name == RESPOND_ACTION_NAME:
            observation = self.user.step(action.kwargs["content"])
            info.source = "user"
            done = "###STOP###" in observation
        elif action.name in self.tools_map:
            try:
                observation = self.tools_map[action.name].invoke(data=self.data, **action.kwargs)
            except Exception as exc:
                observation = f"Error: {exc}"
            done = action.name in self.terminate_tools
        else:
            observation = f"Unknown action {action.name}"
        reward = 0.0
        if done:
            result = self.calculate_reward()
            reward = result.reward
            info.reward_info = result
            info.user_cost = self.user.get_total_cost()
        return EnvResponse(observation=observation, reward=reward, done=done, info=info)

    def get_data_hash(self) -> str:
        return consistent_hash(to_hashable(self.data))

    def calculate_reward(self) -> RewardResult:
        episode_hash = self.get_data_hash()
        self.data = self.data_load_func()
        for action in self.task.actions:
            if action.name not in self.terminate_tools:
                self.step(action)
        gold_hash = self.get_data_hash()
        reward = 1.0 if episode_hash == gold_hash else 0.0
        info: Union[RewardActionInfo, RewardOutputInfo] = RewardActionInfo(
            r_actions=episode_hash == gold_hash, gt_data_hash=gold_hash
        )
        if self.task.outputs:
            said = [
                a.kwargs["content"].lower().replace(",", "")
                for a in self.actions
                if a.name == RESPOND_ACTION_NAME
            ]
            found = {output: any(output.lower() in text for text in said) for output in self.task.outputs}
            if not all(found.values()):
                reward = 0.0
            info = RewardOutputInfo(r_outputs=1.0 if all(found.values()) else 0.0, outputs=found)
        gold = [a for a in self.task.actions if a.name != RESPOND_ACTION_NAME]
        return RewardResult(reward=reward, info=info, actions=gold)
