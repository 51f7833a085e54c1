"""MetaOpt-Ensemble-v0's ``share_filters`` observation features and the ``bayes_filter`` bound.

- ``share_filters=[[eta, alpha], ...]`` appends the log-weights of Fixed-Share filters run on the observed
  errors (the warm-up's second half, then every decision): the same rule as the FixedShare controller.
- The harness never hands a model's ``share_filters`` to the controllers (they read the plain 5K + 4 layout).
- ``bayes_filter`` (the exact posterior of the switching-AR experts setting) is causal, applies only in that
  setting (a clear error elsewhere), and its MSE is below tuned Fixed-Share's: it is the bound an agent meets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metaopt_envs
from agents.controllers.ensemble import BayesFilter, FixedShare, RegimeOracle
from agents.evaluation.ensemble import ENSEMBLE_SUITE, evaluate_ensemble, tune_ensemble_baseline
from agents.rl2.runs import problem_kwargs
from metaopt_envs.ensemble.core import OBS_CLIP, share_filter_update

FILTERS = [[1.0, 0.01], [0.3, 0.1]]
EXPERTS = {
    "task_family": "switching_ar",
    "task_family_kwargs": {"num_regimes": [4, 4]},
    "forecasters": ["expert0", "expert1", "expert2", "expert3"],
    "horizon": 60,
    "warmup": 20,
}


def _warmup_errors(core) -> np.ndarray:
    """``(B, K, W)`` normalized errors of the warm-up's second half, recomputed from the core's stream."""
    start, warmup = core.warmup // 2, core.warmup
    values = core.values[:, start:warmup].double()
    forecasts = core.forecasts[:, :, start:warmup].double()
    return ((forecasts - values[:, None]) / core.sigma.double()[:, None, None]).numpy()


def test_features_are_fixed_share_log_weights_on_the_observed_errors():
    core = metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=5, share_filters=FILTERS, horizon=30)
    k = core.num_forecasters
    assert core.single_observation_space.shape == (5 * k + 4 + 2 * k,)
    assert core.observation_names[5 * k + 4] == f"share_log_weight[eta=1,alpha=0.01][{core.forecaster_names[0]}]"
    controllers = [FixedShare(eta, alpha) for eta, alpha in FILTERS]
    errors = _warmup_errors(core)
    plain = np.zeros((5, 5 * k + 4), np.float32)
    for agent in controllers:  # reset at uniform, then the warm-up errors one step at a time
        agent.predict(plain, episode_start=np.ones(5, bool))
        for step in range(errors.shape[-1]):
            agent._update(np.clip(errors[:, :, step], -OBS_CLIP, OBS_CLIP) ** 2, plain)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        obs = core.observe().numpy()
        for j, agent in enumerate(controllers):
            block = obs[:, 5 * k + 4 + j * k : 5 * k + 4 + (j + 1) * k]
            np.testing.assert_allclose(block, agent.log_weights, rtol=0, atol=2e-5)
            assert np.isfinite(block).all() and (block >= math.log(FILTERS[j][1] / k) - 1e-5).all()
        result = core.step(2 * torch.rand(5, k, generator=generator) - 1)
        errors_now = result.observation[:, :k].double().numpy()
        for agent in controllers:
            agent._update(errors_now**2, plain)
    # Without share_filters the observation is the plain 5K + 4 layout, unchanged.
    assert metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=1).single_observation_space.shape == (5 * k + 4,)


def test_share_filter_update_is_the_fixed_share_rule_and_alpha_one_is_uniform():
    rng = np.random.default_rng(0)
    log_w, losses = np.log(rng.dirichlet(np.ones(6), size=4)), rng.exponential(3.0, size=(4, 6))
    agent = FixedShare(eta=0.7, alpha=0.05)
    agent.predict(np.zeros((4, 34), np.float32), episode_start=np.ones(4, bool))
    agent.log_weights = log_w.copy()
    agent._update(losses, None)
    ours = share_filter_update(torch.tensor(log_w), torch.tensor(losses), 0.7, 0.05).numpy()
    np.testing.assert_allclose(ours, agent.log_weights, atol=1e-12)
    uniform = share_filter_update(torch.tensor(log_w), torch.tensor(losses), 0.7, 1.0).numpy()
    np.testing.assert_allclose(uniform, np.full((4, 6), -math.log(6)), atol=1e-12)


@pytest.mark.parametrize("bad", ["1,0.1", [1.0, 0.1], [[1.0]], [[0.0, 0.1]], [[1.0, 0.0]], [[1.0, 1.5]], [["a", 0.1]]])
def test_bad_share_filters_name_the_parameter(bad):
    with pytest.raises(ValueError, match=r"share_filters must be a list of \[eta, alpha\] pairs.*got"):
        metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=1, share_filters=bad)


def test_controllers_never_get_a_models_share_filters():
    kwargs = {"horizon": 40, "share_filters": FILTERS, "action_mode": "logits"}
    assert "share_filters" not in ENSEMBLE_SUITE.core_kwargs(FixedShare(), kwargs)
    assert ENSEMBLE_SUITE.core_kwargs(object(), kwargs)["share_filters"] == FILTERS  # a user's agent keeps them
    spec = {"env": {"kwargs": {"task_family": "switching_ar", **kwargs}}}
    assert problem_kwargs(spec) == {"horizon": 40}
    # One comparison: the controllers run on the plain layout beside an agent that reads the features.
    summaries, _ = evaluate_ensemble(
        {"fixed_share": FixedShare(), "reads_filters": _FollowFilter()},
        {"task_family": "switching_ar", "horizon": 40, "share_filters": [[1.0, 0.01]]},
        num_tasks=6,
        seeds=(0,),
    )
    assert set(summaries) == {"fixed_share", "reads_filters"}
    # Tuning runs the controllers on the plain layout too.
    tuned = tune_ensemble_baseline(
        "fixed_share",
        {"task_family": "switching_ar", "horizon": 20, "share_filters": [[1.0, 0.01]]},
        num_tasks=3,
        grid={"eta": [0.1, 1.0], "alpha": [0.01]},
    )
    assert len(tuned.mean_mse) == 2 and np.isfinite(tuned.mean_mse).all()


class _FollowFilter:
    """A user agent that plays the weights of the first share filter (simplex mode)."""

    action_mode = "simplex"

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = np.asarray(observation)
        k = (obs.shape[-1] - 4) // 6
        return np.exp(obs[:, 5 * k + 4 : 6 * k + 4]), state


def test_an_agent_playing_the_filter_scores_as_fixed_share_after_the_warmup_head_start():
    """Playing the share filter's weights is Fixed-Share started from the warm-up's posterior: as good or better.

    ShareFilterAgent (residual mode, action 0) plays the same weights as reading them in simplex mode.
    """
    kwargs = {**EXPERTS, "share_filters": [[1.0, 0.01]]}
    agents = {
        "fixed_share": FixedShare(1.0, 0.01),
        "filter": _FollowFilter(),
        "residual_zero": ENSEMBLE_SUITE.load_agent("agents.controllers.ensemble:ShareFilterAgent"),
    }
    summaries, records = evaluate_ensemble(agents, kwargs, num_tasks=24, seeds=(0,))
    assert summaries["filter"].mse_mean <= summaries["fixed_share"].mse_mean
    np.testing.assert_allclose(records["residual_zero"][0].mse, records["filter"][0].mse, rtol=1e-5)


def _bayes_core(num_envs=16, horizon=60):
    return metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=num_envs, **{**EXPERTS, "horizon": horizon})


def test_bayes_filter_is_causal():
    core = _bayes_core(num_envs=4)
    agent = BayesFilter()
    agent.bind_core(core)
    plan = agent._compute_plan(np.arange(4))
    t = core.warmup + 20
    core.values[:, t:] += 5.0 * torch.randn(4, core.length - t)  # change the future only
    core.forecasts[:, :, t + 1 :] += 5.0 * torch.randn(4, core.num_forecasters, core.length - t - 1)
    changed = agent._compute_plan(np.arange(4))
    np.testing.assert_array_equal(plan[:, : t + 1], changed[:, : t + 1])
    assert not np.allclose(plan[:, t + 1 :], changed[:, t + 1 :])
    np.testing.assert_allclose(plan.sum(-1), 1.0, atol=1e-9)


def test_bayes_filter_beats_fixed_share_and_trails_the_oracle():
    agents = {"fixed_share": FixedShare(1.0, 0.01), "regime_oracle": RegimeOracle(), "bayes_filter": BayesFilter()}
    summaries, _ = evaluate_ensemble(
        agents, {**EXPERTS, "horizon": 150}, num_tasks=48, seeds=(0,), reference="fixed_share", oracle="regime_oracle"
    )
    bayes, fixed, oracle = (summaries[name].mse_mean for name in ("bayes_filter", "fixed_share", "regime_oracle"))
    assert oracle < bayes < fixed
    assert summaries["bayes_filter"].win_rate > 0.6


def test_bayes_filter_applies_only_in_the_experts_setting():
    assert "bayes_filter" in ENSEMBLE_SUITE.default_baselines(EXPERTS)
    assert "bayes_filter" not in ENSEMBLE_SUITE.default_baselines({"task_family": "switching_ar"})
    agent = BayesFilter()
    core = metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=2, task_family="switching_ar", horizon=20)
    agent.bind_core(core)
    with pytest.raises(ValueError, match="bayes_filter needs the experts setting"):
        agent.predict(core.observe().numpy(), episode_start=np.ones(2, bool))
    varying = {**EXPERTS, "task_family_kwargs": {"num_regimes": [2, 4]}}
    agent.bind_core(metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=2, **varying))
    with pytest.raises(ValueError, match=r"num_regimes=\[4, 4\]"):
        agent.predict(np.zeros((2, 24), np.float32), episode_start=np.ones(2, bool))


def test_residual_mode_corrects_the_first_filter():
    core = metaopt_envs.make_core("MetaOpt-Ensemble-v0", num_envs=4, action_mode="residual", horizon=10)
    k = core.num_forecasters
    assert core.share_filters == ((1.0, 0.01),) and core.single_observation_space.shape == (6 * k + 4,)
    assert core.single_action_space.low.min() == -1.0 and core.single_action_space.high.max() == 1.0
    obs = core.observe()
    zero = core.step(torch.zeros(4, k))  # a = 0 plays the filter's weights
    np.testing.assert_allclose(zero.info["weights"], torch.exp(obs[:, 5 * k + 4 :]), atol=1e-6)
    obs = zero.observation
    push = torch.zeros(4, k)
    push[:, 2] = 0.5  # a correction of +logit_scale * 0.5 on forecaster 2's log-weight
    expected = torch.softmax(obs[:, 5 * k + 4 :] + core.logit_scale * push, dim=-1)
    np.testing.assert_allclose(core.step(push).info["weights"], expected, atol=1e-6)
    with_filters = metaopt_envs.make_core(
        "MetaOpt-Ensemble-v0", num_envs=1, action_mode="residual", share_filters=FILTERS
    )
    assert with_filters.share_filters == tuple(tuple(pair) for pair in FILTERS)
