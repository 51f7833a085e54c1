"""The contract every batched environment core keeps, and what its adapters rely on.

A core holds the state of ``num_envs`` environments as tensors and advances
all of them with one set of tensor operations. It owns the episode length
(``num_decisions``) and ends episodes itself, but it never resets by itself:
the adapters (:mod:`metaopt_envs.core`) decide when rows reset (autoreset,
RL² trials) and call :meth:`BatchedCore.reset_rows`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple, Protocol

import gymnasium as gym
import numpy as np
import torch

from metaopt_envs.core import checks, rng


class StepResult(NamedTuple):
    """What a core returns from ``step``; every field has leading dimension ``num_envs``.

    ``observation``: (B, obs_dim) float32; ``reward``: (B,) float32;
    ``terminated`` and ``truncated``: (B,) bool; ``info``: name -> (B, ...) tensor.
    """

    observation: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, torch.Tensor]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; see :func:`metaopt_envs.core.checks.device`."""
    return checks.device(device)


def seeds_to_keys(seed: int | list[int] | None, num_envs: int, device: torch.device) -> torch.Tensor:
    """Row keys ``(B,)`` for ``reset(seed=...)``.

    An int seeds row ``i`` with ``seed + i`` (Gymnasium's convention, so row
    ``i`` equals a single env reset with ``seed + i``); a list gives each row
    its seed; ``None`` draws fresh entropy from the operating system. Seeds are ints in
    [0, 2**63 - 1] (row keys are int64), so an int seed of B rows is at most 2**63 - B.
    """
    if seed is None:
        seeds = np.random.SeedSequence().generate_state(num_envs, dtype=np.uint32).astype(np.int64).tolist()
    else:
        seeds = checks.seeds(seed, num_envs)
    return rng.keys_from_seeds(seeds, device)


class BatchedCore(ABC):
    """Base of the batched cores: spaces, device, and the reset/step contract.

    A core is the one owner of its episode length: ``num_decisions`` steps after a reset a row
    reports ``truncated`` (unless it terminated earlier: then ``terminated`` only, never both).
    Nothing registered with Gymnasium repeats that number.

    A family core is built as ``Core(num_envs=B, **env_kwargs)`` (see :class:`CoreConstructor`);
    wrappers such as :class:`~metaopt_envs.core.trial.RL2TrialCore` take a core instead.
    """

    num_envs: int
    num_decisions: int
    device: torch.device
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Box
    observation_names: tuple[str, ...]

    # Keyed cores (every family core) keep these per-row (B,) int64 counters, set in their
    # constructor and kept by :meth:`advance_keys`; a wrapper reads them through to its core.
    row_key: torch.Tensor
    """The key of the row's last seed (``reset(seed=...)``; rows ``0..B-1`` of seed 0 at construction)."""
    episode_index: torch.Tensor
    """Episodes (tasks) the row has started since it was last seeded."""
    inner_episode: torch.Tensor
    """Inner episodes on the current task (RL² trials); 0 on a new task."""
    task_key: torch.Tensor
    """The current task's key: a pure function of (row key, split, episode index)."""

    @property
    def unwrapped(self) -> BatchedCore:
        """The family's own core under any wrappers (an RL² trial); the core itself here.

        The one way to reach it, as Gymnasium's ``Env.unwrapped``: never ``getattr(core, "core", core)``.
        """
        return self

    def advance_keys(
        self,
        index: torch.Tensor,
        keys: torch.Tensor | None,
        same_task: bool,
        split_id: int,
        task_key: torch.Tensor | None = None,
    ) -> bool:
        """Key bookkeeping of a reset of rows ``index``; True where they draw new tasks.

        ``keys`` reseeds the rows (episode counters restart); ``same_task`` counts another inner
        episode on the current task; otherwise each row moves to its next episode. A row's task
        key is a pure function of (row key, split, episode index), so row ``i`` of a batch and a
        single env seeded alike draw the same tasks. ``task_key`` (the rows' new task keys, already
        known to the caller: that same function of their new counters) saves hashing them again.
        """
        if keys is not None:
            self.row_key[index] = keys[index]
            self.episode_index[index] = 0
            self.inner_episode[index] = 0
        elif same_task:
            self.inner_episode[index] += 1
        else:
            self.episode_index[index] += 1
            self.inner_episode[index] = 0
        if keys is not None or not same_task:
            if task_key is None:
                task_key = rng.fold(self.row_key[index], split_id, self.episode_index[index])
            self.task_key[index] = task_key
            return True
        return False

    @abstractmethod
    def reset_rows(self, rows: torch.Tensor, keys: torch.Tensor | None = None, same_task: bool = False) -> None:
        """Start a new episode in the rows where ``rows: (B,) bool`` is set.

        ``keys: (B,)`` reseeds those rows; otherwise a row draws its next task
        from its own stream. ``same_task`` keeps each row's task and draws only
        a new initialization (the next inner episode of an RL² trial).
        """

    @abstractmethod
    def observe(self) -> torch.Tensor:
        """The current observation ``(B, obs_dim)`` float32."""

    @abstractmethod
    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Advance every row by one decision; ``actions: (B, action_dim)``, a tensor or an array.

        The core checks and clips them itself (:func:`metaopt_envs.core.checks.actions`).
        """


class CoreConstructor(Protocol):
    """How the adapters and :func:`metaopt_envs.make_core` build a family core: ``Core(num_envs=B, **env_kwargs)``.

    A family core's class is one: it takes ``num_envs`` by keyword and every other argument (the env's
    arguments) has a default. ``CoreEnv.core_class`` and ``CoreVectorEnv.core_class`` are typed by it.
    """

    def __call__(self, *, num_envs: int) -> BatchedCore: ...
