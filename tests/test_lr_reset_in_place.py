"""Partial resets of the LR core written in place.

Promise (``metaopt_envs.lr.core._put_rows``): resetting some rows writes them into the
state's own tensors where a field owns its storage alone and into a new tensor where
fields share storage (with each other or with the tasks), and either way a trajectory is
bit for bit the one of the old out-of-place write (every field rebuilt by ``index_put``).
"""

from __future__ import annotations

import pytest
import torch

import metaopt_envs.lr.core as lr_core
from metaopt_envs import make_core
from metaopt_envs.core import seeds_to_keys
from metaopt_envs.lr import dynamics
from metaopt_envs.lr.optimizers import OptimizerState

NUM_ENVS = 6
HORIZON = 5


def _out_of_place(state, index, fresh, others=()):
    """The write before the in-place reset: every field a new tensor."""
    return dynamics.map_tensors(lambda old, new: old.index_put((index,), new), state, fresh)


def _leaves(state):
    for value in state:
        yield from value if isinstance(value, OptimizerState) else (value,)


def _assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0.0, atol=0.0, equal_nan=True)


def _assert_same_state(a, b):
    for x, y in zip(_leaves(a), _leaves(b)):
        _assert_same(x, y)


def _trajectory(family, optimizer, monkeypatch=None):
    """Steps with partial resets after every one (ended rows, then others alternately on the same task)."""
    if monkeypatch is not None:
        monkeypatch.setattr(lr_core, "_put_rows", _out_of_place)
    core = make_core(
        "MetaOpt-LR-v0",
        num_envs=NUM_ENVS,
        task_family=family,
        inner_optimizer=optimizer,
        horizon=HORIZON,
        lr_range=(1e-4, 1e3),  # action +1 diverges the quadratics: NaN-free resets of diverged rows too
    )
    core.reset_rows(torch.ones(NUM_ENVS, dtype=torch.bool), keys=seeds_to_keys(7, NUM_ENVS, core.device))
    core.reset_rows(torch.arange(NUM_ENVS) % 3 == 0)  # right after a full reset: fields alias each other
    actions = torch.linspace(-1.0, 1.0, NUM_ENVS).unsqueeze(-1)
    records = []
    for t in range(3 * HORIZON):
        result = core.step(actions.roll(t, 0))
        core.reset_rows(result.terminated | result.truncated)
        core.reset_rows(torch.arange(NUM_ENVS) % 4 == t % 4, same_task=t % 2 == 1)
        records.append((result, core.observe(), dynamics.map_tensors(torch.clone, core.state)))
    if monkeypatch is not None:
        monkeypatch.undo()
    return records


@pytest.mark.parametrize(("family", "optimizer"), [("quadratic", "sgd"), ("sinusoid", "adam"), ("mixture", "momentum")])
def test_in_place_trajectory_equals_out_of_place(family, optimizer, monkeypatch):
    reference = _trajectory(family, optimizer, monkeypatch)
    in_place = _trajectory(family, optimizer)
    for (result_a, obs_a, state_a), (result_b, obs_b, state_b) in zip(in_place, reference):
        for x, y in zip(result_a[:4], result_b[:4]):
            _assert_same(x, y)
        assert result_a.info.keys() == result_b.info.keys()
        for name in result_a.info:
            _assert_same(result_a.info[name], result_b.info[name])
        _assert_same(obs_a, obs_b)
        _assert_same_state(state_a, state_b)


@pytest.mark.parametrize("lookahead", [False, True])
def test_step_results_survive_the_reset_that_follows(lookahead):
    core = make_core("MetaOpt-LR-v0", num_envs=NUM_ENVS, task_family="quadratic", horizon=HORIZON)
    core.reset_lookahead = lookahead
    core.step(torch.zeros(NUM_ENVS, 1))
    result = core.step(torch.zeros(NUM_ENVS, 1))
    kept = [value.clone() for value in (*result[:4], *result.info.values())]
    params = core.params
    core.reset_rows(torch.arange(NUM_ENVS) < 2)
    # Written in place on demand; from the lookahead a small field is merged into a new tensor.
    assert (core.params.data_ptr() == params.data_ptr()) == (not lookahead)
    for before, after in zip(kept, (*result[:4], *result.info.values())):
        _assert_same(before, after)


def test_large_fields_are_written_in_place_from_the_lookahead(monkeypatch):
    monkeypatch.setattr(lr_core, "_WHERE_LIMIT", 0)  # every field "large"
    core = make_core("MetaOpt-LR-v0", num_envs=NUM_ENVS, task_family="quadratic", horizon=HORIZON)
    core.step(torch.zeros(NUM_ENVS, 1))
    params = core.params
    core.reset_rows(torch.arange(NUM_ENVS) < 2)
    assert core.params.data_ptr() == params.data_ptr()


def _state(b=4, p=3):
    values = iter(torch.arange(1000, dtype=torch.float32).split(1))

    def fresh(*shape):
        return torch.stack([next(values) for _ in range(int(torch.tensor(shape).prod()))]).reshape(shape)

    fields = {name: fresh(b) for name in dynamics.LRState._fields}
    fields.update(params=fresh(b, p), grad=fresh(b, p), inner_step=torch.arange(b), diverged=torch.zeros(b, dtype=bool))
    fields["opt_state"] = OptimizerState(torch.arange(b), fresh(b, p), fresh(b, p))
    return dynamics.LRState(**fields)


def test_aliased_fields_get_new_tensors_and_their_partners_stay():
    b = 4
    task_params = torch.ones(b, 3)
    stats = torch.zeros(b, 2)  # two fields as columns of one buffer (views)
    state = _state(b)._replace(params=task_params)  # params is a task tensor (init_params may return one)
    state = state._replace(loss=state.initial_loss, grad_norm=stats[:, 0], noise_ratio=stats[:, 1])
    state = state._replace(val_loss=torch.zeros(()).expand(b))  # an expanded tensor: its rows share memory
    fresh = dynamics.map_tensors(lambda t: torch.full_like(t[:2], 7), state)
    index = torch.tensor([1, 3])
    before = dynamics.map_tensors(torch.clone, state)
    expected = _out_of_place(before, index, fresh)
    ptrs = [t.data_ptr() for t in _leaves(state)]
    out = lr_core._put_rows(state, index, fresh, others=(task_params,))
    _assert_same_state(out, expected)
    # The storages shared with another field or a task are not written: they read as before.
    _assert_same(task_params, before.params)
    _assert_same(stats, torch.stack([before.grad_norm, before.noise_ratio], dim=1))
    _assert_same(state.initial_loss, before.initial_loss)
    shared = {"params", "loss", "initial_loss", "grad_norm", "noise_ratio", "val_loss"}
    names = [
        name
        for field in dynamics.LRState._fields
        for name in (OptimizerState._fields if field == "opt_state" else (field,))
    ]
    for name, old_ptr, tensor in zip(names, ptrs, _leaves(out)):
        assert (tensor.data_ptr() == old_ptr) == (name not in shared), name
