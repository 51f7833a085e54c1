"""MetaOpt-LR-v0's ``action_mode="hypergradient"``: a correction of hypergradient descent's multiplicative rule.

With the action 0 the env runs the ``hypergradient`` baseline (``beta = hypergradient_beta``, started at
``initial_lr``) step for step; an action multiplies that rule's rate by ``max_lr_change ** a``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaopt_envs
from agents.controllers.lr import HypergradientLR


@pytest.mark.parametrize("family", ["quadratic", "logistic", "sinusoid"])
def test_action_zero_is_the_hypergradient_baseline(family):
    kwargs = {"task_family": family, "horizon": 30, "initial_lr": 0.05}
    ours = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=6, action_mode="hypergradient", hypergradient_beta=0.2, **kwargs
    )
    theirs = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=6, action_mode="absolute", **kwargs)
    keys = metaopt_envs.core.seeds_to_keys(7, 6, "cpu")
    for core in (ours, theirs):
        core.reset_rows(torch.ones(6, dtype=torch.bool), keys=keys)
    baseline = HypergradientLR(lr=0.05, beta=0.2)
    for _ in range(30):
        lr = baseline.learning_rate(theirs.observe().numpy())
        low, high = theirs.log_lr_low, theirs.log_lr_high
        action = 2.0 * (np.log(lr) - low) / (high - low) - 1.0
        mine, reference = (
            ours.step(torch.zeros(6, 1)),
            theirs.step(torch.as_tensor(action, dtype=torch.float32)[:, None]),
        )
        np.testing.assert_allclose(mine.info["lr"], reference.info["lr"], rtol=2e-5)
        np.testing.assert_allclose(mine.info["loss"], reference.info["loss"], rtol=1e-4)


def test_an_action_scales_the_rules_rate():
    core = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=3, task_family="quadratic", action_mode="hypergradient")
    core.step(torch.zeros(3, 1))
    before = core.state.log_lr.clone()
    rule = before + core.hypergradient_beta * metaopt_envs.lr.dynamics.update_cosine(core.state)
    result = core.step(torch.full((3, 1), 0.5))
    expected = (rule + 0.5 * np.log(2.0)).clamp(core.log_lr_low, core.log_lr_high)
    np.testing.assert_allclose(result.info["lr"].log(), expected, atol=1e-5)


@pytest.mark.parametrize("beta", [-0.1, float("nan"), "x"])
def test_bad_beta_names_the_parameter(beta):
    with pytest.raises(ValueError, match="hypergradient_beta"):
        metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=1, action_mode="hypergradient", hypergradient_beta=beta)
