"""The stream-family protocol: seeded samplers of batched time series with regime switches.

A :class:`StreamFamily` draws ``n`` series at once with
``sample(task_keys, episode_keys, length, split)`` and returns plain data
(:data:`StreamData`, a ``dict`` of tensors whose leading dimension is ``n``):

==================  ===========================  ==============================================
field               shape, dtype                 meaning
==================  ===========================  ==============================================
``values``          ``(n, length)`` float32      the series
``regime``          ``(n, length)`` int64        regime active at each step, in ``0..R-1``;
                                                 contiguous segments, consecutive segments
                                                 in different regimes
``family``          ``(n,)`` int64               index into :meth:`StreamFamily.families`
``num_regimes``     ``(n,)`` int64               ``R``, the task's number of regimes
``regime_params``   ``(n, max_regimes, P)``      each regime's parameters, columns named by
                    float32                      ``param_names`` (zero for regimes ``>= R``)
==================  ===========================  ==============================================

Families may add fields (the real-data family adds ``series``, the dataset
series each step was cropped from).

Two keys split the randomness. The **task key** fixes the *process*: the
number of regimes and each regime's parameters (for real data, the series
pool and each series' rescaling). The **episode key** fixes one realisation
of it: noise, switch times, crops. Two calls with the same task keys and
different episode keys are two episodes of the same tasks (an RL² trial).
The split is folded into the task key, so "train" and "test" draw unrelated
tasks from one seed. All randomness comes from :mod:`metaopt_envs.core.rng`: row
``i`` of a batch equals sampling that row alone, and no global RNG is touched.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from metaopt_envs.core import rng
from metaopt_envs.lr.families.base import check_split

StreamData = dict[str, torch.Tensor]
"""Plain stream data: every tensor has the number of series as leading dimension."""

_SPLIT_SALT = {"train": 0x7E1, "test": 0x7E2}


def check_length(length: int) -> int:
    """``length`` must be a positive integer (the number of time steps)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    return length


def check_keys(task_keys: torch.Tensor, episode_keys: torch.Tensor) -> None:
    """Both keys must be 1-D int64 tensors of one length, on one device."""
    for label, keys in (("task_keys", task_keys), ("episode_keys", episode_keys)):
        if not isinstance(keys, torch.Tensor) or keys.dim() != 1 or keys.dtype != torch.int64:
            raise ValueError(
                f"{label} must be a 1-D int64 tensor, got {getattr(keys, 'dtype', type(keys).__name__)} "
                f"of shape {tuple(getattr(keys, 'shape', ()))}"
            )
    if task_keys.shape != episode_keys.shape or task_keys.device != episode_keys.device:
        raise ValueError(
            f"task_keys and episode_keys must have one shape and device, got {tuple(task_keys.shape)} on "
            f"{task_keys.device} and {tuple(episode_keys.shape)} on {episode_keys.device}"
        )


def check_range(label: str, value: tuple[int, int], low: int = 1) -> tuple[int, int]:
    """An inclusive integer range ``(lo, hi)`` with ``low <= lo <= hi``."""
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a pair (lo, hi) of integers, got {value!r}") from None
    if not low <= lo <= hi:
        raise ValueError(f"{label} must satisfy {low} <= lo <= hi, got {value!r}")
    return lo, hi


def task_stream(task_keys: torch.Tensor, split: str, salt: int) -> torch.Tensor:
    """The key of a task's process: the user's task key, the split and the family's salt."""
    return rng.fold(task_keys, _SPLIT_SALT[check_split(split)], salt)


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


def ar2_recursion(
    phi1: torch.Tensor, phi2: torch.Tensor, innovations: torch.Tensor, burn_in: int = 0
) -> torch.Tensor:
    """``x_t = phi1_t x_{t-1} + phi2_t x_{t-2} + e_t`` from ``x = 0``, all ``(n, L)``; returns
    ``(n, L - burn_in)``: the first ``burn_in`` steps only warm the state up.

    A Python loop over time on contiguous ``(n,)`` rows (time-major copies).
    """
    n, total = innovations.shape
    p1, p2, e = (a.t().contiguous() for a in (phi1, phi2, innovations))
    out = torch.empty_like(e)
    prev2 = torch.zeros_like(e[0])
    prev1 = torch.zeros_like(e[0])
    for step in range(total):
        x = torch.addcmul(torch.addcmul(e[step], p1[step], prev1), p2[step], prev2)
        out[step] = x
        prev2, prev1 = prev1, x
    return out[burn_in:].t().contiguous()


class StreamFamily(ABC):
    """A distribution of batched regime-switching time series with train and test splits.

    Subclasses set ``name``, ``param_names`` (the columns of ``regime_params``),
    ``max_regimes`` and, if they return more fields, ``extra_fields``; and implement
    :meth:`sample`.
    """

    name: str = "custom"
    param_names: tuple[str, ...] = ()
    max_regimes: int = 1
    extra_fields: dict[str, int] = {}
    """Extra ``(n, length)`` int64 fields this family returns, with the value a
    :class:`StreamMixture` fills in for rows of other families."""

    @abstractmethod
    def sample(self, task_keys: torch.Tensor, episode_keys: torch.Tensor, length: int, split: str) -> StreamData:
        """Draw ``n = len(task_keys)`` series of ``length`` steps from the ``split`` ("train" or
        "test") distribution: the processes fixed by ``task_keys: (n,)`` int64, realised with
        ``episode_keys: (n,)`` int64."""

    def families(self) -> tuple[str, ...]:
        """Names of the families this sampler draws from (itself, for a single family)."""
        return (self.name,)

    def to(self, device: torch.device | str) -> StreamFamily:
        """Move any tensors the family holds (bundled data) to ``device``."""
        return self

    def _check(self, task_keys: torch.Tensor, episode_keys: torch.Tensor, length: int, split: str) -> None:
        check_split(split)
        check_length(length)
        check_keys(task_keys, episode_keys)


class StreamMixture(StreamFamily):
    """Draws each task's family from ``members`` with probabilities ``weights`` (uniform by default).

    The family is a property of the task (drawn from the task key), so every
    episode of a task comes from the same member, and ``family`` indexes
    :meth:`families` (the members' names). ``regime_params`` is padded with
    zeros to the widest member (its columns mean ``members[family].param_names``);
    fields only some members produce (their ``extra_fields``, e.g. the real
    family's ``series``) hold the declared fill value (-1) in other rows.
    ``members`` are names or instances (default: the synthetic families).
    """

    name = "mixture"
    _salt = 0x5A0

    def __init__(self, members=("switching_ar", "regimes"), weights: list[float] | None = None) -> None:
        from metaopt_envs.ensemble.families import make_stream_family  # the registry imports this module

        if members is None:
            members = ("switching_ar", "regimes")
        if isinstance(members, (str, StreamFamily)) or len(members) == 0:
            raise ValueError(f"members must be a non-empty list of stream family names or instances, got {members!r}")
        self.members = [make_stream_family(m) for m in members]
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"weights must be {len(self.members)} non-negative numbers with a positive sum, got {weights}"
            )
        self.cumulative = torch.tensor(weights, dtype=torch.float64).cumsum(0) / sum(weights)
        self.max_regimes = max(m.max_regimes for m in self.members)
        self.param_names = tuple(
            f"p{i}" for i in range(max(len(m.param_names) for m in self.members))
        )  # column meaning depends on the row's family: see members[f].param_names
        self.extra_fields = {}
        for m in self.members:
            self.extra_fields.update(m.extra_fields)

    def families(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def to(self, device: torch.device | str) -> StreamMixture:
        self.members = [m.to(device) for m in self.members]
        return self

    def sample(self, task_keys: torch.Tensor, episode_keys: torch.Tensor, length: int, split: str) -> StreamData:
        self._check(task_keys, episode_keys, length, split)
        n, device = task_keys.shape[0], task_keys.device
        u = rng.uniform(task_stream(task_keys, split, self._salt), (), torch.float64)
        family = torch.searchsorted(self.cumulative.to(device), u.unsqueeze(-1), right=True).squeeze(-1)
        family = family.clamp(max=len(self.members) - 1)
        out: StreamData = {
            "values": torch.zeros(n, length, dtype=torch.float32, device=device),
            "regime": torch.zeros(n, length, dtype=torch.int64, device=device),
            "family": family,
            "num_regimes": torch.zeros(n, dtype=torch.int64, device=device),
            "regime_params": torch.zeros(
                n, self.max_regimes, len(self.param_names), dtype=torch.float32, device=device
            ),
        }
        for name, fill in self.extra_fields.items():
            out[name] = torch.full((n, length), fill, dtype=torch.int64, device=device)
        for index, member in enumerate(self.members):
            rows = (family == index).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            sub = member.sample(task_keys[rows], episode_keys[rows], length, split)
            for name in ("values", "regime", "num_regimes", *member.extra_fields):
                out[name][rows] = sub[name]
            params = sub["regime_params"]
            out["regime_params"][rows, : params.shape[1], : params.shape[2]] = params
        return out
