"""What every environment family shares.

* :mod:`~metaopt_envs.core.base`: the batched-core contract (``reset_rows`` / ``observe`` / ``step``),
  row-key bookkeeping and seeding;
* :mod:`~metaopt_envs.core.checks`: the argument, seed, device and action checks of every core and adapter;
* :mod:`~metaopt_envs.core.rng`: counter-based per-row random streams;
* :mod:`~metaopt_envs.core.family`: the task-family protocol (``TaskFamily``, the base of every
  family of every kind), plain task data, splits and row helpers; :mod:`~metaopt_envs.core.registry`
  (families by kind and name, ``make_task_family``), :mod:`~metaopt_envs.core.mixture` (the one
  mixture) and :mod:`~metaopt_envs.core.checker` (``check_task_family``);
* :mod:`~metaopt_envs.core.trial`: the RL² trial wrapper;
* the adapters: :mod:`~metaopt_envs.core.env` (``gymnasium.Env``), :mod:`~metaopt_envs.core.vector_env`
  (``gymnasium.vector.VectorEnv``, same-step autoreset) and :mod:`~metaopt_envs.core.sb3` (SB3 ``VecEnv``).
"""

from metaopt_envs.core import allocator, checks, rng
from metaopt_envs.core.base import BatchedCore, StepResult, resolve_device, seeds_to_keys
from metaopt_envs.core.env import CoreEnv
from metaopt_envs.core.sb3 import CoreSB3VecEnv
from metaopt_envs.core.trial import RL2TrialCore
from metaopt_envs.core.vector_env import CoreVectorEnv

__all__ = [
    "BatchedCore",
    "CoreEnv",
    "CoreSB3VecEnv",
    "CoreVectorEnv",
    "RL2TrialCore",
    "StepResult",
    "allocator",
    "checks",
    "resolve_device",
    "rng",
    "seeds_to_keys",
]
