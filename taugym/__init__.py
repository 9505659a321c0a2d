"""TauGym: tau-bench's tool-agent-user tasks as a Gymnasium environment.

``import taugym`` registers ``TauGym-v0``::

    import gymnasium as gym
    import taugym

    env = gym.make("TauGym-v0", config={"user_strategy": "scripted"})
"""

from __future__ import annotations

import os
from typing import Any

from gymnasium.envs.registration import register, registry

# litellm (ours, tau2's and tau-bench's) fetches its model cost map from the internet at import unless told
# not to; every import of it goes through this package first
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
__all__ = ["TauEnv", "TauGymConfig", "get_default_config", "ENV_ID", "__version__"]

ENV_ID = "TauGym-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="taugym.env:TauEnv")


def __getattr__(name: str) -> Any:
    # loaded on first use, so `import taugym.llm` loads the LLM layer alone
    if name == "TauEnv":
        from taugym.env import TauEnv

        return TauEnv
    if name in ("TauGymConfig", "get_default_config"):
        from taugym import config

        return getattr(config, name)
    raise AttributeError(f"module 'taugym' has no attribute {name!r}")
