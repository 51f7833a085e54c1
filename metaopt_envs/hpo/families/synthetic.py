"""Synthetic objectives: shifted and scaled Branin and Hartmann functions, and Gaussian-process samples.

**Benchmark functions** (``"branin"``, ``"hartmann3"``, ``"hartmann6"``). A point
``x`` of ``[-1, 1]^d`` is shifted by the task's offset ``delta`` and clamped
back into the cube, ``z = clamp(x - delta, -1, 1)``, then mapped affinely onto
the function's usual domain (Branin: ``[-5, 10] x [0, 15]``; Hartmann:
``[0, 1]^d``), and the value is rescaled::

    f(x) = scale * g(domain(clamp(x - delta, -1, 1))) + offset

with ``scale`` log-uniform in ``scale_range`` (default 0.1..10) and ``offset ~
N(0, offset_std^2)`` (default 1). Each coordinate of ``delta`` is uniform in
``[-2 max_shift, 2 max_shift]`` (default ``max_shift = 0.15``, 15% of the
domain's width) intersected with the offsets that keep one known global
minimizer ``z*`` inside the cube (``x* = z* + delta`` in ``[-1, 1]^d``). Every
``z`` the clamp produces lies in the domain, and ``z*`` is reached, so the
minimum is exactly ``f_opt = scale * g_min + offset``, attained at ``x_opt =
x*`` (Branin's designated minimizer is ``(pi, 2.275)``, the other two may fall
outside the shifted window). The clamp makes ``f`` constant along the
coordinates it cuts, near one side of the cube.

Known minima (``g_min``, for the coefficients below, refined in float64 with
BFGS to a gradient below 1e-12): Branin 10 / (8 pi) = 0.397887357729739 at
(pi, 2.275), (-pi, 12.275) and (9.42478, 2.475); Hartmann-3
-3.862779787332663 at (0.1145889, 0.5556489, 0.852547) (often quoted as
-3.86278214782076, which is 2.4e-6 below the minimum of these coefficients);
Hartmann-6 -3.322368011415515 at (0.2016895, 0.1500107, 0.476874, 0.2753324,
0.3116516, 0.6573005).

**Gaussian-process samples** (``"gp"``): see :class:`GPFamily`.
"""

from __future__ import annotations

import math

import torch

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import check_range
from metaopt_envs.hpo.families.base import (
    ObjectiveFamily,
    ObjectiveTasks,
    dim_mask,
    reference_values,
    uniform_points,
)


class _ShiftedBenchmark(ObjectiveFamily):
    """A classic test function with a known minimum, randomly shifted and scaled (module docstring).

    Task fields beyond the common ones: ``shift: (n, d)`` (``delta``),
    ``scale: (n,)``, ``offset: (n,)``, all float32.
    """

    _salt = 0
    f_min: float = 0.0
    x_min: tuple[float, ...] = ()
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    def __init__(
        self, max_shift: float = 0.15, scale_range: tuple[float, float] = (0.1, 10.0), offset_std: float = 1.0
    ) -> None:
        self.max_shift = checks.finite_float(
            "max_shift", max_shift, low=0.0, high=0.5, note="a fraction of the domain's width"
        )
        self.scale_range = check_range("scale_range", scale_range, low=1e-12)
        self.offset_std = checks.finite_float("offset_std", offset_std, low=0.0)
        self.max_dim = len(self.x_min)
        self._lower = torch.tensor(self.lower, dtype=torch.float32)
        self._width = torch.tensor(self.upper, dtype=torch.float32) - self._lower
        # The designated minimizer in [-1, 1] coordinates (float64 for the shift bounds).
        low64, high64 = (torch.tensor(v, dtype=torch.float64) for v in (self.lower, self.upper))
        self._z_min = 2.0 * (torch.tensor(self.x_min, dtype=torch.float64) - low64) / (high64 - low64) - 1.0

    def _g(self, u: torch.Tensor) -> torch.Tensor:
        """The raw function at ``u: (n, m, d)`` in its usual domain -> ``(n, m)``."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> _ShiftedBenchmark:
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def sample(self, keys: torch.Tensor, split: str) -> ObjectiveTasks:
        stream = self.task_stream(keys, split)
        n, d, device = keys.shape[0], self.max_dim, keys.device
        z_min = self._z_min.to(device)
        reach = 2.0 * self.max_shift
        low = torch.clamp(-1.0 - z_min, min=-reach)
        high = torch.clamp(1.0 - z_min, max=reach)
        shift = low + (high - low) * rng.uniform(rng.fold(stream, 1), (d,), torch.float64)
        scale = rng.log_uniform(rng.fold(stream, 2), *self.scale_range)
        offset = (self.offset_std * rng.normal(rng.fold(stream, 3), (), torch.float64)).to(torch.float32)
        # The exact minimum of the float32-parametrized function, rounded once.
        f_opt = (scale.to(torch.float64) * self.f_min + offset.to(torch.float64)).to(torch.float32)
        tasks: ObjectiveTasks = {
            "dim": torch.full((n,), d, dtype=torch.int64, device=device),
            "f_opt": f_opt,
            "exact_optimum": torch.ones(n, dtype=torch.bool, device=device),
            "x_opt": (z_min + shift).clamp(-1.0, 1.0).to(torch.float32),
            "family": torch.zeros(n, dtype=torch.int64, device=device),
            "shift": shift.to(torch.float32),
            "scale": scale,
            "offset": offset,
        }
        tasks["f_ref"] = reference_values(self, tasks, stream)
        return tasks

    def _evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        z = (x - tasks["shift"].unsqueeze(1)).clamp(-1.0, 1.0)
        u = torch.addcmul(self._lower.to(x.device), (z + 1.0) * 0.5, self._width.to(x.device))
        return torch.addcmul(tasks["offset"].unsqueeze(1), tasks["scale"].unsqueeze(1), self._g(u))


class BraninFamily(_ShiftedBenchmark):
    """Shifted and scaled Branin (d = 2) on ``[-5, 10] x [0, 15]``: three global minimizers, 0.397887.

    ``g(u) = (u2 - 5.1 u1^2 / (4 pi^2) + 5 u1 / pi - 6)^2 + 10 (1 - 1 / (8 pi)) cos(u1) + 10``.
    """

    name = "branin"
    _salt = 0xB2A
    f_min = 0.397887357729739
    x_min = (math.pi, 2.275)
    lower = (-5.0, 0.0)
    upper = (10.0, 15.0)

    def _g(self, u: torch.Tensor) -> torch.Tensor:
        u1, u2 = u[..., 0], u[..., 1]
        b, c, t = 5.1 / (4.0 * math.pi**2), 5.0 / math.pi, 1.0 / (8.0 * math.pi)
        return (u2 - b * u1 * u1 + c * u1 - 6.0).square() + 10.0 * (1.0 - t) * torch.cos(u1) + 10.0


class _Hartmann(_ShiftedBenchmark):
    """``g(u) = -sum_i alpha_i exp(-sum_j A_ij (u_j - P_ij)^2)`` on ``[0, 1]^d``."""

    _alpha = (1.0, 1.2, 3.0, 3.2)
    _A: tuple[tuple[float, ...], ...] = ()
    _P: tuple[tuple[float, ...], ...] = ()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._alpha_t = torch.tensor(self._alpha, dtype=torch.float32)
        self._A_t = torch.tensor(self._A, dtype=torch.float32)
        self._P_t = torch.tensor(self._P, dtype=torch.float32) * 1e-4

    def _g(self, u: torch.Tensor) -> torch.Tensor:
        device = u.device
        diff = u.unsqueeze(-2) - self._P_t.to(device)  # (n, m, 4, d)
        inner = (diff * diff * self._A_t.to(device)).sum(-1)
        return -(torch.exp(-inner) * self._alpha_t.to(device)).sum(-1)


class Hartmann3Family(_Hartmann):
    """Shifted and scaled Hartmann-3 (d = 3) on ``[0, 1]^3``: one global minimizer, -3.862780."""

    name = "hartmann3"
    _salt = 0xB3A
    f_min = -3.862779787332663
    x_min = (0.1145889, 0.5556489, 0.852547)
    lower = (0.0, 0.0, 0.0)
    upper = (1.0, 1.0, 1.0)
    _A = ((3.0, 10.0, 30.0), (0.1, 10.0, 35.0), (3.0, 10.0, 30.0), (0.1, 10.0, 35.0))
    _P = ((3689, 1170, 2673), (4699, 4387, 7470), (1091, 8732, 5547), (381, 5743, 8828))


class Hartmann6Family(_Hartmann):
    """Shifted and scaled Hartmann-6 (d = 6) on ``[0, 1]^6``: one global minimizer, -3.32237."""

    name = "hartmann6"
    _salt = 0xB6A
    f_min = -3.322368011415515
    x_min = (0.2016895, 0.1500107, 0.476874, 0.2753324, 0.3116516, 0.6573005)
    lower = (0.0,) * 6
    upper = (1.0,) * 6
    _A = (
        (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
        (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
        (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
        (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
    )
    _P = (
        (1312, 1696, 5569, 124, 8283, 5886),
        (2329, 4135, 8307, 3736, 1004, 9991),
        (2348, 1451, 3522, 2883, 3047, 6650),
        (4047, 8828, 8732, 5743, 1091, 381),
    )


class GPFamily(ObjectiveFamily):
    """Functions drawn from a Gaussian process with a Matérn-5/2 kernel, by random Fourier features.

    A task has dimension ``d`` uniform in ``dims`` (default 2..6; ``max_dim =
    dims[1]``) and per-coordinate length scales ``l_j`` log-uniform in
    ``lengthscale_range`` (default 0.1..1, in ``[-1, 1]`` units). With ``F =
    num_features`` (default 256)::

        f(x) = sqrt(2 / F) sum_k w_k cos(omega_k . x + b_k),  w_k ~ N(0, 1),  b_k ~ U(0, 2 pi)

    and frequencies ``omega_kj = t_kj / l_j``, ``t_k`` multivariate Student-t with
    5 degrees of freedom (``N(0, I) / sqrt(chi2_5 / 5)``): the spectral density of
    the Matérn-5/2 kernel ``k(r)``, ``r^2 = sum_j (x_j - x'_j)^2 / l_j^2``. So ``f``
    is a draw from (an F-feature approximation of) the GP with unit prior
    variance; frequencies of coordinates ``>= d`` are zero, so those
    coordinates do not change the value.

    Task fields beyond the common ones: ``omega: (n, max_dim, F)`` (row ``j``: the
    frequencies' coordinate ``j``),
    ``phase: (n, F)``, ``weight: (n, F)`` (``sqrt(2 / F) w``), ``lengthscale:
    (n, max_dim)`` (0 beyond ``d``), all float32.

    **Optimum estimate** (``exact_optimum`` False), in two stages of a
    multi-start local search: ``num_candidates`` (default 2048) uniform random
    points (a fixed uniform point set shifted by a random vector drawn from the
    task key, modulo the cube); from the best ``num_starts`` (default 64)
    of them, ``screen_steps`` (default 6) descent steps; from the best
    ``num_refined`` (default 8) of those, ``descent_steps`` (default 30) more.
    A descent step is projected gradient descent with the closed-form
    gradient, normalized in length-scale units (a diagonal preconditioner:
    ``dx_j = -s l_j (l_j g_j) / |l g|``), with an adaptive step ``s`` (start
    0.25 length scales; a step is taken only if it lowers ``f``, then ``s``
    grows by 1.5, else it halves). ``x_opt`` is the best point found and
    ``f_opt = f(x_opt)``: a value the function takes, so an **upper bound** of
    the true minimum. A search can (rarely, by a little: the global basin was
    missed) find a lower value; ``evaluate`` does not clip, and the normalized
    regret may then be slightly negative.
    """

    name = "gp"
    _salt = 0x6F1
    _chunk = 64  # candidates per block of the search (fixed: results must not depend on n)
    _row_block = 16  # tasks sampled together (any size gives the same tasks)

    def __init__(
        self,
        dims: tuple[int, int] = (2, 6),
        lengthscale_range: tuple[float, float] = (0.1, 1.0),
        num_features: int = 256,
        num_candidates: int = 2048,
        num_starts: int = 64,
        screen_steps: int = 6,
        num_refined: int = 8,
        descent_steps: int = 30,
    ) -> None:
        self.dims = check_range("dims", dims, low=1, integer=True)
        self.lengthscale_range = check_range("lengthscale_range", lengthscale_range, low=1e-6)
        self.num_features = checks.integer("num_features", num_features)
        self.num_candidates = checks.integer("num_candidates", num_candidates)
        self.num_starts = checks.integer("num_starts", num_starts)
        self.num_refined = checks.integer("num_refined", num_refined)
        if self.num_starts > self.num_candidates:
            raise ValueError(f"num_starts must be <= num_candidates={num_candidates}, got {num_starts!r}")
        if self.num_refined > self.num_starts:
            raise ValueError(f"num_refined must be <= num_starts={num_starts}, got {num_refined!r}")
        self.screen_steps = checks.integer("screen_steps", screen_steps, minimum=0)
        self.descent_steps = checks.integer("descent_steps", descent_steps, minimum=0)
        self.max_dim = self.dims[1]
        # The search's candidates: one fixed uniform point set, shifted per task (see _search).
        self._candidates = uniform_points(rng.keys_from_seeds([self._salt]), self.num_candidates, self.max_dim)[0]

    def to(self, device: torch.device | str) -> GPFamily:
        self._candidates = self._candidates.to(device)
        return self

    def sample(self, keys: torch.Tensor, split: str) -> ObjectiveTasks:
        # In blocks of rows: the optimum search's (rows, 64, F) feature tensors of a whole batch
        # (67 MB at B = 1024) do not stay in cache, a block's do; each row's task is its own, so
        # the tasks are the same bits (sampling 1,024 tasks: 4.7 s in one block, 1.4 s in blocks of 16).
        n, block = keys.shape[0], self._row_block
        if n <= block:
            return self._sample_block(keys, split)
        parts = [self._sample_block(keys[i : i + block], split) for i in range(0, n, block)]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def _sample_block(self, keys: torch.Tensor, split: str) -> ObjectiveTasks:
        stream = self.task_stream(keys, split)
        n, big_d, f, device = keys.shape[0], self.max_dim, self.num_features, keys.device
        dim = self.dims[0] + rng.randint(rng.fold(stream, 1), self.dims[1] - self.dims[0] + 1)
        active = dim_mask(dim, big_d).to(torch.float32)
        lengthscale = rng.log_uniform(rng.fold(stream, 2), *self.lengthscale_range, (big_d,)) * active
        chi2 = rng.normal(rng.fold(stream, 4), (f, 5)).square().sum(-1)
        t = rng.normal(rng.fold(stream, 3), (f, big_d)) * torch.rsqrt(chi2 / 5.0).unsqueeze(-1)
        omega = t * (active / lengthscale.clamp_min(1e-30)).unsqueeze(1)
        tasks: ObjectiveTasks = {
            "dim": dim,
            "exact_optimum": torch.zeros(n, dtype=torch.bool, device=device),
            "family": torch.zeros(n, dtype=torch.int64, device=device),
            "omega": omega.transpose(1, 2).contiguous(),
            "phase": (2.0 * math.pi) * rng.uniform(rng.fold(stream, 5), (f,)),
            "weight": math.sqrt(2.0 / f) * rng.normal(rng.fold(stream, 6), (f,)),
            "lengthscale": lengthscale,
        }
        x_opt = self._search(tasks, stream, active)
        tasks["x_opt"] = x_opt
        tasks["f_opt"] = self._evaluate(tasks, x_opt.unsqueeze(1)).squeeze(1)
        tasks["f_ref"] = reference_values(self, tasks, stream)
        return tasks

    def _projection(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        """``omega_k . x + b_k``: ``(n, m, F)``."""
        return torch.baddbmm(tasks["phase"].unsqueeze(1), x, tasks["omega"])

    def _evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        # An elementwise product and a sum over features, not a matmul: the result of row i must not
        # depend on the batch (batched matrix-vector products take batch-dependent paths).
        return (torch.cos(self._projection(tasks, x)) * tasks["weight"].unsqueeze(1)).sum(-1)

    def value_and_grad(self, tasks: ObjectiveTasks, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(n, m)`` and gradients ``(n, m, max_dim)`` at ``x: (n, m, max_dim)`` (closed form)."""
        proj = self._projection(tasks, x)
        weight = tasks["weight"].unsqueeze(1)
        value = (torch.cos(proj) * weight).sum(-1)
        grad = -torch.bmm(torch.sin(proj) * weight, tasks["omega"].transpose(1, 2))
        return value, grad

    def _descend(
        self, tasks: ObjectiveTasks, x: torch.Tensor, step: torch.Tensor, mask: torch.Tensor, steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``steps`` monotone descent steps from ``x: (n, k, D)`` with step sizes ``step: (n, k)``;
        returns the points, their values ``(n, k)`` and the step sizes."""
        f, g = self.value_and_grad(tasks, x)
        scale = tasks["lengthscale"].unsqueeze(1)  # (n, 1, D); 0 on inactive coordinates
        for _ in range(steps):
            # Project the gradient: no push through a face of the cube the point sits on.
            blocked = ((x <= -1.0) & (g > 0)) | ((x >= 1.0) & (g < 0))
            g = torch.where(blocked, 0.0, g)
            # A normalized step in length-scale units (y = x / l): dx = -step * l * (l g) / |l g|.
            whitened = g * scale
            direction = scale * whitened / whitened.norm(dim=-1, keepdim=True).clamp_min(1e-20)
            proposal = (x - step.unsqueeze(-1) * direction).clamp(-1.0, 1.0) * mask
            f_new, g_new = self.value_and_grad(tasks, proposal)
            better = f_new < f
            x = torch.where(better.unsqueeze(-1), proposal, x)
            f = torch.where(better, f_new, f)
            g = torch.where(better.unsqueeze(-1), g_new, g)
            step = torch.where(better, 1.5 * step, 0.5 * step)
        return x, f, step

    def _search(self, tasks: ObjectiveTasks, stream: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The best point ``(n, max_dim)`` of the random search and two descent stages (class docstring)."""
        n, big_d = stream.shape[0], self.max_dim
        mask = active.unsqueeze(1)
        # A random shift of a fixed uniform point set, modulo the cube (a Cranley-Patterson rotation):
        # uniform candidates per task for D random numbers instead of num_candidates * D.
        shift = 2.0 * rng.uniform(rng.fold(stream, 7), (big_d,)).unsqueeze(1)
        base = self._candidates.to(stream.device).unsqueeze(0)
        points = (torch.remainder(base + 1.0 + shift, 2.0) - 1.0) * mask
        values = torch.cat(
            [self._evaluate(tasks, points[:, i : i + self._chunk]) for i in range(0, self.num_candidates, self._chunk)],
            dim=1,
        )
        start = values.topk(self.num_starts, dim=1, largest=False, sorted=True).indices  # (n, k)
        x = points.gather(1, start.unsqueeze(-1).expand(n, self.num_starts, big_d))
        step = torch.full((n, self.num_starts), 0.25, device=x.device)
        x, f, step = self._descend(tasks, x, step, mask, self.screen_steps)
        keep = f.topk(self.num_refined, dim=1, largest=False, sorted=True).indices
        x = x.gather(1, keep.unsqueeze(-1).expand(n, self.num_refined, big_d))
        x, f, _ = self._descend(tasks, x, step.gather(1, keep), mask, self.descent_steps)
        return x[torch.arange(n, device=x.device), f.argmin(1)]
