"""The stream-family protocol: seeded samplers of batched time series with regime switches.

A :class:`StreamFamily` (a :class:`metaopt_envs.core.family.TaskFamily` of kind
``"ensemble"``) samples in two steps, because two keys split the randomness:

* ``sample(keys, split) -> TaskData``: the **task key** fixes the *process*
  of each of ``n`` tasks: the number of regimes and each regime's parameters
  (for real data, the series pool and each series' rescaling);
* ``realise(tasks, episode_keys, length) -> StreamData``: the **episode key**
  fixes one realisation of each process: noise, switch times, crops. Two
  calls on the same tasks with different episode keys are two episodes of the
  same tasks (an RL² trial).

``sample_stream(task_keys, episode_keys, length, split)`` does both and
returns the task's public fields with the episode's. Every task carries
(:data:`TASK_FIELDS`):

==================  ===========================  ==============================================
field               shape, dtype                 meaning
==================  ===========================  ==============================================
``family``          ``(n,)`` int64               index into :meth:`StreamFamily.families`
``num_regimes``     ``(n,)`` int64               ``R``, the task's number of regimes
``regime_params``   ``(n, max_regimes, P)``      each regime's parameters, columns named by
                    float32                      ``param_names`` (zero for regimes ``>= R``)
==================  ===========================  ==============================================

and families add what their episodes need (the built-ins: ``stream_key``, the
task's key that episodes fold their episode key into). Every episode carries
(:data:`EPISODE_FIELDS`):

==================  ===========================  ==============================================
``values``          ``(n, length)`` float32      the series
``regime``          ``(n, length)`` int64        regime active at each step, in ``0..R-1``;
                                                 contiguous segments, consecutive segments
                                                 in different regimes
==================  ===========================  ==============================================

and the family's ``extra_fields`` (the real-data family adds ``series``, the
dataset series each step was cropped from).

The split is folded into the task key (:attr:`StreamFamily.split_salts`), so
"train" and "test" draw unrelated tasks from one seed. All randomness comes
from :mod:`metaopt_envs.core.rng`: row ``i`` of a batch equals sampling that
row alone, and no global RNG is touched.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import TaskData, TaskFamily, check_keys, check_split
from metaopt_envs.core.mixture import TaskMixture

StreamData = dict[str, torch.Tensor]
"""Plain stream data: every tensor has the number of series as leading dimension."""

TASK_FIELDS: tuple[str, ...] = ("family", "num_regimes", "regime_params")
"""The fields every task (a process) carries."""

EPISODE_FIELDS: tuple[str, ...] = ("values", "regime")
"""The fields every episode carries, besides the family's ``extra_fields``."""


def check_length(length: int) -> int:
    """``length`` must be an int >= 1 (the number of time steps)."""
    return checks.integer("length", length, note="time steps")


def check_episode_keys(tasks: TaskData, episode_keys: torch.Tensor, label: str = "episode_keys") -> None:
    """``episode_keys`` must be 1-D int64, one per task, on the tasks' device."""
    check_keys(episode_keys, label)
    n, device = tasks["num_regimes"].shape[0], tasks["num_regimes"].device
    if episode_keys.shape[0] != n or episode_keys.device != device:
        raise ValueError(
            f"task_keys and {label} must have one shape and device, got ({n},) on {device} and "
            f"{tuple(episode_keys.shape)} on {episode_keys.device}"
        )


def episode_stream(task: torch.Tensor, episode_keys: torch.Tensor) -> torch.Tensor:
    """The key of one realisation of a task (derived from the task stream, so two tasks
    that share an episode key still draw unrelated noise)."""
    return rng.fold(task, episode_keys)


def uniform_count(key: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``(n,)`` integers uniform in ``low..high`` (inclusive)."""
    return low + rng.randint(key, high - low + 1)


def geometric_segments(key: torch.Tensor, length: int, min_length: int, mean_length: float) -> torch.Tensor:
    """Segment index ``(n, length)`` int64 of random switch times.

    Segment lengths are ``min_length`` plus a geometric number of steps with
    mean ``mean_length - min_length`` (memoryless after the minimum); a last
    segment that would be shorter than ``min_length`` is merged into the one
    before, so every segment is at least ``min_length`` long (or the whole
    series, if it is shorter).
    """
    n, device = key.shape[0], key.device
    num = math.ceil(length / min_length) + 1
    extra_mean = max(mean_length - min_length, 0.0)
    u = rng.uniform(key, (num,), torch.float64)
    if extra_mean > 0:
        # Inverse CDF of the geometric law on {0, 1, ...} with mean extra_mean.
        q = extra_mean / (1.0 + extra_mean)  # failure probability
        extra = torch.floor(torch.log1p(-u) / math.log(q)).clamp(max=20 * extra_mean + 1)
    else:
        extra = torch.zeros_like(u)
    ends = (min_length + extra.to(torch.int64)).cumsum(1)  # (n, num): first step of segment j + 1
    ends = torch.where(ends <= length - min_length, ends, length + 1)  # a suffix: still sorted
    steps = torch.arange(length, device=device).expand(n, length).contiguous()
    return torch.searchsorted(ends, steps, right=True)


def regime_sequence(key: torch.Tensor, num_regimes: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Regime of each segment, ``(n, num_segments)`` int64 in ``0..R-1``: the first uniform,
    each next one uniform among the ``R - 1`` others (the same regime if ``R = 1``)."""
    first = rng.randint(rng.fold(key, 0), num_regimes)
    step = 1 + rng.randint(rng.fold(key, 1), (num_regimes - 1).clamp(min=1), (num_segments,))
    step[:, 0] = 0
    return (first.unsqueeze(-1) + step.cumsum(1)) % num_regimes.unsqueeze(-1)


def stable_ar2(key: torch.Tensor, shape: tuple[int, ...], max_modulus: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``(phi1, phi2)`` of stationary AR(2) processes, each ``(n, *shape)`` float32.

    ``x_t = phi1 x_{t-1} + phi2 x_{t-2} + noise``; the roots of the characteristic
    polynomial ``z^2 - phi1 z - phi2`` have modulus below ``max_modulus``: half the
    time a complex pair (modulus ``max_modulus * sqrt(U)``, angle ``U(0, pi)``:
    oscillations of any period), otherwise two real roots uniform in
    ``(-max_modulus, max_modulus)``.
    """
    u = rng.uniform(key, (*shape, 4), torch.float64)
    complex_pair = u[..., 0] < 0.5
    modulus = max_modulus * u[..., 1].sqrt()
    angle = math.pi * u[..., 2]
    root_a = max_modulus * (2.0 * u[..., 1] - 1.0)
    root_b = max_modulus * (2.0 * u[..., 3] - 1.0)
    phi1 = torch.where(complex_pair, 2.0 * modulus * torch.cos(angle), root_a + root_b)
    phi2 = torch.where(complex_pair, -modulus * modulus, -root_a * root_b)
    return phi1.to(torch.float32), phi2.to(torch.float32)


def ar2_recursion(phi1: torch.Tensor, phi2: torch.Tensor, innovations: torch.Tensor, burn_in: int = 0) -> torch.Tensor:
    """``x_t = phi1_t x_{t-1} + phi2_t x_{t-2} + e_t`` from ``x = 0``, all ``(n, L)``; returns
    ``(n, L - burn_in)``: the first ``burn_in`` steps only warm the state up.

    A Python loop over time on contiguous ``(n,)`` rows (time-major copies).
    """
    total = innovations.shape[1]
    p1, p2, e = (a.t().contiguous() for a in (phi1, phi2, innovations))
    out = torch.empty_like(e)
    prev2 = torch.zeros_like(e[0])
    prev1 = torch.zeros_like(e[0])
    for step in range(total):
        x = torch.addcmul(torch.addcmul(e[step], p1[step], prev1), p2[step], prev2)
        out[step] = x
        prev2, prev1 = prev1, x
    return out[burn_in:].t().contiguous()


class StreamFamily(TaskFamily):
    """A distribution of batched regime-switching time series with train and test splits
    (``MetaOpt-Ensemble-v0``).

    Subclasses set ``name``, ``param_names`` (the columns of ``regime_params``),
    ``max_regimes`` and, if their episodes carry more fields, ``extra_fields``;
    and implement :meth:`sample` (the processes) and :meth:`realise` (episodes).
    """

    kind: ClassVar[str] = "ensemble"
    split_salts = {"train": 0x7E1, "test": 0x7E2}
    param_names: tuple[str, ...] = ()
    max_regimes: int = 1
    extra_fields: dict[str, int] = {}
    """Extra ``(n, length)`` int64 episode fields this family returns, with the value a
    :class:`StreamMixture` fills in for rows of other families."""

    @abstractmethod
    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        """Draw the processes of ``n = len(keys)`` tasks from the ``split`` ("train" or "test")
        distribution, fixed by ``keys: (n,)`` int64: at least :data:`TASK_FIELDS`."""

    @abstractmethod
    def realise(self, tasks: TaskData, episode_keys: torch.Tensor, length: int) -> StreamData:
        """One episode of ``length`` steps of each of the ``n`` processes ``tasks``, realised with
        ``episode_keys: (n,)`` int64: :data:`EPISODE_FIELDS` and the ``extra_fields``."""

    def family_index(self, tasks: TaskData) -> torch.Tensor:
        return tasks["family"]

    def sample_stream(self, task_keys: torch.Tensor, episode_keys: torch.Tensor, length: int, split: str) -> StreamData:
        """``n = len(task_keys)`` series of ``length`` steps from the ``split`` distribution: the
        processes fixed by ``task_keys: (n,)`` int64 (:meth:`sample`), realised with
        ``episode_keys: (n,)`` int64 (:meth:`realise`). Returns the :data:`TASK_FIELDS` of the
        tasks and the episode's fields."""
        check_split(split)
        check_length(length)
        check_keys(task_keys, "task_keys")
        check_keys(episode_keys, "episode_keys")
        if task_keys.shape != episode_keys.shape or task_keys.device != episode_keys.device:
            raise ValueError(
                f"task_keys and episode_keys must have one shape and device, got {tuple(task_keys.shape)} on "
                f"{task_keys.device} and {tuple(episode_keys.shape)} on {episode_keys.device}"
            )
        tasks = self.sample(task_keys, split)
        return {**{name: tasks[name] for name in TASK_FIELDS}, **self.realise(tasks, episode_keys, length)}


class StreamMixture(TaskMixture["StreamFamily"], StreamFamily):
    """Draws each task's family from ``members`` with probabilities ``weights`` (uniform by default).

    The family is a property of the task (drawn from the task key), so every
    episode of a task comes from the same member, and ``family`` indexes
    :meth:`families` (the members' names). ``regime_params`` is padded with
    zeros to the widest member (its columns mean ``members[family].param_names``);
    episode fields only some members produce (their ``extra_fields``, e.g. the
    real family's ``series``) hold the declared fill value (-1) in other rows.
    ``members`` are names or instances (default: the synthetic families).
    """

    default_members = ("switching_ar", "regimes")
    shared_fields = {"num_regimes": 0, "regime_params": 0.0}
    _salt = 0x5A0

    def __init__(
        self, members: Sequence[str | StreamFamily] | None = None, weights: Sequence[float] | None = None
    ) -> None:
        super().__init__(members, weights)
        self.max_regimes = max(m.max_regimes for m in self.members)
        self.param_names = tuple(
            f"p{i}" for i in range(max(len(m.param_names) for m in self.members))
        )  # column meaning depends on the row's family: see members[f].param_names
        self.extra_fields = {}
        for m in self.members:
            self.extra_fields.update(m.extra_fields)

    def realise(self, tasks: TaskData, episode_keys: torch.Tensor, length: int) -> StreamData:
        check_length(length)
        check_episode_keys(tasks, episode_keys)
        family = tasks["family"]
        n, device = family.shape[0], family.device
        out: StreamData = {
            "values": torch.zeros(n, length, dtype=torch.float32, device=device),
            "regime": torch.zeros(n, length, dtype=torch.int64, device=device),
        }
        for name, fill in self.extra_fields.items():
            out[name] = torch.full((n, length), fill, dtype=torch.int64, device=device)
        for index, member, rows in self.rows_by_member(family):
            sub = member.realise(self.member_tasks(tasks, index, rows), episode_keys[rows], length)
            for name in ("values", "regime", *member.extra_fields):
                out[name][rows] = sub[name]
        return out
