"""Noisy quadratics with random ill-conditioning and dimension, and their optimal step.

The noisy quadratic model (Zhang et al., 2019): in its eigenbasis a task is

    f(x) = 1/2 * sum_j curvature_j * (x_j - optimum_j)^2

with ``dimension`` ~ U{min_dim..max_dim} active coordinates (the rest padded
with zero curvature), the largest curvature log-uniform in ``curvature_range``,
a condition number log-uniform in ``condition_range`` (spread over several
decades) and the other curvatures log-uniform between. A minibatch sees

    f_xi(x) = f(x) + noise * sum_j sqrt(curvature_j) * xi_j * (x_j - optimum_j),   xi ~ N(0, I)

so the stochastic gradient is ``curvature * (x - optimum) + noise * sqrt(curvature) * xi``:
gradient noise proportional to curvature, as in the NQM. Because the dynamics
of SGD on it are linear, the expected loss after T steps of a constant step is
known in closed form, and :func:`optimal_constant_lr` gives the step that
minimizes it (the built-in oracle).
"""

from __future__ import annotations

import math

import torch

from metaopt_envs.core import checks, rng
from metaopt_envs.core.family import check_range
from metaopt_envs.lr.families.base import LRTaskFamily, TaskData, check_split


class NoisyQuadraticFamily(LRTaskFamily):
    """Ill-conditioned noisy quadratics; train and test are disjoint i.i.d. streams."""

    name = "quadratic"

    def __init__(
        self,
        min_dim: int = 4,
        max_dim: int = 32,
        condition_range: tuple[float, float] = (10.0, 1e4),
        curvature_range: tuple[float, float] = (0.1, 10.0),
        noise_range: tuple[float, float] = (0.01, 1.0),
        init_scale: float = 1.0,
    ) -> None:
        min_dim, max_dim = checks.integer("min_dim", min_dim), checks.integer("max_dim", max_dim)
        if min_dim > max_dim:
            raise ValueError(f"max_dim must be an int >= min_dim={min_dim}, got {max_dim!r}")
        self.min_dim, self.max_dim = min_dim, max_dim
        self.condition_range = check_range("condition_range", condition_range, low=1.0)
        self.curvature_range = check_range("curvature_range", curvature_range, low=0.0, low_open=True)
        self.noise_range = check_range("noise_range", noise_range, low=0.0, low_open=True)
        self.init_scale = checks.finite_float("init_scale", init_scale, low=0.0, low_open=True)
        self.param_dim = max_dim

    def sample(self, keys: torch.Tensor, split: str) -> TaskData:
        check_split(split)
        n, dmax = keys.shape[0], self.max_dim
        # Streams 1..6 of each key, hashed in one call (the same keys as six folds).
        streams = rng.fold_each(keys, (1, 2, 3, 4, 5, 6))
        _, _, _, s4, s5, _ = streams.unbind(1)
        # The four scalar draws (streams 1, 2, 3, 6) in one hash over their keys: the numbers of four
        # draws (each a contiguous (n,) row, as a draw of its own gives).
        u_dim, u_top, u_condition, u_noise = rng.uniform(streams[:, [0, 1, 2, 5]], (), torch.float64).t().contiguous()
        dim = self.min_dim + rng.randint_of(u_dim, self.max_dim - self.min_dim + 1)
        top = rng.log_uniform_of(u_top, *self.curvature_range)
        condition = rng.log_uniform_of(u_condition, *self.condition_range)
        # Exponents in [0, 1]: the first coordinate holds the largest curvature, the
        # last active one the smallest, so every task has exactly its condition number.
        u = rng.uniform(s4, (dmax,))
        coord = torch.arange(dmax, device=keys.device).expand(n, dmax)
        active = coord < dim.unsqueeze(-1)
        u = torch.where(coord == 0, 0.0, u)
        u = torch.where(coord == (dim - 1).unsqueeze(-1), 1.0, u)
        curvature = top.unsqueeze(-1) * condition.unsqueeze(-1) ** (-u)
        curvature = torch.where(active, curvature, 0.0)
        optimum = torch.where(active, rng.normal(s5, (dmax,)), 0.0)
        noise = rng.log_uniform_of(u_noise, *self.noise_range)
        return {"curvature": curvature, "optimum": optimum, "noise": noise, "dimension": dim}

    def init_params(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        offset = self.init_scale * rng.normal(keys, (self.max_dim,))
        return tasks["optimum"] + torch.where(tasks["curvature"] > 0, offset, 0.0)

    def loss(self, params: torch.Tensor, tasks: TaskData, split: str = "train") -> torch.Tensor:
        delta = params - tasks["optimum"]
        return 0.5 * (tasks["curvature"] * delta * delta).sum(-1)

    def _noise(self, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        xi = rng.normal(keys, (self.max_dim,))
        return tasks["noise"].unsqueeze(-1) * tasks["curvature"].sqrt() * xi

    def minibatch_loss(self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor) -> torch.Tensor:
        delta = params - tasks["optimum"]
        return self.loss(params, tasks) + (self._noise(tasks, keys) * delta).sum(-1)

    def minibatch_loss_and_grad(
        self, params: torch.Tensor, tasks: TaskData, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        delta = params - tasks["optimum"]
        noise = self._noise(tasks, keys)
        loss = 0.5 * (tasks["curvature"] * delta * delta).sum(-1) + (noise * delta).sum(-1)
        return loss, tasks["curvature"] * delta + noise

    def loss_and_paired_grads(
        self, params: torch.Tensor, tasks: TaskData, keys_a: torch.Tensor, keys_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        delta = params - tasks["optimum"]
        exact = tasks["curvature"] * delta
        # Both minibatches' noise from one draw over (n, 2) keys: the same numbers as two draws.
        xi = rng.normal(torch.stack([keys_a, keys_b], dim=1), (self.max_dim,))
        noise = (tasks["noise"].unsqueeze(-1) * tasks["curvature"].sqrt()).unsqueeze(1) * xi
        return 0.5 * (exact * delta).sum(-1), exact.unsqueeze(1) + noise

    def expected_final_loss(
        self, lr: torch.Tensor, tasks: TaskData, num_steps: int, gradient_noise_factor: float = 0.5
    ) -> torch.Tensor:
        """Expected loss after ``num_steps`` of SGD with constant ``lr``, over init and noise.

        ``lr``: (n, G) candidate steps for each of the n tasks -> (n, G).
        ``gradient_noise_factor`` is the variance of the gradient noise the
        optimizer sees relative to one minibatch; the LR core averages two
        minibatches per step, so 1/2.
        """
        curvature = tasks["curvature"].double().unsqueeze(1)  # (n, 1, D)
        noise_var = (gradient_noise_factor * tasks["noise"].double() ** 2).view(-1, 1, 1) * curvature
        lr = lr.double().unsqueeze(-1)  # (n, G, 1)
        contraction = (1.0 - lr * curvature) ** 2
        growth = contraction**num_steps
        # sum_{s<T} c^s, with its limit T where c = 1 (padded coordinates, lr -> 0).
        near_one = (contraction - 1.0).abs() < 1e-12
        geometric = torch.where(
            near_one, float(num_steps), (1.0 - growth) / torch.where(near_one, 1.0, 1.0 - contraction)
        )
        second_moment = growth * self.init_scale**2 + lr**2 * noise_var * geometric
        return 0.5 * (curvature * second_moment).sum(-1)

    def optimal_constant_lr(
        self, tasks: TaskData, num_steps: int, grid_size: int = 400, gradient_noise_factor: float = 0.5
    ) -> torch.Tensor:
        """The constant SGD step ``(n,)`` that minimizes the expected loss after ``num_steps``.

        The expected loss is closed form (:meth:`expected_final_loss`); its
        minimizer is found by a log-spaced grid over (0, 2 / largest curvature),
        the stability limit, then refined once on a finer grid around the best.
        """
        top = tasks["curvature"].double().amax(-1, keepdim=True)  # (n, 1)
        unit = torch.linspace(math.log(1e-6), math.log(2.0), grid_size, dtype=torch.float64, device=top.device)
        candidates = torch.exp(unit).unsqueeze(0) / top
        best = self.expected_final_loss(candidates, tasks, num_steps, gradient_noise_factor).argmin(-1)
        step = unit[1] - unit[0]
        fine = unit[best].unsqueeze(-1) + torch.linspace(-step, step, grid_size, dtype=torch.float64, device=top.device)
        fine_candidates = torch.exp(fine.clamp(max=math.log(2.0))) / top
        best_fine = self.expected_final_loss(fine_candidates, tasks, num_steps, gradient_noise_factor).argmin(-1)
        return fine_candidates.gather(-1, best_fine.unsqueeze(-1)).squeeze(-1).to(torch.float32)
