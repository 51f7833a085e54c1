"""Meta-learned initialization combined with learned control: MetaOpt-LR-v0's ``initial_params``.

Promises: every inner problem starts from the given vector (in the family's layout, which the
meta-learners' ``initialization()`` follows); a MAML initialization meta-trained briefly starts the
held-out sinusoid tasks at a lower loss than the family's random initialization, and one SGD step
from it helps more; bad vectors raise ``ValueError`` naming ``initial_params``.
"""

from __future__ import annotations

import pytest
import torch

import metaopt_envs
from agents.meta.functional import mlp_forward
from agents.meta.learners import CAVIA, MAML, Reptile
from metaopt_envs.core import seeds_to_keys


def _core(**kwargs):
    core = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=64, task_family="sinusoid", split="test", horizon=5, **kwargs
    )
    core.reset_rows(torch.ones(64, dtype=torch.bool), keys=seeds_to_keys(0, 64, core.device))
    return core


def test_layout_matches_the_family_forward():
    learner = Reptile(seed=3)
    core = _core(initial_params=learner.initialization())
    torch.testing.assert_close(core.params, learner.initialization().expand(64, -1))
    x = core.tasks["inputs"][:2]
    net = {k: v.detach() for k, v in learner.meta["net"].items()}
    torch.testing.assert_close(core.family.forward(core.params[:2], x), mlp_forward(net, x), rtol=1e-5, atol=1e-5)


def test_maml_initialization_starts_lower_and_adapts_faster():
    learner = MAML(seed=0)
    learner.meta_train(num_iterations=300, meta_batch_size=10, shots=10, outer_lr=3e-3, seed=0)
    plain, meta = _core(), _core(initial_params=learner.initialization())
    assert meta.initial_loss.mean() < plain.initial_loss.mean()
    action = torch.full(
        (64, 1), 2 * (torch.log(torch.tensor(0.01)) - plain.log_lr_low) / (plain.log_lr_high - plain.log_lr_low) - 1
    )
    for core in (plain, meta):
        core.step(action)
    assert meta.loss.mean() < plain.loss.mean()


def test_bad_initial_params_and_cavia_raise():
    with pytest.raises(ValueError, match="initial_params"):
        _core(initial_params=torch.zeros(5))
    with pytest.raises(ValueError, match="initial_params"):
        _core(initial_params=torch.full((1761,), float("nan")))
    with pytest.raises(ValueError, match="initialization"):
        CAVIA().initialization()
