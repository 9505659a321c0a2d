"""TauGym: tau-bench's tool-agent-user tasks as a Gymnasium environment.

``import taugym`` registers ``TauGym-v0``::

    import gymnasium as gym
    import taugym

    env = gym.make("TauGym-v0", config={"user_strategy": "scripted"})
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from taugym.config import TauGymConfig, get_default_config
from taugym.env import TauEnv

__version__ = "0.1.0"
__all__ = ["TauEnv", "TauGymConfig", "get_default_config", "ENV_ID", "__version__"]

ENV_ID = "TauGym-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="taugym.env:TauEnv")
