"""The inner optimizers are torch.optim's, the gradients are the true ones, the quadratic oracle is optimal.

Promises:

- inner/optimizers.py: with a constant learning rate each row follows
  ``torch.optim.SGD`` / ``SGD(momentum=0.9)`` / ``Adam`` exactly;
- lr_core.py: the update at inner step ``t`` uses the mean of the minibatch
  gradients drawn with keys ``fold(fold(run_key, t), 0)`` and ``... 1)``;
- problems: hand-written gradients (closed forms, the MLPs' paired backprop)
  equal autograd's gradient of ``minibatch_loss``;
- quadratic.py: ``optimal_constant_lr`` minimizes the expected final loss of
  constant-step SGD, so it beats rates 3x larger and 3x smaller when the env is
  actually run.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from metaopt_envs import make_core
from metaopt_envs.core import rng, seeds_to_keys
from metaopt_envs.lr.families import (
    LogisticRegressionFamily,
    LRTaskFamily,
    MixtureFamily,
    NoisyQuadraticFamily,
    SinusoidMLPFamily,
    SklearnMLPFamily,
)
from metaopt_envs.lr.families.base import take

NUM_STEPS = 20
NUM_ROWS = 3
PARITY_TOL = {"rtol": 1e-5, "atol": 1e-6}

# (family, optimizer, learning rate): rates in each family's stable range.
CASES = [
    ("quadratic", "sgd", 0.05),
    ("quadratic", "momentum", 0.01),
    ("quadratic", "adam", 0.05),
    ("logistic", "sgd", 0.02),
    ("logistic", "momentum", 0.005),
    ("logistic", "adam", 0.02),
    ("sinusoid", "sgd", 0.01),
    ("sinusoid", "momentum", 0.002),
    ("sinusoid", "adam", 0.003),
]


def _torch_optimizer(name: str, param: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD([param], lr=lr)
    if name == "momentum":
        return torch.optim.SGD([param], lr=lr, momentum=0.9)
    return torch.optim.Adam([param], lr=lr, betas=(0.9, 0.999), eps=1e-8)


def _core_gradient(family: LRTaskFamily, params: torch.Tensor, tasks, run_key: torch.Tensor, t: int) -> torch.Tensor:
    """The gradient the core updates with at inner step ``t``: mean of two keyed minibatches."""
    step_key = rng.fold(run_key, t)
    _, grad_a = family.minibatch_loss_and_grad(params, tasks, rng.fold(step_key, 0))
    _, grad_b = family.minibatch_loss_and_grad(params, tasks, rng.fold(step_key, 1))
    return 0.5 * (grad_a + grad_b)


@pytest.mark.parametrize(("family_name", "optimizer", "lr"), CASES, ids=[f"{f}-{o}" for f, o, _ in CASES])
def test_constant_lr_trajectory_matches_torch_optim(family_name, optimizer, lr):
    # lr_range centred (geometrically) on lr: action 0 selects exactly lr.
    core = make_core(
        "MetaOpt-LR-v0",
        num_envs=NUM_ROWS,
        task_family=family_name,
        inner_optimizer=optimizer,
        horizon=NUM_STEPS,
        lr_range=(lr / 10, lr * 10),
    )
    core.reset_rows(torch.ones(NUM_ROWS, dtype=torch.bool), keys=seeds_to_keys(17, NUM_ROWS, core.device))
    family = core.family
    rows = []
    for i in range(NUM_ROWS):
        param = core.params[i : i + 1].clone().requires_grad_(False)
        rows.append((param, take(core.tasks, torch.tensor([i])), core.run_key[i : i + 1].clone()))
    optimizers = None
    moved = torch.zeros(NUM_ROWS)
    for t in range(NUM_STEPS):
        result = core.step(torch.zeros(NUM_ROWS, 1))
        assert not result.terminated.any()
        step_lr = float(result.info["lr"][0])
        assert step_lr == pytest.approx(lr, rel=1e-5)
        if optimizers is None:
            optimizers = [_torch_optimizer(optimizer, param, step_lr) for param, _, _ in rows]
        for i, ((param, tasks, run_key), opt) in enumerate(zip(rows, optimizers)):
            before = param.detach().clone()
            param.grad = _core_gradient(family, param.detach(), tasks, run_key, t)
            opt.step()
            moved[i] += (param.detach() - before).norm()
            torch.testing.assert_close(
                core.params[i : i + 1],
                param.detach(),
                **PARITY_TOL,
                msg=lambda m, i=i, t=t: f"row {i}, step {t + 1}: {m}",
            )
    assert (moved > 0).all()
    assert (core.loss < core.initial_loss).all(), "the constant rate should make progress on every row"


def _random_params(family: LRTaskFamily, tasks, n: int) -> torch.Tensor:
    keys = torch.arange(n) + 1000
    init = family.init_params(tasks, keys)
    return init + 0.3 * rng.normal(keys, (family.param_dim,))


GRADIENT_FAMILIES = [
    pytest.param(NoisyQuadraticFamily, id="quadratic"),
    pytest.param(LogisticRegressionFamily, id="logistic"),
]


@pytest.mark.parametrize("family_class", GRADIENT_FAMILIES)
def test_closed_form_gradient_equals_autograd(family_class):
    family = family_class()
    n = 6
    tasks = family.sample(torch.arange(n), "train")
    params = _random_params(family, tasks, n)
    keys = torch.arange(n) * 7 + 3
    loss, grad = family.minibatch_loss_and_grad(params, tasks, keys)
    loss_ref, grad_ref = LRTaskFamily.minibatch_loss_and_grad(family, params, tasks, keys)
    assert type(family).minibatch_loss_and_grad is not LRTaskFamily.minibatch_loss_and_grad  # really hand-written
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, family.minibatch_loss(params, tasks, keys), rtol=1e-5, atol=1e-6)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "family_factory",
    [
        pytest.param(NoisyQuadraticFamily, id="quadratic"),
        pytest.param(LogisticRegressionFamily, id="logistic"),
        pytest.param(SinusoidMLPFamily, id="sinusoid"),
        pytest.param(SklearnMLPFamily, id="sklearn"),
        pytest.param(
            lambda: MixtureFamily(
                [NoisyQuadraticFamily(), LogisticRegressionFamily(), SinusoidMLPFamily(), SklearnMLPFamily()]
            ),
            id="mixture",
        ),
    ],
)
def test_paired_minibatch_gradients_equal_autograd(family_factory):
    """The two gradients the core measures per step are autograd's gradients of ``minibatch_loss``."""
    family = family_factory()
    n = 8
    tasks = family.sample(torch.arange(n) + 50, "train")
    params = _random_params(family, tasks, n)
    keys_a, keys_b = torch.arange(n) * 11 + 1, torch.arange(n) * 13 + 2
    grad_a, grad_b = family.paired_minibatch_grads(params, tasks, keys_a, keys_b)
    _, ref_a = LRTaskFamily.minibatch_loss_and_grad(family, params, tasks, keys_a)
    _, ref_b = LRTaskFamily.minibatch_loss_and_grad(family, params, tasks, keys_b)
    torch.testing.assert_close(grad_a, ref_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_b, ref_b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(grad_a, grad_b), "the two minibatches must be independent draws"


def _action_for(lr: torch.Tensor, lr_range: tuple[float, float]) -> np.ndarray:
    low, high = math.log(lr_range[0]), math.log(lr_range[1])
    action = 2.0 * (torch.log(lr.double()) - low) / (high - low) - 1.0
    assert (action.abs() <= 1).all()
    return action.float().numpy().reshape(-1, 1)


def test_quadratic_optimal_constant_lr_beats_3x_larger_and_smaller():
    num_envs, horizon, lr_range = 64, 20, (1e-5, 1e3)
    kwargs = {"task_family": "quadratic", "split": "test", "horizon": horizon, "lr_range": lr_range}

    def mean_final_loss(scale: float) -> tuple[float, int]:
        """Mean loss at the end of each row's first episode (a diverged row counts with its exploded loss)."""
        vec = gym.make_vec("MetaOpt-LR-v0", num_envs=num_envs, **kwargs)
        vec.reset(seed=123)
        lr = vec.core.optimal_constant_lr() * scale
        actions = _action_for(lr, lr_range)
        final = np.full(num_envs, np.nan)
        diverged = 0
        for _ in range(horizon):
            _, _, terminated, truncated, infos = vec.step(actions)
            np.testing.assert_allclose(infos["lr"], lr.numpy(), rtol=1e-4)
            ended = (terminated | truncated) & np.isnan(final)
            final[ended] = infos["loss"][ended]
            diverged += int((terminated & ended).sum())
        assert not np.isnan(final).any()  # every row's first episode ended within the horizon
        return float(np.mean(final)), diverged

    (best, best_diverged), (larger, _), (smaller, smaller_diverged) = (
        mean_final_loss(1.0),
        mean_final_loss(3.0),
        mean_final_loss(1.0 / 3.0),
    )
    assert best_diverged == 0 and smaller_diverged == 0
    assert math.isfinite(best)
    assert best < larger, (best, larger)
    assert best < smaller, (best, smaller)


def test_optimal_constant_lr_needs_quadratic_sgd():
    core = make_core("MetaOpt-LR-v0", num_envs=2, task_family="quadratic", inner_optimizer="adam", horizon=5)
    with pytest.raises(ValueError, match="optimal_constant_lr"):
        core.optimal_constant_lr()
