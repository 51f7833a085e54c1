"""Learned optimizers: the unroll reproduces the LR core's features, meta-training helps, the harness runs them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import metaopt_envs
from agents.controllers.lr import ConstantLR
from agents.evaluation.lr import evaluate
from agents.meta.learned_optimizers import (
    CoordinatewiseLSTMOptimizer,
    LearnedLRController,
    harness_problems,
    preprocess_gradient,
    sample_problems,
    unroll,
)
from metaopt_envs.core import rng, seeds_to_keys
from metaopt_envs.lr import dynamics
from metaopt_envs.lr.families import ModuleFamily, make_task_family
from metaopt_envs.lr.optimizers import InnerOptimizer


class FixedRate(LearnedLRController):
    """A controller that always answers ``lr`` (to compare the unroll with the env step by step)."""

    def __init__(self, lr: float, inner_optimizer: str = "sgd") -> None:
        super().__init__(inner_optimizer=inner_optimizer)
        self.fixed = lr

    def log_lr(self, features: torch.Tensor) -> torch.Tensor:
        return torch.full((features.shape[0],), math.log(self.fixed))


@pytest.mark.parametrize(
    ("family", "optimizer"),
    [
        ("quadratic", "sgd"),
        ("logistic", "sgd"),
        ("sinusoid", "adam"),
        ("mixture", "momentum"),
        ("digits_convnet", "sgd"),
    ],
)
def test_unroll_features_equal_core_observe(family, optimizer):
    n, horizon, lr = 6, 6, 0.05
    core = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=n, task_family=family, horizon=horizon, split="test", inner_optimizer=optimizer
    )
    core.reset_rows(torch.ones(n, dtype=torch.bool), keys=seeds_to_keys(10_000, n, core.device))
    problems = harness_problems(core.family, n, seed=0)
    for name, value in problems.tasks.items():
        assert torch.equal(value, core.tasks[name])
    assert torch.equal(problems.params, core.params) and torch.equal(problems.run_key, core.run_key)

    result = unroll(FixedRate(lr, optimizer), core.family, problems, horizon, truncation=3, create_graph=False)
    observations = [core.observe()]
    for _ in range(horizon - 1):
        observations.append(core.step(ConstantLR(lr).predict(observations[-1].numpy())[0]).observation)
    expected = torch.stack(observations)
    assert result.features.shape == (horizon, n, 8)
    assert torch.isfinite(result.features).all()
    # One dynamics (metaopt_envs.lr.dynamics) for both: the same bits, not merely close.
    assert torch.equal(result.features, expected)


def test_unroll_is_differentiable_and_truncated():
    family = make_task_family("quadratic")
    problems = sample_problems(family, rng.keys_from_seeds(torch.arange(4)), "train")
    controller = LearnedLRController(horizon=8)
    windows = []
    result = unroll(controller, family, problems, 8, truncation=4, on_window=windows.append)
    assert len(windows) == 2 and all(w.requires_grad for w in windows)
    windows[1].backward()
    grads = [p.grad for p in controller.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert result.log_loss_ratios.shape == (9, 4)
    # The lrs are clamped to lr_range by construction.
    assert (result.log_lrs >= math.log(1e-4) - 1e-5).all() and (result.log_lrs <= math.log(10.0) + 1e-5).all()


def test_learned_lr_controller_improves_on_held_out_tasks(tmp_path):
    torch.manual_seed(0)
    family = make_task_family("quadratic")
    test = harness_problems(family, 32, seed=0)
    controller = LearnedLRController(horizon=20, seed=0)
    before = controller.evaluate_unroll(family, test).mean()
    controller.meta_train(family, iterations=25, num_tasks=16, horizon=20, truncation=10, meta_lr=3e-3)
    after = controller.evaluate_unroll(family, test).mean()
    assert np.isfinite(after) and after < before - 0.2, (before, after)

    path = tmp_path / "controller.pt"
    controller.save(str(path))
    loaded = LearnedLRController.load(str(path))
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], controller.predict(obs)[0])


def _small_module_family(seed: int, name: str) -> ModuleFamily:
    """A 6-16-3 tanh MLP on a synthetic 3-class problem: a ModuleFamily that trains in milliseconds."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(400, 6, generator=generator)
    y = (x[:, :3] @ torch.randn(3, 3, generator=generator)).argmax(-1)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    return ModuleFamily(
        net, (6,), (x[:300], y[:300]), test_data=(x[300:], y[300:]), num_train=64, num_val=32, batch_size=16, name=name
    )


def test_learned_optimizers_meta_train_on_module_families():
    """Both learned optimizers meta-train through ModuleFamily's torch.func passes (the controller's meta-gradient
    second order by autograd), cycling over two families, and do better on held-out tasks afterwards."""
    families = [_small_module_family(0, "module_a"), _small_module_family(1, "module_b")]
    test = harness_problems(families[0], 16, seed=0)
    controller = LearnedLRController(horizon=20, seed=0)
    before = controller.evaluate_unroll(families[0], test).mean()
    validation = [sample_problems(f, rng.keys_from_seeds(torch.arange(8) + 99), "train") for f in families]
    history = controller.meta_train(
        families, iterations=10, num_tasks=8, horizon=20, truncation=10, validation=validation, validate_every=5
    )
    after = controller.evaluate_unroll(families[0], test).mean()
    assert len(history) == 10 and all(np.isfinite(r["meta_loss"]) for r in history)
    assert np.isfinite(after) and after < before - 0.1, (before, after)

    lstm = CoordinatewiseLSTMOptimizer(seed=0)
    _, lstm_before = lstm.optimize(test, 20, families[0])
    lstm.meta_train(families, iterations=6, num_tasks=8, horizon=20, truncation=10, meta_lr=3e-3)
    _, lstm_after = lstm.optimize(test, 20, families[0])
    assert np.isfinite(lstm_after).all() and lstm_after.mean() < lstm_before.mean() - 0.05, (
        lstm_before.mean(),
        lstm_after.mean(),
    )
    with pytest.raises(ValueError, match="one per training family"):
        controller.meta_train(families, iterations=1, num_tasks=2, horizon=4, validation=validation[:1])


def test_lstm_optimizer_improves_on_held_out_tasks(tmp_path):
    family = make_task_family("quadratic")
    test = harness_problems(family, 32, seed=0)
    model = CoordinatewiseLSTMOptimizer(seed=0)
    curves, before = model.optimize(test, 20, family)
    assert curves.shape == (32, 21) and before.shape == (32,)
    model.meta_train(family, iterations=20, num_tasks=16, horizon=20, truncation=10, meta_lr=1e-2)
    curves, after = model.optimize(test, 20, family)
    assert np.isfinite(after).all() and after.mean() < before.mean() - 0.2, (before.mean(), after.mean())

    path = tmp_path / "lstm.pt"
    model.save(str(path))
    np.testing.assert_array_equal(
        CoordinatewiseLSTMOptimizer.load(str(path)).optimize(test, 5, family)[1], model.optimize(test, 5, family)[1]
    )


def test_preprocess_gradient():
    g = torch.tensor([1.0, -1e-6, 0.0, -2.0])
    out = preprocess_gradient(g, p=10.0)
    assert out.shape == (4, 2)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[1], torch.tensor([-1.0, -1e-6 * math.exp(10.0)]))
    torch.testing.assert_close(out[3], torch.tensor([math.log(2.0) / 10.0, -1.0]))


def test_controller_runs_through_harness_evaluate():
    controller = LearnedLRController(horizon=20)
    env_kwargs = {"task_family": "quadratic", "horizon": 20, "inner_optimizer": "sgd"}
    summaries, records = evaluate(
        {"learned": controller, "constant": ConstantLR(lr=0.01)},
        env_kwargs=env_kwargs,
        num_tasks=8,
        seeds=(0,),
        reference="constant",
    )
    # Untrained, the controller is the constant rate 0.01: the same runs as the constant baseline.
    np.testing.assert_allclose(
        records["learned"][0].log10_final_loss, records["constant"][0].log10_final_loss, rtol=1e-5
    )
    assert summaries["learned"].num_runs == 8
    # And the harness's metric equals the unroll's on the same tasks.
    family = make_task_family("quadratic")
    unrolled = controller.evaluate_unroll(family, harness_problems(family, 8, seed=0), 20)
    np.testing.assert_allclose(records["learned"][0].log10_final_loss, unrolled, rtol=1e-4, atol=1e-5)


def _autograd_hypergradient(family, problems, lr: float, num_steps: int) -> torch.Tensor:
    """d(final loss)/d(log lr) of ``num_steps`` SGD steps on the paired minibatch gradients, with every
    gradient taken by autograd of ``minibatch_loss`` (second order): the reference for the dynamics."""
    log_lr = torch.full((problems.num,), math.log(lr), requires_grad=True)
    params = problems.params.clone()
    for t in range(num_steps):
        key_a, key_b = dynamics.minibatch_keys(problems.run_key, torch.full_like(problems.run_key, t))
        leaf = params if params.requires_grad else params.requires_grad_(True)
        grads = [
            torch.autograd.grad(family.minibatch_loss(leaf, problems.tasks, k).sum(), leaf, create_graph=True)[0]
            for k in (key_a, key_b)
        ]
        params = leaf - torch.exp(log_lr).unsqueeze(-1) * (grads[0] + grads[1]) / 2.0
    (hypergradient,) = torch.autograd.grad(family.loss(params, problems.tasks).sum(), log_lr)
    return hypergradient


@pytest.mark.parametrize("family_name", ["quadratic", "logistic", "sinusoid"])
def test_dynamics_step_is_pure_and_second_order_differentiable(family_name):
    """``dynamics.step`` writes nothing in place, and its gradient in the rate goes through the families'
    hand-written gradients (second order), equal to autograd's all the way."""
    family = make_task_family(family_name)
    problems = sample_problems(family, rng.keys_from_seeds(torch.arange(3) + 40), "train")
    sgd, lr, num_steps = InnerOptimizer("sgd"), 0.02, 3
    state = dynamics.start(family, sgd, problems.params, problems.tasks, problems.run_key, torch.zeros(3))
    before = [t.clone() for t in (*state[:1], *state.opt_state, *state[2:])]
    log_lr = torch.full((3,), math.log(lr), requires_grad=True)
    with torch.enable_grad():
        new = dynamics.step(state, log_lr, family, sgd, problems.tasks, problems.run_key, num_inner_steps=num_steps)
        (hypergradient,) = torch.autograd.grad(new.loss.sum(), log_lr)
    after = [*state[:1], *state.opt_state, *state[2:]]
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "the input state must not change"
    assert int(new.inner_step[0]) == num_steps and torch.equal(new.previous_loss, state.loss)
    reference = _autograd_hypergradient(family, problems, lr, num_steps)
    assert (hypergradient.abs() > 0).all()
    torch.testing.assert_close(hypergradient, reference, rtol=1e-3, atol=1e-6)
