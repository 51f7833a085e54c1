"""MetaOpt-Acquisition-v0's ``candidate_pool``: the shown candidates are the best-EI points of a large pool,
the option off is the env as before, rows stay independent, and EI over the pool's best finds better points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metaopt_envs
from agents.controllers.acquisition import ExpectedImprovementScores
from agents.evaluation.hpo import ACQUISITION_SUITE
from metaopt_envs.core import seeds_to_keys
from metaopt_envs.hpo import gp

ID = "MetaOpt-Acquisition-v0"
SMALL = {"task_family": "hartmann3", "budget": 8, "max_dim": 6, "num_candidates": 8, "num_local": 2, "fit_steps": 5}


def _core(n: int, seed: int = 5, **kwargs):
    core = metaopt_envs.make_core(ID, num_envs=n, **{**SMALL, **kwargs})
    core.reset_rows(torch.ones(n, dtype=torch.bool), keys=seeds_to_keys(seed, n, core.device))
    return core


def _actions(steps: int, n: int, width: int) -> torch.Tensor:
    return torch.rand(steps, n, width, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_the_shown_candidates_are_the_best_ei_points_of_the_pool(monkeypatch):
    core = _core(3, candidate_pool=64)
    for action in _actions(3, 3, 8):
        core.step(action)
    scored: list[torch.Tensor] = []  # every point set the env puts through the posterior in one refresh
    posterior = gp.gp_posterior

    def recording(x, y, x_test, *args, **kwargs):
        scored.append(x_test.clone())
        return posterior(x, y, x_test, *args, **kwargs)

    monkeypatch.setattr(gp, "gp_posterior", recording)
    core.step(_actions(1, 3, 8)[0])
    monkeypatch.undo()
    pool, refine, shown = scored
    assert pool.shape == (3, 64 + 16, 6) and refine.shape == (3, 4, 6) and shown.shape == (3, 8, 6)
    assert torch.equal(shown, core.candidates)
    # EI computed here, from the env's data and fitted hyperparameters, over the whole pool
    rows = torch.arange(3)
    z, valid = core.targets(rows)
    ls, s2, noise = (p.exp() for p in core.log_params)
    best = torch.where(valid, z, torch.full_like(z, np.inf)).min(-1).values.unsqueeze(-1)
    everything = torch.cat([pool, refine], 1)
    mean, std = posterior(core.X, z, everything, ls, s2, noise, point_mask=valid)
    log_ei = gp.log_expected_improvement(mean, std, best)
    # the 6 best of the 64 Sobol points, then the 2 best of the local part (16 neighbours + 4 refinements)
    top = torch.cat([log_ei[:, :64].topk(6, dim=-1).indices, 64 + log_ei[:, 64:].topk(2, dim=-1).indices], 1)
    torch.testing.assert_close(shown, everything.gather(1, top.unsqueeze(-1).expand(-1, -1, 6)), rtol=0, atol=0)
    assert (log_ei.max(-1).values == log_ei.gather(1, top).max(-1).values).all()  # the pool's best is shown
    # the refinement round perturbs the pool's best points finely (scales <= 0.03, 3 active dims)
    centres = pool.gather(1, log_ei[:, :-4].topk(4, dim=-1).indices.unsqueeze(-1).expand(-1, -1, 6))
    assert (torch.cdist(refine, centres).diagonal(dim1=-2, dim2=-1) < 0.31).all()


def test_no_pool_is_the_env_as_before():
    """``candidate_pool=0`` (the default) draws exactly the old candidates: same Sobol set, same keys."""
    default, explicit = _core(2), _core(2, candidate_pool=0)
    assert default.sobol.shape == (8 - 2, 6)
    for action in _actions(4, 2, 8):
        for core in (default, explicit):
            core.step(action)
        assert torch.equal(default.observe(), explicit.observe())
    # and the pool changes what is shown
    pooled = _core(2, candidate_pool=32)
    for action in _actions(4, 2, 8):
        pooled.step(action)
    assert not torch.equal(pooled.candidates, default.candidates)


def test_pooled_rows_equal_single_rows_bit_for_bit():
    n = 3
    batched = _core(n, candidate_pool=48)
    singles = [metaopt_envs.make_core(ID, num_envs=1, **SMALL, candidate_pool=48) for _ in range(n)]
    keys = seeds_to_keys(5, n, batched.device)
    for i, single in enumerate(singles):
        single.reset_rows(torch.ones(1, dtype=torch.bool), keys=keys[i : i + 1])
    for action in _actions(SMALL["budget"] - 1, n, 8):
        batched.step(action)
        for i, single in enumerate(singles):
            single.step(action[i : i + 1])
        assert torch.equal(batched.observe(), torch.cat([s.observe() for s in singles]))


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (-1, r"candidate_pool must be an int >= 0 \(0: no pool, else >= num_candidates\), got -1"),
        (4, r"candidate_pool must be 0 \(no pool\) or >= num_candidates=8 and >= 4 \* num_local=8 .*got 4"),
        (64.0, r"candidate_pool must be an int >= 0 .*got 64.0"),
        (True, r"candidate_pool must be an int >= 0 .*got True"),
    ],
)
def test_bad_candidate_pool_is_rejected_with_its_value(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        metaopt_envs.make_core(ID, num_envs=1, **SMALL, candidate_pool=value)
    with pytest.raises(ValueError, match=r"candidate_pool must be .* >= 4 \* num_local=12 .*got 10"):
        metaopt_envs.make_core(ID, num_envs=1, **{**SMALL, "num_local": 3}, candidate_pool=10)


def test_expected_improvement_over_the_pool_beats_it_over_the_plain_candidates():
    kwargs = {**SMALL, "budget": 16, "num_candidates": 16, "num_local": 4, "fit_steps": 10, "split": "test"}
    agents = {"pool": ExpectedImprovementScores(), "plain": ExpectedImprovementScores()}
    _, records = ACQUISITION_SUITE.evaluate(
        agents, kwargs, num_tasks=16, seeds=(0,), agent_env_kwargs={"pool": {"candidate_pool": 512}}
    )
    pool, plain = (records[name][0].log10_regret for name in ("pool", "plain"))
    assert np.median(pool) < np.median(plain) - 0.5  # measured: -2.10 vs -1.01
    assert (pool < plain).mean() > 0.5  # measured: 10 of 16
