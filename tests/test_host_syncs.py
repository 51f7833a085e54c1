"""No hidden host syncs on the step path: a core's ``step`` keeps every tensor on the core's device.

Promise (DESIGN.md, "the GPU path is the CPU path with another device"): ``core.step(actions)`` with
actions already on the device reads nothing back to the host, so a GPU step is a stream of kernel
launches (and can be captured by a CUDA graph). On the CPU the test records every call that would
copy a device tensor to the host or branch on its value (``.item()``, ``.tolist()``, ``.cpu()``,
``.numpy()``, ``bool(tensor)``, ``int(tensor)``, ``float(tensor)``, ``nonzero`` and the ops whose
output size depends on values); on a GPU, ``torch.cuda.set_sync_debug_mode("error")`` turns any
synchronizing call into an error. Resets (``reset_rows``) may sync: they run only where rows end.

The CPU case runs with the torch-op hash (``rng.set_numpy_hash(False)``): the counter RNG's NumPy path
views CPU tensors with ``.numpy()`` (a zero-copy view, not a read from a device) and never runs on a
GPU, so the code checked here is the code a GPU runs.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import torch

from metaopt_envs import make_core
from metaopt_envs.core import checks, rng

_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "nonzero", "unique", "masked_select")
_FUNCTIONS = ("nonzero", "unique", "masked_select", "argwhere")

CORES = [
    ("MetaOpt-LR-v0", {"task_family": family}) for family in ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")
] + [
    ("MetaOpt-LR-v0", {"task_family": "mixture", "inner_optimizer": "adam", "action_mode": "relative"}),
    ("MetaOpt-LR-v0", {"task_family": "sklearn", "observe_validation": True, "action_every": 2}),
    ("MetaOpt-Ensemble-v0", {}),
    ("MetaOpt-HPO-v0", {"task_family": "mixture"}),
]


@contextlib.contextmanager
def count_host_reads() -> Iterator[Counter[str]]:
    """Count calls of the host-reading tensor methods and functions inside the block."""
    counts: Counter[str] = Counter()
    saved = []

    def recorder(owner: object, name: str):
        original = getattr(owner, name)
        saved.append((owner, name, original))

        def call(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)

        setattr(owner, name, call)

    for name in _METHODS:
        recorder(torch.Tensor, name)
    for name in _FUNCTIONS:
        recorder(torch, name)
    try:
        yield counts
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _actions(core, seed: int) -> torch.Tensor | np.ndarray:
    """Actions as an agent on the core's device passes them: a device tensor on a GPU; on the CPU a
    host array (how the adapters pass them), whose finiteness check is numpy's, not a tensor read."""
    generator = torch.Generator().manual_seed(seed)
    shape = (core.num_envs, *core.single_action_space.shape)
    actions = 2 * torch.rand(shape, generator=generator) - 1
    return actions.numpy() if core.device.type == "cpu" else actions.to(core.device)


@pytest.mark.parametrize(("env_id", "kwargs"), CORES, ids=lambda v: v if isinstance(v, str) else str(v))
def test_step_reads_nothing_back_to_the_host(env_id, kwargs, device):
    core = make_core(env_id, num_envs=12, device=device, **kwargs)
    core.step(_actions(core, 0))  # warm-up: lazily built constants may sync once
    actions = [_actions(core, step + 1) for step in range(3)]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step_actions in actions:
                core.step(step_actions)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return
    previous = rng.set_numpy_hash(False)  # the GPU's code path (see the module docstring)
    try:
        with count_host_reads() as counts:
            for step_actions in actions:
                core.step(step_actions)
    finally:
        rng.set_numpy_hash(previous)
    assert not counts, f"host reads on the step path: {dict(counts)}"


def test_the_recorder_sees_a_host_read():
    """The counter is live: a step that did read a value back would be caught."""
    with count_host_reads() as counts:
        assert bool(torch.ones(2).sum() > 0)
        torch.ones(3).nonzero()
        torch.zeros(1).item()
    assert counts == Counter({"__bool__": 1, "nonzero": 1, "item": 1})


def test_actions_on_an_accelerator_are_checked_without_reading_them():
    """``checks.actions`` on a device tensor (the "meta" device: no data, so any read would raise) clips
    without a host read; on the CPU, a non-finite action still raises."""
    space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    device_actions = torch.full((4, 1), 3.0, device="meta")
    with count_host_reads() as counts:
        out = checks.actions(device_actions, 4, space, torch.device("meta"))
    assert out.shape == (4, 1) and out.device.type == "meta" and not counts
    with pytest.raises(ValueError, match="finite"):
        checks.actions(torch.tensor([[0.0], [float("nan")]]), 2, space, torch.device("cpu"))
