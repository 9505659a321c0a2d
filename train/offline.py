"""Behaviour cloning from the ``steps/`` Parquet through RLlib's offline API.

The recipe (``offline_data_kwargs``), each part for a reason found on Ray 2.60:

* ``prelearner_class=StepRowsPreLearner``: RLlib's ``OfflinePreLearner``
  turns every column it does not map into an extra model output and, with
  its default ``input_compress_columns``, unpacks string observations as
  compressed blobs. Ours turns a step row's ``prompt`` + ``tools`` into the
  observation (the chat as JSON, as :class:`train.env.ChatObservation`
  gives online) and its ``completion`` into the action's token ids (the
  assistant turn as the chat template writes it), then runs the learner
  connector as RLlib's does.
* ``input_read_method_kwargs``: only the columns it needs, read by one task
  (Ray Data's default read takes every CPU; on a small machine the
  pre-learner then never gets one and the job hangs without an error).
* ``input_compress_columns=[]``: nothing is compressed.
* ``map_batches_kwargs={"concurrency": 1}``: one pre-learner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.offline.offline_prelearner import OfflinePreLearner

#: The ``steps/`` columns behaviour cloning reads.
STEP_COLUMNS = [
    "episode_id",
    "task_id",
    "step_index",
    "prompt",
    "completion",
    "tools",
    "reward",
    "terminated",
    "truncated",
]


def plain(value: Any) -> Any:
    """Ray Data's numpy batches as plain Python (object arrays of dicts become lists of dicts)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def step_files(out_dir: str | Path) -> list[str]:
    """The published ``steps/`` Parquet files of a rollout output folder (what its manifest names)."""
    from rollout.dataset import STEPS_DIR, published_files

    paths = published_files(out_dir, STEPS_DIR)
    if not paths:
        raise ValueError(f"{out_dir} holds no published step rows; give a rollout output folder (with steps/)")
    return paths


def offline_data_kwargs(out_dir: str | Path) -> dict:
    """``AlgorithmConfig.offline_data(**...)`` reading the step rows of ``out_dir`` (see the module docstring)."""
    return {
        "input_": step_files(out_dir),
        "input_read_method": "read_parquet",
        "input_read_method_kwargs": {"columns": STEP_COLUMNS, "concurrency": 1, "partitioning": None},
        "input_compress_columns": [],
        "prelearner_class": StepRowsPreLearner,
        "map_batches_kwargs": {"concurrency": 1},
        "dataset_num_iters_per_learner": 1,
    }


class StepRowsPreLearner(OfflinePreLearner):
    """Step rows to one-step episodes: the chat as the observation, the demonstrated turn's tokens as the action."""

    def _map_to_episodes(self, batch: dict, to_numpy: bool = False, **kwargs: Any) -> dict:
        module = self._module[next(iter(self._module.keys()))]
        policy = module.policy
        width = policy.max_action_tokens
        episodes = []
        for i in range(len(batch["prompt"])):
            prompt = plain(batch["prompt"][i])
            completion = plain(batch["completion"][i])
            tools = plain(batch["tools"][i])
            tools = json.loads(tools) if isinstance(tools, (str, bytes)) else tools
            observation = json.dumps(
                {"task_id": str(batch["task_id"][i]), "messages": prompt, "tools": tools}, ensure_ascii=False
            )
            action = np.full(width, -1, dtype=np.int64)
            ids = policy.action_ids(prompt, completion[0], tools)
            action[: len(ids)] = ids
            episodes.append(
                SingleAgentEpisode(
                    id_=f"{batch['episode_id'][i]}:{int(batch['step_index'][i])}",
                    observations=[observation, observation],
                    actions=[action],
                    rewards=[float(batch["reward"][i])],
                    terminated=bool(batch["terminated"][i]),
                    truncated=bool(batch["truncated"][i]),
                    len_lookback_buffer=0,
                )
            )
        return {"episodes": episodes}
