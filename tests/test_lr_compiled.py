"""The MLP families' opt-in compiled measurement (``mlp.set_compiled``) against the eager reference.

Promise (``metaopt_envs.lr.families.mlp`` docstring): the eager path is the default and the
reference; the ``torch.compile``'d blocks are close to it, within ``rtol=1e-4, atol=1e-6`` on the loss,
the two minibatch gradients and the gradient statistics of one measurement and within ``rtol=1e-4, atol=1e-5`` on the
observations of a few decisions; rows of a compiled batch equal compiled one-row cores within
the same tolerance (blocks of other sizes than powers of two from 32 stay eager, bit for bit);
where compiling fails, a warning and the eager numbers, bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from metaopt_envs.core import seeds_to_keys
from metaopt_envs.lr.core import LRCore
from metaopt_envs.lr.families import mlp
from metaopt_envs.lr.families.mlp import SinusoidMLPFamily, SklearnMLPFamily

FAMILIES = {"sinusoid": SinusoidMLPFamily, "sklearn": SklearnMLPFamily}
MEASURE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}
OBS_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def _compiler_available() -> bool:
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(2))
    except Exception:  # no C++ compiler, ...
        return False
    return True


@pytest.fixture
def compiled_mlp():
    if not _compiler_available():
        pytest.skip("torch.compile does not work here")
    assert mlp.set_compiled(True)
    assert mlp.compiled()
    yield
    mlp.set_compiled(False)
    assert not mlp.compiled()


def _measurement(family: mlp.MLPFamily, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = seeds_to_keys(3, num, torch.device("cpu"))
    tasks = family.sample(keys, "train")
    params = family.init_params(tasks, keys + 1)
    with torch.no_grad():
        return family.loss_and_paired_grads(params, tasks, keys + 2, keys + 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_compiled_measurement_is_close_to_eager(name, compiled_mlp):
    """Loss and both gradients of 72 problems in blocks of 32 (compiled) and a last block of 8 (eager)."""
    family = FAMILIES[name]()
    family.block_rows = 32
    mlp.set_compiled(False)
    eager_loss, eager_grads = _measurement(family, 72)
    mlp.set_compiled(True)
    loss, grads = _measurement(family, 72)
    assert torch.equal(grads[64:], eager_grads[64:]), "a block of 8 rows should stay eager"
    assert mlp.compiled(), "the compiled block fell back to eager"
    torch.testing.assert_close(loss, eager_loss, **MEASURE_TOLERANCE)
    torch.testing.assert_close(grads, eager_grads, **MEASURE_TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_compiled_statistics_are_close_to_eager(name, compiled_mlp):
    """``measure_paired`` (loss, mean gradient, its norm, noise ratio; the statistics fused into the compiled
    block) of 72 problems in blocks of 32 and a last one of 8, against eager."""
    family = FAMILIES[name]()
    family.block_rows = 32
    keys = seeds_to_keys(5, 72, torch.device("cpu"))
    tasks = family.sample(keys, "train")
    params = family.init_params(tasks, keys + 1)

    def measured() -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return family.measure_paired(params, tasks, keys + 2, keys + 3, params.new_empty(params.shape))

    mlp.set_compiled(False)
    eager = measured()
    mlp.set_compiled(True)
    got = measured()
    assert mlp.compiled(), "the compiled block fell back to eager"
    for name_, g, e in zip(("loss", "grad", "grad_norm", "noise_ratio"), got, eager):
        torch.testing.assert_close(g, e, **MEASURE_TOLERANCE, msg=name_)
        assert torch.equal(g[64:], e[64:]), f"{name_}: a block of 8 rows should stay eager"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_compiled_rows_equal_single_rows_and_eager(name, compiled_mlp):
    """Rows of a compiled batch of 32 stay within tolerance of one-row cores (eager: one row is not a compiled
    shape) and of the eager batch."""
    num_envs, steps = 32, 5
    actions = torch.linspace(-0.8, 0.3, num_envs * steps).view(steps, num_envs, 1)

    def rollout(num: int, first_seed: int, row_actions: torch.Tensor) -> list[torch.Tensor]:
        core = LRCore(num_envs=num, task_family=name, horizon=50, inner_optimizer="adam")
        core.reset_rows(torch.ones(num, dtype=torch.bool), keys=seeds_to_keys(first_seed, num, core.device))
        return [core.step(row_actions[t]).observation for t in range(steps)]

    batch = rollout(num_envs, 0, actions)
    singles = [rollout(1, row, actions[:, row : row + 1]) for row in (0, 13, 31)]
    assert mlp.compiled(), "the compiled block fell back to eager"
    mlp.set_compiled(False)
    eager = rollout(num_envs, 0, actions)
    for t in range(steps):
        torch.testing.assert_close(batch[t], eager[t], **OBS_TOLERANCE)
        for row, single in zip((0, 13, 31), singles):
            torch.testing.assert_close(batch[t][row], single[t][0], **OBS_TOLERANCE)


def test_a_failing_compile_falls_back_to_eager(monkeypatch):
    """Where compiling fails (no compiler), a warning says so and the eager numbers come back, bit for bit."""

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler")

        return call

    family = SinusoidMLPFamily()
    family.block_rows = 32
    expected = _measurement(family, 64)
    keys = seeds_to_keys(3, 64, torch.device("cpu"))
    tasks = family.sample(keys, "train")
    with torch.no_grad():
        expected_measure = family.measure_paired(family.init_params(tasks, keys + 1), tasks, keys + 2, keys + 3)
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(mlp, "_kernels", {})
    try:
        assert mlp.set_compiled(True)
        with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
            got = _measurement(family, 64)
        assert not mlp.compiled()
        assert all(torch.equal(g, e) for g, e in zip(got, expected))
        assert mlp.set_compiled(True)
        with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"), torch.no_grad():
            got_measure = family.measure_paired(family.init_params(tasks, keys + 1), tasks, keys + 2, keys + 3)
        assert all(torch.equal(g, e) for g, e in zip(got_measure, expected_measure))
    finally:
        mlp.set_compiled(False)


def test_eager_is_the_default():
    assert not mlp.compiled()
