"""Shared test configuration.

The suite runs on small CPU machines: one torch thread avoids oversubscribing
the cores (and keeps timings stable). Importing ``metaopt_envs`` here registers
the ``MetaOpt-*`` ids for every test module.
"""

from __future__ import annotations

import pytest
import torch

import metaopt_envs  # noqa: F401  (registers MetaOpt-LR-v0)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Keep torch on one thread even if a test or a library changed it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
"""The devices a core test runs on: the CPU always, CUDA where a GPU is present (skipped otherwise)."""


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """``torch.device`` of each of :data:`DEVICES`; a test that takes ``device`` runs once per device."""
    return torch.device(request.param)
