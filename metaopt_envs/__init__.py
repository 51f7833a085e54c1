"""metaopt-envs: Gymnasium environments for meta-optimization on batched torch cores.

Importing the package registers the ``MetaOpt-*`` ids with Gymnasium.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
from gymnasium.envs.registration import register

if TYPE_CHECKING:
    from metaopt_envs.core import BatchedCore, CoreSB3VecEnv
    from metaopt_envs.core.checker import TaskFamilyError, check_task_family

__version__ = "0.1.0"

# The cores own their episode length (``horizon``, ``budget``) and truncate by themselves, so
# nothing here repeats it as ``max_episode_steps``: ``gym.make(id, horizon=200)`` runs 200 steps.
register(
    id="MetaOpt-LR-v0",
    entry_point="metaopt_envs.lr.env:MetaOptLREnv",
    vector_entry_point="metaopt_envs.lr.env:MetaOptLRVectorEnv",
)
register(
    id="MetaOpt-Ensemble-v0",
    entry_point="metaopt_envs.ensemble.env:MetaOptEnsembleEnv",
    vector_entry_point="metaopt_envs.ensemble.env:MetaOptEnsembleVectorEnv",
)
register(
    id="MetaOpt-HPO-v0",
    entry_point="metaopt_envs.hpo.env:MetaOptHPOEnv",
    vector_entry_point="metaopt_envs.hpo.env:MetaOptHPOVectorEnv",
)
register(
    id="MetaOpt-Acquisition-v0",
    entry_point="metaopt_envs.hpo.env:MetaOptAcquisitionEnv",
    vector_entry_point="metaopt_envs.hpo.env:MetaOptAcquisitionVectorEnv",
)


def make_core(env_id: str, num_envs: int = 1, episodes_per_trial: int | None = None, **kwargs: Any) -> BatchedCore:
    """The batched core behind a registered id (wrapped for RL² trials if ``episodes_per_trial``).

    The core owns the episode length (``core.num_decisions``); there is no ``max_episode_steps`` here.
    """
    from gymnasium.envs.registration import load_env_creator

    from metaopt_envs.core import CoreVectorEnv, RL2TrialCore

    spec = gym.spec(env_id)
    entry_point = spec.vector_entry_point
    creator = load_env_creator(entry_point) if spec.id.startswith("MetaOpt-") and isinstance(entry_point, str) else None
    if not (isinstance(creator, type) and issubclass(creator, CoreVectorEnv)):
        raise ValueError(f"env_id must be a registered MetaOpt-* id, got {env_id!r}")
    core_class = creator.core_class
    if "max_episode_steps" in kwargs:
        raise ValueError(
            f"max_episode_steps is not an argument of the {env_id} core: the core ends episodes by itself "
            f"(set the episode length with its own argument, e.g. horizon= or budget=)"
        )
    core = core_class(num_envs=num_envs, **{**spec.kwargs, **kwargs})
    return RL2TrialCore(core, episodes_per_trial) if episodes_per_trial is not None else core


def make_sb3_vec_env(
    env_id: str, num_envs: int = 1, seed: int | None = None, episodes_per_trial: int | None = None, **kwargs: Any
) -> CoreSB3VecEnv:
    """A Stable-Baselines3 VecEnv of ``num_envs`` problems on one batched core.

    ``seed`` seeds row ``i`` with ``seed + i`` at the first ``reset()``;
    ``episodes_per_trial=K`` turns on RL² trial mode; ``kwargs`` are the env's arguments.
    """
    from metaopt_envs.core import CoreSB3VecEnv

    vec_env = CoreSB3VecEnv(make_core(env_id, num_envs, episodes_per_trial, **kwargs))
    if seed is not None:
        vec_env.seed(seed)
    return vec_env


__all__ = ["TaskFamilyError", "check_task_family", "make_core", "make_sb3_vec_env"]


def __getattr__(name: str) -> Any:
    # Registration stays import-free (as Gymnasium's own registry): torch loads only when it is needed.
    if name in ("check_task_family", "TaskFamilyError"):
        from metaopt_envs.core import checker

        return getattr(checker, name)
    raise AttributeError(f"module 'metaopt_envs' has no attribute {name!r}")
