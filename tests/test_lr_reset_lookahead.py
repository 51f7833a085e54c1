"""Resets of some LR rows from start states made ahead (``LRCore.reset_lookahead``).

Promise: with the lookahead a run is bit for bit the run without it (observations, rewards, flags,
the whole state, the tasks, the keys), whatever the pattern of resets: ended rows, rows reset on the
same task, reseeded rows, counters rewound as a restored checkpoint rewinds them, resets of every
row; and the lookahead is really used: rows reset one at a time sample their new tasks in one batched
call per round of the rows, not one call per reset.
"""

from __future__ import annotations

import pytest
import torch

from metaopt_envs import make_core
from metaopt_envs.core import seeds_to_keys
from metaopt_envs.lr.families import NoisyQuadraticFamily
from metaopt_envs.lr.optimizers import OptimizerState

NUM_ENVS = 7
HORIZON = 6


class _StartAtTheOptimumTensor(NoisyQuadraticFamily):
    """``init_params`` returns a task tensor itself (allowed): the state's ``params`` and the task's
    ``start`` are one tensor, which a reset of some rows must not write through."""

    name = "quadratic_start_tensor"

    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["start"] = tasks["optimum"] + 1.0
        return tasks

    def init_params(self, tasks, keys):
        return tasks["start"]


def _leaves(state):
    for value in state:
        yield from value if isinstance(value, OptimizerState) else (value,)


def _assert_same(a, b):
    torch.testing.assert_close(a, b, rtol=0.0, atol=0.0, equal_nan=True)


def _snapshot(core):
    return [
        core.observe(),
        *(leaf.clone() for leaf in _leaves(core.state)),
        *(value.clone() for _, value in sorted(core.tasks.items())),
        *(getattr(core, name).clone() for name in ("row_key", "episode_index", "inner_episode", "task_key", "run_key")),
    ]


def _run(family, optimizer, lookahead, kwargs):
    """A scripted run; the snapshots after every operation."""
    core = make_core(
        "MetaOpt-LR-v0",
        num_envs=NUM_ENVS,
        task_family=_StartAtTheOptimumTensor() if family == "start_tensor" else family,
        inner_optimizer=optimizer,
        horizon=HORIZON,
        lr_range=(1e-4, 1e3),  # the largest actions diverge: rows end at different times
        **kwargs,
    )
    core.reset_lookahead = lookahead
    core.reset_rows(torch.ones(NUM_ENVS, dtype=torch.bool), keys=seeds_to_keys(3, NUM_ENVS, core.device))
    gen = torch.Generator().manual_seed(0)
    snapshots = []
    for t in range(5 * HORIZON):
        actions = torch.rand(NUM_ENVS, 1, generator=gen) * 2.0 - 1.0
        result = core.step(actions)
        snapshots.append([result.observation, result.reward, result.terminated, result.truncated])
        core.reset_rows(result.terminated | result.truncated)
        snapshots.append(_snapshot(core))
        rows = torch.rand(NUM_ENVS, generator=gen) < 0.3
        core.reset_rows(rows, same_task=bool(t % 3 == 1))
        snapshots.append(_snapshot(core))
        if t % 7 == 3:  # reseed two rows
            rows = torch.zeros(NUM_ENVS, dtype=torch.bool)
            rows[[t % NUM_ENVS, (t + 2) % NUM_ENVS]] = True
            core.reset_rows(rows, keys=seeds_to_keys(100 + t, NUM_ENVS, core.device))
            snapshots.append(_snapshot(core))
        if t % 9 == 5:  # rewind a row's episode counter (as restoring a checkpoint does), then replay its reset
            rows = torch.zeros(NUM_ENVS, dtype=torch.bool)
            rows[t % NUM_ENVS] = True
            core.episode_index[rows] -= 1
            core.reset_rows(rows)
            snapshots.append(_snapshot(core))
        if t % 11 == 10:
            core.reset_rows(torch.ones(NUM_ENVS, dtype=torch.bool))
            snapshots.append(_snapshot(core))
            core.reset_rows(torch.arange(NUM_ENVS) % 3 == 0)  # right after a full reset: fields alias each other
            snapshots.append(_snapshot(core))
    return snapshots


@pytest.mark.parametrize(
    ("family", "optimizer", "kwargs"),
    [
        ("quadratic", "sgd", {}),
        ("logistic", "adam", {}),
        ("sinusoid", "momentum", {}),
        ("sklearn", "sgd", {"observe_validation": True}),
        ("mixture", "sgd", {}),
        ("quadratic", "sgd", {"initial_params": torch.zeros(32)}),
        ("start_tensor", "momentum", {}),
    ],
)
def test_lookahead_run_equals_resets_on_demand(family, optimizer, kwargs):
    with_lookahead = _run(family, optimizer, True, kwargs)
    on_demand = _run(family, optimizer, False, kwargs)
    assert len(with_lookahead) == len(on_demand)
    for a, b in zip(with_lookahead, on_demand):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)


def _count_samples(core):
    """Wrap the core's family's ``sample``: returns the list of row counts of each call."""
    calls = []
    sample = core.family.sample

    def counted(keys, split):
        calls.append(int(keys.shape[0]))
        return sample(keys, split)

    core.family.sample = counted
    return calls


@pytest.mark.parametrize("lookahead", [True, False])
def test_rows_reset_one_at_a_time_sample_their_tasks_in_batches(lookahead):
    core = make_core("MetaOpt-LR-v0", num_envs=NUM_ENVS, task_family="quadratic", horizon=HORIZON)
    core.reset_lookahead = lookahead
    calls = _count_samples(core)
    for i in range(2 * NUM_ENVS):  # each row twice, one at a time
        core.reset_rows(torch.arange(NUM_ENVS) == i % NUM_ENVS)
        core.step(torch.zeros(NUM_ENVS, 1))
    if lookahead:  # every row's next task at the first reset, again when row 0 comes round
        assert calls == [NUM_ENVS, NUM_ENVS]
    else:
        assert calls == [1] * (2 * NUM_ENVS)


def test_a_row_reset_again_before_the_others_is_reset_on_demand():
    core = make_core("MetaOpt-LR-v0", num_envs=NUM_ENVS, task_family="quadratic", horizon=HORIZON)
    calls = _count_samples(core)
    first = torch.arange(NUM_ENVS) == 0
    for _ in range(3):
        core.reset_rows(first)
    # The first reset makes every row's next task; then only row 0's is missing: nothing to batch.
    assert calls == [NUM_ENVS, 1, 1]


def test_same_task_resets_use_the_lookahead_too():
    core = make_core("MetaOpt-LR-v0", num_envs=NUM_ENVS, task_family="quadratic", horizon=HORIZON)
    core.reset_lookahead = True
    starts = []
    start = core._start

    def counted(tasks, task_key, inner_episode):
        starts.append(int(task_key.shape[0]))
        return start(tasks, task_key, inner_episode)

    core._start = counted
    for i in range(NUM_ENVS):
        core.reset_rows(torch.arange(NUM_ENVS) == i, same_task=True)
    assert starts == [NUM_ENVS]
