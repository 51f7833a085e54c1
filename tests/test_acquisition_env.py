"""MetaOpt-Acquisition-v0: the GP posterior it shows, its candidates, and what a hand-designed acquisition
function does with them (the contract suite covers the env API, seeding and batched == single)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaopt_envs
from agents.controllers.acquisition import ExpectedImprovementScores, LowerConfidenceBound, RandomCandidate
from agents.controllers.hpo import GPEI
from agents.evaluation.hpo import ACQUISITION_SUITE
from metaopt_envs.core import seeds_to_keys
from metaopt_envs.hpo import gp

ID = "MetaOpt-Acquisition-v0"


def _core(n=4, **kwargs):
    core = metaopt_envs.make_core(ID, num_envs=n, **{"task_family": "branin", "budget": 12, **kwargs})
    core.reset_rows(torch.ones(n, dtype=torch.bool), keys=seeds_to_keys(5, n, core.device))
    return core


def test_padded_points_change_neither_the_posterior_nor_the_fit():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, 2, generator=g, dtype=torch.float64) * 2 - 1
    z = torch.randn(3, 7, generator=g, dtype=torch.float64)
    test = torch.rand(3, 5, 2, generator=g, dtype=torch.float64) * 2 - 1
    dims = torch.ones(3, 2, dtype=torch.bool)
    padded_x = torch.cat([x, torch.rand(3, 4, 2, generator=g, dtype=torch.float64)], 1)
    padded_z = torch.cat([z, torch.zeros(3, 4, dtype=torch.float64)], 1)
    mask = torch.arange(11) < 7
    mask = mask.expand(3, 11)
    fits = []
    for xs, zs, pm in ((x, z, None), (padded_x, padded_z, mask)):
        params = [p.log() for p in gp.default_hyperparameters(dims)]
        gp.fit_log_hyperparameters(xs, zs, dims, params, steps=25, lr=0.1, point_mask=pm)
        ls, s2, noise = (p.exp() for p in params)
        fits.append((ls, s2, noise, *gp.gp_posterior(xs, zs, test, ls, s2, noise, point_mask=pm)))
    for plain, padded in zip(*fits):
        torch.testing.assert_close(plain, padded, rtol=1e-9, atol=1e-10)
    # the fit moved away from the prior, so the comparison above is not between two untouched starts
    assert not torch.allclose(fits[0][0], gp.default_hyperparameters(dims).lengthscales)
    # no points at all: the prior
    mean, std = gp.gp_posterior(padded_x, padded_z, test, *gp.default_hyperparameters(dims), point_mask=mask & False)
    torch.testing.assert_close(mean, torch.zeros_like(mean))
    torch.testing.assert_close(std, torch.ones_like(std))


def test_a_search_starts_at_the_prior_and_then_shows_its_own_data():
    core = _core(n=2, num_candidates=8, num_local=2)
    f = core.observe().reshape(2, 8, -1)
    assert torch.equal(f[..., 0], torch.zeros(2, 8)) and torch.equal(f[..., 1], torch.ones(2, 8))
    assert torch.equal(f[..., 2:4], torch.zeros(2, 8, 2))
    assert (f[..., 4:].abs() <= 1).all() and f[..., 4:].abs().sum() > 0
    chosen = f[:, 3, 4:].clone()
    action = -torch.ones(2, 8)
    action[:, 3] = 1.0
    result = core.step(action)
    assert torch.equal(result.info["candidate"], torch.tensor([3, 3]))
    torch.testing.assert_close(core.search.x, chosen)  # the scored-best candidate was evaluated
    f = core.observe().reshape(2, 8, -1)
    np.testing.assert_allclose(f[..., 3].numpy(), 1 / 12)
    # one point: standardized target 0 there, the posterior mean near 0 and the std smallest next to it
    assert (f[..., 1] < 1.0).all()


def test_same_seed_same_objectives_as_the_hpo_search():
    acq, hpo = _core(), metaopt_envs.make_core("MetaOpt-HPO-v0", num_envs=4, task_family="branin", budget=12)
    hpo.reset_rows(torch.ones(4, dtype=torch.bool), keys=seeds_to_keys(5, 4, hpo.device))
    for name, value in hpo.tasks.items():
        torch.testing.assert_close(acq.tasks[name], value)


def test_expected_improvement_on_the_posterior_finds_better_points_than_chance():
    kwargs = {"task_family": "branin", "budget": 16, "split": "test"}
    agents = {"ei": ExpectedImprovementScores(), "lcb": LowerConfidenceBound(), "random": RandomCandidate()}
    _, records = ACQUISITION_SUITE.evaluate(agents, kwargs, num_tasks=16, seeds=(0,))
    regret = {name: np.median(recs[0].log10_regret) for name, recs in records.items()}
    assert regret["ei"] < regret["random"] - 0.5 and regret["lcb"] < regret["random"] - 0.3


def test_the_searches_run_on_the_hpo_id_with_the_same_tasks():
    suite = ACQUISITION_SUITE
    kwargs = {"task_family": "branin", "budget": 6, "num_candidates": 8, "num_local": 2}
    assert suite.agent_env(GPEI(), dict(kwargs)) == ("MetaOpt-HPO-v0", {"task_family": "branin", "budget": 6})
    assert suite.agent_env(ExpectedImprovementScores(), dict(kwargs)) == (ID, kwargs)
    agents, _ = suite.build_agents(["baseline:random", "baseline:acq_random"], kwargs, 0)
    summaries, records = suite.evaluate(agents, kwargs, num_tasks=4, seeds=(0,))
    assert set(records) == {"random", "acq_random"}
    assert summaries["acq_random"].win_rate is not None  # against HPO random search, on the same objectives


def test_bad_observation_width_names_num_candidates():
    with pytest.raises(ValueError, match="num_candidates=64"):
        ExpectedImprovementScores().predict(np.zeros((2, 30), np.float32))
    with pytest.raises(ValueError, match="num_candidates must be an int >= 2"):
        RandomCandidate(num_candidates=1)
