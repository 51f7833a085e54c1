"""The original (additive) hypergradient rule of Baydin et al. (2018) follows its update exactly."""

import numpy as np
import pytest
import torch

import metaopt_envs
from agents.controllers.lr import AdditiveHypergradientLR, ConstantLR
from agents.evaluation.lr import LR_SUITE, run_agent


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_rate_moves_by_beta_times_the_raw_hypergradient(optimizer):
    core = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=4, task_family="logistic", inner_optimizer=optimizer, horizon=12
    )
    core.reset_rows(torch.ones(4, dtype=torch.bool))
    agent = AdditiveHypergradientLR(lr=0.05, beta=0.5)
    agent.bind_core(core)
    obs = core.observe().numpy()
    lr_prev = None
    for step in range(12):
        hypergradient = core.grad_dot_previous_update.double().numpy().copy()
        action, _ = agent.predict(obs)
        result = core.step(torch.as_tensor(action))
        lr = result.info["lr"].double().numpy()
        if lr_prev is None:
            np.testing.assert_allclose(lr, 0.05, rtol=1e-5)
        else:
            expected = np.clip(lr_prev + 0.5 * hypergradient, 1e-4, 10.0)
            np.testing.assert_allclose(lr, expected, rtol=1e-4)
        lr_prev = lr
        obs = result.observation.numpy()
        if step > 0:
            assert np.abs(hypergradient).max() > 0  # the rule did move the rate
    # SGD's update direction is the previous gradient, as in the paper's SGD-HD
    if optimizer == "sgd":
        assert torch.equal(core.grad_dot_previous_update, core.grad_dot_previous_grad)


def test_unbound_rule_says_how_to_bind_it():
    with pytest.raises(RuntimeError, match="bind_core"):
        AdditiveHypergradientLR().predict(np.zeros((2, 8), dtype=np.float32))


def test_from_a_small_rate_it_beats_the_same_constant_on_held_out_logistic_tasks():
    core = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=32, task_family="logistic", split="test")
    constant = run_agent(ConstantLR(lr=1e-3), core, seed=0)
    additive = run_agent(AdditiveHypergradientLR(lr=1e-3, beta=1e-3), core, seed=0)
    assert additive.log10_final_loss.mean() < constant.log10_final_loss.mean() - 0.02
    assert not additive.diverged.any()


def test_bench_spec_builds_it_with_its_arguments():
    agents, _ = LR_SUITE.build_agents(
        ["baseline:hypergradient_additive?lr=0.002&beta=0.01"], {"task_family": "logistic"}, tune_tasks=2
    )
    (agent,) = agents.values()
    assert isinstance(agent, AdditiveHypergradientLR) and (agent.lr, agent.beta) == (0.002, 0.01)
