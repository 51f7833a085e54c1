"""Adapters over the batched cores: gymnasium.Env, gymnasium VectorEnv, SB3 VecEnv, RL² trials."""

from metaopt_envs.vector.env import CoreEnv
from metaopt_envs.vector.sb3 import CoreSB3VecEnv
from metaopt_envs.vector.trial import RL2TrialCore
from metaopt_envs.vector.vector_env import CoreVectorEnv

__all__ = ["CoreEnv", "CoreSB3VecEnv", "CoreVectorEnv", "RL2TrialCore"]
