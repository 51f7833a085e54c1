"""Gradient-based meta-learners (agents.meta) on the sinusoid family: learning, exact meta-gradients."""

from __future__ import annotations

import pytest
import torch

from agents.meta import CAVIA, FOMAML, LEARNERS, MAML, SinusoidTasks, mlp_forward, mse, support_query
from agents.meta.learners import _leaves

SHOTS = 10


@pytest.fixture(scope="module")
def test_tasks():
    return SinusoidTasks().sample(200, SHOTS, 50, "test", seed=123)


# name -> (inner_steps while training, inner lr)
TRAIN_SETTINGS = {
    "maml": (1, 0.01),
    "fomaml": (1, 0.01),
    "reptile": (5, 0.01),
    "metasgd": (1, 0.01),
    "cavia": (1, 1.0),
    "pretrained": (1, 0.01),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_meta_training_beats_random_init(name, test_tasks):
    steps, lr = TRAIN_SETTINGS[name]
    learner = LEARNERS[name](seed=0, inner_lr=lr)
    before = learner.adapt_and_evaluate(test_tasks, SHOTS, 1, lr=lr)
    assert before.shape == (200, 2)
    learner.meta_train(300, meta_batch_size=10, shots=SHOTS, inner_steps=steps, inner_lr=lr, outer_lr=3e-3, seed=0)
    after = learner.adapt_and_evaluate(test_tasks, SHOTS, 1)
    assert torch.isfinite(after).all()
    assert after[:, 1].mean() < 0.9 * before[:, 1].mean(), (name, before.mean(0), after.mean(0))


def _tiny_tasks():
    return SinusoidTasks().sample(4, 5, 7, "train", seed=7, dtype=torch.float64)


def _tiny(cls, **kw):
    return cls(hidden=(8, 8), seed=3, dtype=torch.float64, **kw)


def test_maml_meta_gradient_matches_finite_differences():
    tasks, steps, lr = _tiny_tasks(), 2, 0.1
    learner = _tiny(MAML)
    _, g = learner.meta_gradient(tasks, 5, steps, lr)
    gen = torch.Generator().manual_seed(0)
    direction = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in learner.meta["net"].items()}
    analytic = sum((g["net"][k] * direction[k]).sum() for k in direction)
    eps = 1e-5

    def at(sign):
        meta = {"net": {k: (v + sign * eps * direction[k]).detach() for k, v in learner.meta["net"].items()}}
        return learner.meta_loss(tasks, 5, steps, lr, meta=meta)

    numeric = (at(1.0) - at(-1.0)) / (2 * eps)
    assert torch.allclose(analytic, numeric, rtol=1e-6, atol=1e-9), (analytic, numeric)


def test_fomaml_gradient_is_query_gradient_at_adapted_params():
    tasks, steps, lr = _tiny_tasks(), 2, 0.1
    maml, fomaml = _tiny(MAML), _tiny(FOMAML)
    _, g_second = maml.meta_gradient(tasks, 5, steps, lr)
    _, g_first = fomaml.meta_gradient(tasks, 5, steps, lr)

    # Reference: plain autograd, one task at a time.
    xs, ys, xq, yq = support_query(tasks, 5)
    theta = {k: v.detach() for k, v in fomaml.meta["net"].items()}
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(xs.shape[0]):
        fast = dict(theta)
        for _ in range(steps):
            leaf = {k: v.clone().requires_grad_(True) for k, v in fast.items()}
            grads = torch.autograd.grad(mse(mlp_forward(leaf, xs[i]), ys[i]), list(leaf.values()))
            fast = {k: v - lr * d for (k, v), d in zip(leaf.items(), grads)}
            fast = {k: v.detach() for k, v in fast.items()}
        leaf = {k: v.clone().requires_grad_(True) for k, v in fast.items()}
        grads = torch.autograd.grad(mse(mlp_forward(leaf, xq[i]), yq[i]), list(leaf.values()))
        for k, d in zip(leaf, grads):
            expected[k] += d / xs.shape[0]

    for k in expected:
        assert torch.allclose(g_first["net"][k], expected[k], rtol=1e-10, atol=1e-12), k
    diff = torch.cat([(g_first["net"][k] - g_second["net"][k]).flatten() for k in expected]).norm()
    scale = torch.cat([g_second["net"][k].flatten() for k in expected]).norm()
    assert diff > 1e-3 * scale


def test_adapt_and_evaluate_matches_per_task_sgd():
    tasks, lr = _tiny_tasks(), 0.1
    learner = _tiny(MAML)
    batched = learner.adapt_and_evaluate(tasks, 5, 3, lr=lr)
    xs, ys, xq, yq = support_query(tasks, 5)
    for i in range(xs.shape[0]):
        fast = {k: v.detach().clone() for k, v in learner.meta["net"].items()}
        losses = [mse(mlp_forward(fast, xq[i]), yq[i])]
        for _ in range(3):
            leaf = {k: v.requires_grad_(True) for k, v in fast.items()}
            grads = torch.autograd.grad(mse(mlp_forward(leaf, xs[i]), ys[i]), list(leaf.values()))
            fast = {k: (v - lr * d).detach() for (k, v), d in zip(leaf.items(), grads)}
            losses.append(mse(mlp_forward(fast, xq[i]), yq[i]))
        assert torch.allclose(batched[i], torch.stack(losses).detach(), rtol=1e-10)


def test_cavia_adapts_only_context():
    tasks = _tiny_tasks()
    learner = _tiny(CAVIA, num_context=3)
    before = [p.detach().clone() for p in _leaves(learner.meta)]
    out = learner.adapt_and_evaluate(tasks, 5, 2)
    assert out.shape == (4, 3) and (out[:, 2] != out[:, 0]).all()
    assert all(torch.equal(a, b) for a, b in zip(before, _leaves(learner.meta)))
    _, g = learner.meta_gradient(tasks, 5, 1, 1.0)
    assert set(g) == {"net"} and g["net"]["w0"].shape == (4, 8)


def test_train_and_test_tasks_differ_and_are_keyed():
    s = SinusoidTasks()
    a = s.sample(5, 5, 5, "train", seed=0)
    b = s.sample(5, 5, 5, "train", seed=0)
    c = s.sample(5, 5, 5, "test", seed=0)
    wide = s.sample(5, 20, 5, "train", seed=0)
    assert torch.equal(a["inputs"], b["inputs"]) and not torch.equal(a["amplitude"], c["amplitude"])
    assert torch.equal(wide["inputs"][:, :5], a["inputs"])  # 5-shot support is a prefix of 20-shot
    assert (a["amplitude"] >= 0.1).all() and (a["amplitude"] <= 5).all()
