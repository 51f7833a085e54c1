"""Batched Gaussian-process regression: the one GP of the HPO baselines and of MetaOpt-Acquisition-v0.

Zero-mean GPs with a Matérn-5/2 ARD kernel plus white noise, for ``B`` independent data sets
at once (float64 torch, any device): the kernel, the posterior, the log marginal likelihood
with its analytic gradient, a MAP fit of the hyperparameters (Adam on the log-parameters
under weak log-normal priors), and (log) Expected Improvement. ``point_mask`` arguments let
rows hold different numbers of points in one padded batch: a padded point is made
independent of the others with a unit prior variance and target 0, so it changes neither the
posterior of the real points nor the gradient of their likelihood (the likelihood itself moves
by a constant).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "GPHyperparameters",
    "default_hyperparameters",
    "expected_improvement",
    "fit_hyperparameters",
    "fit_log_hyperparameters",
    "gp_log_marginal_likelihood",
    "gp_posterior",
    "log_expected_improvement",
    "matern52",
]


def matern52(x1: torch.Tensor, x2: torch.Tensor, lengthscales: torch.Tensor, signal_var: torch.Tensor) -> torch.Tensor:
    """Batched Matérn-5/2 ARD kernel ``s2 (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r)``.

    ``x1: (B, n, d)``, ``x2: (B, m, d)``, ``lengthscales: (B, d)``, ``signal_var: (B,)`` ->
    ``(B, n, m)``, with ``r = ||(x1 - x2) / lengthscales||`` (``torch.cdist``). Coordinates
    that are 0 in every point (padding) add nothing to ``r``, whatever their length scale.
    """
    s5r = math.sqrt(5.0) * torch.cdist(x1 / lengthscales.unsqueeze(-2), x2 / lengthscales.unsqueeze(-2))
    k = torch.exp(-s5r)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x1, x2, lengthscales, signal_var)):
        return signal_var[:, None, None] * (1.0 + s5r + s5r * s5r / 3.0) * k
    poly = s5r.pow(2).div_(3.0).add_(s5r).add_(1.0)  # 1 + sqrt5 r + 5/3 r^2, in place (large candidate sets)
    return k.mul_(poly).mul_(signal_var[:, None, None])


def _cholesky(k: torch.Tensor) -> torch.Tensor:
    """Batched Cholesky factor; rows that fail get growing jitter (never in normal use)."""
    chol, info = torch.linalg.cholesky_ex(k)
    jitter = 1e-9
    while bool((info > 0).any()) and jitter < 1.0:
        eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        bad = (info > 0)[:, None, None]
        k = torch.where(bad, k + jitter * k.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * eye, k)
        chol, info = torch.linalg.cholesky_ex(k)
        jitter *= 10.0
    return chol


def _train_covariance(x, lengthscales, signal_var, noise_var, point_mask=None):
    n = x.shape[-2]
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    k = matern52(x, x, lengthscales, signal_var) + noise_var[:, None, None] * eye
    if point_mask is None:
        return k
    return _mask_covariance(k, point_mask)


def _mask_covariance(k: torch.Tensor, point_mask: torch.Tensor) -> torch.Tensor:
    """``k (B, n, n)`` with padded points (``point_mask (B, n)`` False) made independent unit-variance points."""
    m = point_mask.to(k.dtype)
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    return k * (m.unsqueeze(-1) * m.unsqueeze(-2)) + eye * (1.0 - m).unsqueeze(-1)


def gp_log_marginal_likelihood(x, y, lengthscales, signal_var, noise_var) -> torch.Tensor:
    """Log marginal likelihood ``(B,)`` of zero-mean GPs (Matérn-5/2 ARD + noise) on ``x (B, n, d)``, ``y (B, n)``."""
    chol = _cholesky(_train_covariance(x, lengthscales, signal_var, noise_var))
    alpha = torch.linalg.solve_triangular(chol, y.unsqueeze(-1), upper=False).squeeze(-1)
    n = y.shape[-1]
    log_det = torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * alpha.pow(2).sum(-1) - log_det - 0.5 * n * math.log(2.0 * math.pi)


def _lml_and_grad(delta2, y, log_ls, log_s2, log_noise, point_mask=None):
    """Log marginal likelihood ``(B,)`` and its analytic gradient w.r.t. the log-parameters.

    ``delta2: (B, n, n, d)`` squared coordinate differences of the training points, ``y: (B, n)``,
    ``log_ls: (B, d)``, ``log_s2, log_noise: (B,)``. Uses ``d lml / d theta =
    1/2 tr((alpha alpha^T - K^-1) dK/d theta)`` with ``dk/dlog l_j = s2 5/3 (1 + sqrt5 r)
    exp(-sqrt5 r) delta_j^2 / l_j^2``. With ``point_mask (B, n)`` the padded points (False; their
    ``y`` must be 0) add nothing to the gradient. Returns None if a Cholesky factorization fails.
    """
    sqrt5, n = math.sqrt(5.0), y.shape[-1]
    s2, noise = log_s2.exp(), log_noise.exp()
    w = torch.exp(-2.0 * log_ls)  # 1 / l^2
    r2 = (delta2 * w[:, None, None, :]).sum(-1)
    r = r2.clamp_min(0.0).sqrt()
    e = torch.exp(-sqrt5 * r)
    kf = (1.0 + sqrt5 * r + (5.0 / 3.0) * r2) * e  # unit-variance Matérn
    eye = torch.eye(n, dtype=y.dtype, device=y.device)
    k = s2[:, None, None] * kf + noise[:, None, None] * eye
    if point_mask is not None:
        pair = point_mask.to(y.dtype).unsqueeze(-1) * point_mask.to(y.dtype).unsqueeze(-2)
        kf = kf * pair
        k = _mask_covariance(k, point_mask)
    chol, info = torch.linalg.cholesky_ex(k)
    if bool((info > 0).any()):
        return None
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol)  # (B, n, 1)
    lml = (
        -0.5 * (alpha.squeeze(-1) * y).sum(-1)
        - torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
        - 0.5 * n * math.log(2.0 * math.pi)
    )
    wmat = alpha * alpha.transpose(-1, -2) - torch.cholesky_inverse(chol)  # (B, n, n)
    if point_mask is not None:
        wmat = wmat * pair
    g_s2 = 0.5 * (wmat * kf).sum((-1, -2)) * s2
    g_noise = 0.5 * wmat.diagonal(dim1=-2, dim2=-1).sum(-1) * noise
    dk = (5.0 / 3.0) * (1.0 + sqrt5 * r) * e * s2[:, None, None]
    g_ls = 0.5 * torch.einsum("bnm,bnmj->bj", wmat * dk, delta2) * w
    return lml, g_ls, g_s2, g_noise


def gp_posterior(
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    lengthscales: torch.Tensor,
    signal_var: torch.Tensor,
    noise_var: torch.Tensor,
    observation_noise: bool = False,
    point_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std ``(B, m)`` of zero-mean GPs at ``x_test (B, m, d)``.

    The kernel is ``signal_var * Matérn-5/2(lengthscales)`` plus ``noise_var`` white noise on
    the training points. The std is the latent function's; with ``observation_noise=True`` it
    includes the noise (what scikit-learn's ``predict(return_std=True)`` returns with a
    ``WhiteKernel`` in its kernel). ``point_mask (B, n)``: False on padded training points
    (their ``y`` must be 0), which then change nothing; a row without points gets the prior.
    """
    chol = _cholesky(_train_covariance(x, lengthscales, signal_var, noise_var, point_mask))
    k_star = matern52(x, x_test, lengthscales, signal_var)  # (B, n, m)
    if point_mask is not None:
        k_star = k_star * point_mask.to(k_star.dtype).unsqueeze(-1)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol)  # (B, n, 1)
    mean = (k_star * alpha).sum(-2)
    v = torch.linalg.solve_triangular(chol, k_star, upper=False)
    var = signal_var[:, None] - v.pow(2).sum(-2)
    if observation_noise:
        var = var + noise_var[:, None]
    return mean, var.clamp_min(1e-18).sqrt()


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """EI for minimization ``(best - mu) Phi(u) + sigma phi(u)``, ``u = (best - mu) / sigma``; ``best`` broadcasts."""
    u = (best - mean) / std
    cdf = 0.5 * torch.erfc(-u / _SQRT2)
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * u * u)
    return (best - mean) * cdf + std * pdf


def log_expected_improvement(mean: torch.Tensor, std: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """``log EI`` computed stably (no underflow to ``-inf`` far from the incumbent).

    ``EI = sigma h(u)`` with ``h(u) = phi(u) + u Phi(u) = exp(-u^2/2) (1/sqrt(2 pi) + u/2 erfcx(-u/sqrt2))``;
    the bracket is evaluated with the scaled complementary error function, so ``log EI`` stays
    finite and ordered for ``u`` in the hundreds below 0, where plain EI is exactly 0.
    """
    u = (best - mean) / std
    bracket = _INV_SQRT_2PI + 0.5 * u * torch.special.erfcx(-u / _SQRT2)
    log_h = -0.5 * u * u + torch.log(bracket.clamp_min(1e-300))
    # For u >= 0 the direct formula is exact and the bracket form would overflow exp(-u^2/2) * erfcx.
    direct = torch.log((u * 0.5 * torch.erfc(-u / _SQRT2) + _INV_SQRT_2PI * torch.exp(-0.5 * u * u)).clamp_min(1e-300))
    return torch.log(std) + torch.where(u > -1.0, direct, log_h)


class GPHyperparameters(NamedTuple):
    """Per-row GP hyperparameters: ``lengthscales (B, d)``, ``signal_var (B,)``, ``noise_var (B,)``."""

    lengthscales: torch.Tensor
    signal_var: torch.Tensor
    noise_var: torch.Tensor


LOG_LS_BOUNDS = (math.log(0.01), math.log(20.0))
LOG_S2_BOUNDS = (math.log(0.01), math.log(100.0))
LOG_NOISE_BOUNDS = (math.log(1e-6), 0.0)
PRIOR_S2 = (0.0, 1.5)
"""Mean and std of the log-normal prior of ``signal_var``."""
PRIOR_NOISE = (math.log(1e-3), 2.0)
PRIOR_LS_STD = 1.0
"""Std of the prior of each ``log l``, centred on ``log(0.5 sqrt(d))`` with ``d`` the row's active dimensions."""


def default_hyperparameters(dim_mask: torch.Tensor, dtype: torch.dtype = torch.float64) -> GPHyperparameters:
    """The prior modes: ``l = 0.5 sqrt(d)`` per dim, ``signal_var = 1``, ``noise_var = 1e-3``; ``dim_mask (B, D)``."""
    dims = dim_mask.sum(-1).to(dtype)
    ls = (0.5 * dims.sqrt())[:, None].repeat(1, dim_mask.shape[-1])
    b = dim_mask.shape[0]
    ones = torch.ones(b, dtype=dtype, device=dim_mask.device)
    return GPHyperparameters(ls, ones, ones * 1e-3)


def fit_hyperparameters(
    x: torch.Tensor,
    z: torch.Tensor,
    dim_mask: torch.Tensor,
    init: GPHyperparameters,
    steps: int,
    lr: float,
    point_mask: torch.Tensor | None = None,
) -> GPHyperparameters:
    """MAP hyperparameters of ``B`` GPs on ``x (B, n, D)``, standardized targets ``z (B, n)``.

    Maximizes the log marginal likelihood plus weak log-normal priors (``log l ~ N(log(0.5 sqrt(d)), 1)``
    per active dim, ``log signal_var ~ N(0, 1.5)``, ``log noise_var ~ N(log 1e-3, 2)``) with ``steps``
    Adam steps of size ``lr`` on the log-parameters, from ``init``, with the analytic gradient (no
    autograd: a few dozen small batched ops per step), clamped to ``l in [0.01, 20]``,
    ``signal_var in [0.01, 100]``, ``noise_var in [1e-6, 1]``. Length scales of padded dims
    (``dim_mask`` False) stay at ``init``. Rows are independent: each row's gradient depends only on
    its own data. ``point_mask``: see :func:`gp_posterior`.
    """
    params = [init.lengthscales.log(), init.signal_var.log(), init.noise_var.log()]
    fit_log_hyperparameters(x, z, dim_mask, params, steps, lr, point_mask)
    return GPHyperparameters(*(p.exp() for p in params))


def fit_log_hyperparameters(
    x: torch.Tensor,
    z: torch.Tensor,
    dim_mask: torch.Tensor,
    params: list[torch.Tensor],
    steps: int,
    lr: float,
    point_mask: torch.Tensor | None = None,
) -> None:
    """:func:`fit_hyperparameters` on ``params = [log_ls (B, D), log_signal_var (B,), log_noise_var (B,)]``,
    updated in place."""
    dims = dim_mask.sum(-1).to(x.dtype)
    maskf = dim_mask.to(x.dtype)
    prior_ls = torch.log(0.5 * dims.sqrt())  # (B,)
    bounds = [LOG_LS_BOUNDS, LOG_S2_BOUNDS, LOG_NOISE_BOUNDS]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    delta2 = (x.unsqueeze(-2) - x.unsqueeze(-3)).pow(2)  # (B, n, n, d)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        result = _lml_and_grad(delta2, z, params[0], params[1], params[2], point_mask)
        if result is None:
            break  # keep the last parameters (never in normal use: noise >= 1e-6)
        _, g_ls, g_s2, g_noise = result
        grads = [  # of the loss: negative lml plus the negative log prior
            -g_ls + (params[0] - prior_ls[:, None]) / PRIOR_LS_STD**2,
            -g_s2 + (params[1] - PRIOR_S2[0]) / PRIOR_S2[1] ** 2,
            -g_noise + (params[2] - PRIOR_NOISE[0]) / PRIOR_NOISE[1] ** 2,
        ]
        grads[0] = grads[0] * maskf  # padded length scales stay put
        for p, g, (m, v), (lo, hi) in zip(params, grads, moments, bounds):
            m.mul_(beta1).add_(g, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            step_size = lr / (1.0 - beta1**step)
            p.sub_(step_size * m / ((v / (1.0 - beta2**step)).sqrt() + eps)).clamp_(lo, hi)
