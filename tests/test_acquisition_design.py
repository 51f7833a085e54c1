"""MetaOpt-Acquisition-v0's ``num_initial``: the first evaluations of a search are an initial design.

As GP-EI's Sobol design: the first ``num_initial`` points do not depend on the actions (every candidate is the
design's next point), they are spread (a shifted Sobol set), rows stay independent, the policy's choice there
carries no gradient, and the option off is the env as before.
"""

from __future__ import annotations

import pytest
import torch

import metaopt_envs
from agents.evaluation.hpo import ACQUISITION_SUITE, ENV_ID
from agents.rl2.acquisition_policy import CandidateScorePolicy
from metaopt_envs.core import seeds_to_keys

ID = "MetaOpt-Acquisition-v0"
SMALL = {"task_family": "hartmann3", "budget": 9, "max_dim": 6, "num_candidates": 8, "num_local": 2, "fit_steps": 5}


def _core(n: int, seed: int = 5, **kwargs):
    core = metaopt_envs.make_core(ID, num_envs=n, **{**SMALL, **kwargs})
    core.reset_rows(torch.ones(n, dtype=torch.bool), keys=seeds_to_keys(seed, n, core.device))
    return core


def _evaluated(core, actions: torch.Tensor) -> torch.Tensor:
    """The points ``(n, steps, D)`` the core evaluates under ``actions (steps, n, N)``."""
    points = []
    for action in actions:
        core.step(action)
        points.append(core.search.x.clone())
    return torch.stack(points, 1)


def _actions(seed: int, steps: int = 8, n: int = 3) -> torch.Tensor:
    return torch.rand(steps, n, SMALL["num_candidates"], generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("candidate_pool", [0, 32])
def test_the_design_is_evaluated_whatever_the_actions(candidate_pool):
    first = _evaluated(_core(3, num_initial=4, candidate_pool=candidate_pool), _actions(0))
    second = _evaluated(_core(3, num_initial=4, candidate_pool=candidate_pool), _actions(1))
    assert torch.equal(first[:, :4], second[:, :4])  # the design
    assert not (first[:, 4:] == second[:, 4:]).all(-1).all(-1).any()  # then the actions choose, in every row
    design = first[:, :4, :3]
    assert (design.abs() <= 1).all() and (first[:, :, 3:] == 0).all()  # hartmann3: 3 active dims of 6
    # spread: no two design points of a row closer than 0.2 (a shifted Sobol set, not a cluster)
    distances = torch.cdist(design, design) + 10 * torch.eye(4)
    assert distances.min() > 0.2
    # each row and each inner episode shifts the design anew
    assert not torch.equal(design[0], design[1])
    core = _core(3, num_initial=4)
    again = _evaluated(core, _actions(0, steps=4))
    core.reset_rows(torch.ones(3, dtype=torch.bool), same_task=True)
    assert not torch.equal(_evaluated(core, _actions(0, steps=4)), again)


def test_at_a_design_step_every_candidate_is_the_design_point_and_the_choice_has_no_gradient():
    core = _core(2, num_initial=3)
    obs = core.observe()
    n, f = SMALL["num_candidates"], 4 + SMALL["max_dim"]
    candidates = obs.reshape(2, n, f)
    assert torch.equal(candidates, candidates[:, :1].expand_as(candidates))
    torch.manual_seed(0)
    policy = CandidateScorePolicy(core.single_observation_space, core.single_action_space, lambda _: 3e-4)
    actions = policy.one_hot(torch.tensor([3, 5]))
    _, log_prob, _ = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(log_prob, torch.full((2,), -torch.log(torch.tensor(float(n)))))
    log_prob.sum().backward()  # zero up to rounding: every logit is the same function of the same input
    gradients = [p.grad for p in policy.scorer.parameters() if p.grad is not None]
    assert gradients and max(float(g.abs().max()) for g in gradients) < 1e-6
    # while a step after the design does carry one
    core.step(actions)
    core.step(actions)
    core.step(actions)
    policy.zero_grad()
    policy.evaluate_actions(core.observe(), actions)[1].sum().backward()
    assert max(float(p.grad.abs().max()) for p in policy.scorer.parameters() if p.grad is not None) > 1e-3


def test_design_rows_equal_single_rows_bit_for_bit():
    n = 3
    batched = _core(n, num_initial=4, candidate_pool=32)
    singles = [metaopt_envs.make_core(ID, num_envs=1, **SMALL, num_initial=4, candidate_pool=32) for _ in range(n)]
    keys = seeds_to_keys(5, n, batched.device)
    for i, single in enumerate(singles):
        single.reset_rows(torch.ones(1, dtype=torch.bool), keys=keys[i : i + 1])
    for action in _actions(2, steps=SMALL["budget"] - 1):
        batched.step(action)
        for i, single in enumerate(singles):
            single.step(action[i : i + 1])
        assert torch.equal(batched.observe(), torch.cat([s.observe() for s in singles]))


def test_no_design_is_the_env_as_before():
    default, explicit = _core(2), _core(2, num_initial=0)
    for action in _actions(3, steps=5, n=2):
        for core in (default, explicit):
            core.step(action)
        assert torch.equal(default.observe(), explicit.observe())


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (-1, r"num_initial must be an int >= 0 \(initial-design evaluations per search, < budget\), got -1"),
        (9, r"num_initial must be smaller than budget=9 .*got 9"),
        (2.0, r"num_initial must be an int >= 0 .*got 2.0"),
    ],
)
def test_bad_num_initial_is_rejected_with_its_value(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        metaopt_envs.make_core(ID, num_envs=1, **SMALL, num_initial=value)


def test_the_searches_on_the_hpo_env_never_get_num_initial():
    """GP-EI has its own design (``num_initial=5``); the suite passes the env's only to acquisition agents."""
    gp_ei = ACQUISITION_SUITE.load_agent("baseline:gp_ei")
    acq_ei = ACQUISITION_SUITE.load_agent("baseline:acq_ei")
    kwargs = {"budget": 9, "num_initial": 4, "candidate_pool": 32}
    assert ACQUISITION_SUITE.agent_env(gp_ei, kwargs) == (ENV_ID, {"budget": 9})
    assert ACQUISITION_SUITE.agent_env(acq_ei, kwargs) == (ID, kwargs)
