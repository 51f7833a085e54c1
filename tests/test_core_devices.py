"""Every core on every device: batched rows equal single rows there, and a GPU core matches the CPU.

Promise (DESIGN.md): "the GPU path is the CPU path with another ``device``". The ``device`` fixture
(tests/conftest.py) runs each case on the CPU, and on CUDA where a GPU is present (skipped otherwise).
On one device, row ``i`` of a batch seeded ``s`` is bit for bit a one-row core seeded ``s + i``; across
devices the kernels differ (fused multiply-adds, reduction orders), so CPU and CUDA agree to float
tolerance over a short rollout.
"""

from __future__ import annotations

import pytest
import torch

from metaopt_envs import make_core
from metaopt_envs.core import seeds_to_keys

CASES = [
    ("MetaOpt-LR-v0", {"task_family": family, "horizon": 6})
    for family in ("quadratic", "logistic", "sinusoid", "sklearn", "mixture")
] + [
    ("MetaOpt-LR-v0", {"task_family": "mixture", "horizon": 4, "inner_optimizer": "adam", "episodes_per_trial": 2}),
    ("MetaOpt-Ensemble-v0", {"horizon": 6, "warmup": 20}),
    ("MetaOpt-HPO-v0", {"task_family": "mixture", "budget": 5}),
]
STEPS = 9  # past the end of the first episode: resets included


def _rollout(env_id: str, kwargs: dict, rows: slice, device: torch.device) -> list[torch.Tensor]:
    """Observations, rewards and flags of ``STEPS`` decisions with autoresets of rows ``rows`` of a batch of
    five seeded 0..4 (a core of just those rows, seeded alike), as CPU tensors."""
    num_envs = rows.stop - rows.start
    core = make_core(env_id, num_envs=num_envs, device=device, **kwargs)
    keys = seeds_to_keys(rows.start, num_envs, device)
    core.reset_rows(torch.ones(num_envs, dtype=torch.bool, device=device), keys=keys)
    generator = torch.Generator().manual_seed(3)
    record = [core.observe()]
    for _ in range(STEPS):
        actions = 2 * torch.rand((5, *core.single_action_space.shape), generator=generator) - 1
        result = core.step(actions[rows].to(device))
        done = result.terminated | result.truncated
        core.reset_rows(done)
        record += [result.observation, result.reward, done, core.observe()]
    assert all(t.device.type == device.type for t in record)
    return [t.cpu() for t in record]


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=lambda v: v if isinstance(v, str) else str(v))
def test_batched_rows_equal_single_rows_on_the_device(env_id, kwargs, device):
    batch = _rollout(env_id, kwargs, slice(0, 5), device)
    for i in (0, 3):
        single = _rollout(env_id, kwargs, slice(i, i + 1), device)
        for got, want in zip(batch, single):
            assert torch.equal(got[i], want[0])


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=lambda v: v if isinstance(v, str) else str(v))
def test_a_gpu_core_matches_the_cpu_core(env_id, kwargs):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    cpu = _rollout(env_id, kwargs, slice(0, 5), torch.device("cpu"))
    gpu = _rollout(env_id, kwargs, slice(0, 5), torch.device("cuda"))
    for a, b in zip(cpu, gpu):
        if a.dtype == torch.bool:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
