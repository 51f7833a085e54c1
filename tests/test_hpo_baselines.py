"""HPO baselines: the torch GP matches scikit-learn's posterior and likelihood at fixed
hyperparameters, EI matches the textbook formula, every baseline beats random search on Branin,
episode starts reset one row without touching the others, actions stay in the box with zeros on
padded dimensions, runs are reproducible, and bad input raises ValueError.

Written against the MetaOpt-HPO-v0 observation layout with a toy loop on synthetic objectives
(Branin mapped to [-1, 1]^2, padded to D = 6), so it does not depend on the environment's core."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from agents.controllers.hpo import (
    GPEI,
    HPO_BASELINES,
    TPE,
    RandomSearch,
    Sobol,
    expected_improvement,
    gp_log_marginal_likelihood,
    gp_posterior,
    log_expected_improvement,
    max_dim,
)
from metaopt_envs.hpo.gp import _lml_and_grad

D = 6  # padded width of the toy env


# ------------------------------------------------------------------ synthetic objectives
def _branin_raw(u):
    """Branin on [-5, 10] x [0, 15], evaluated at ``u`` in [-1, 1]^2."""
    x1 = -5.0 + (u[..., 0] + 1.0) * 7.5
    x2 = (u[..., 1] + 1.0) * 7.5
    b, c, t = 5.1 / (4.0 * math.pi**2), 5.0 / math.pi, 1.0 / (8.0 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * np.cos(x1) + 10.0


BRANIN_OPT = 0.397887
BRANIN_REF = float(np.median(_branin_raw(np.random.default_rng(123).uniform(-1, 1, (100_000, 2)))))


def branin(u):
    """Normalized Branin: 0 at the optimum, 1 at the median random point."""
    return (_branin_raw(u[..., :2]) - BRANIN_OPT) / (BRANIN_REF - BRANIN_OPT)


def sphere(u):
    """A shifted sphere in the first ``u.shape[-1]`` dims, normalized like Branin (ref = its median ~ d/3)."""
    d = u.shape[-1]
    return ((u - 0.3) ** 2).sum(-1) / (d * (1.0 / 3.0 + 0.09))


def make_obs(x, mask, y, best, used):
    """Observations ``(n, 2D + 5)`` float32 in MetaOpt-HPO-v0's layout."""
    n, width = x.shape
    obs = np.zeros((n, 2 * width + 5), np.float32)
    obs[:, :width] = x
    obs[:, width : 2 * width] = mask
    y, best = np.clip(y, -1.0, 10.0), np.clip(best, -1.0, 10.0)
    obs[:, 2 * width] = y
    obs[:, 2 * width + 1] = np.log10(np.maximum(y, 1e-8))
    obs[:, 2 * width + 2] = best
    obs[:, 2 * width + 3] = np.log10(np.maximum(best, 1e-8))
    obs[:, 2 * width + 4] = used
    return obs


def run_loop(agent, objectives, dims, budget, resets=()):
    """Toy env loop: row ``i`` minimizes ``objectives[i]`` on its first ``dims[i]`` of ``D`` coordinates.

    ``resets``: ``(step, row)`` pairs where the row starts a new episode (flag set, fresh
    observation). Checks every action; returns (best values, list of action batches).
    """
    n = len(objectives)
    mask = np.zeros((n, D))
    for i, d in enumerate(dims):
        mask[i, :d] = 1.0
    x, y, best, t = np.zeros((n, D)), np.ones(n), np.ones(n), np.zeros(n, dtype=np.int64)
    actions = []
    for step in range(budget):
        start = np.full(n, step == 0)
        for when, row in resets:
            if when == step:
                start[row] = True
                x[row], y[row], best[row], t[row] = 0.0, 1.0, 1.0, 0
        obs = make_obs(x, mask, y, best, t / budget)
        action, state = agent.predict(obs, episode_start=start)
        assert state is None
        assert action.shape == (n, D) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
        assert np.all(action[mask == 0] == 0.0), "padded coordinates must be 0"
        actions.append(action.copy())
        x = action.astype(np.float64)
        y = np.array([f(x[i, : dims[i]]) for i, f in enumerate(objectives)])
        best, t = np.minimum(best, y), t + 1
    return best, actions


# ------------------------------------------------------------------ GP pieces against references
def _random_gp_problem(seed=0, dims=(3, 2, 3), n=15, m=20):
    g = np.random.default_rng(seed)
    b, dmax = len(dims), max(dims)
    x = np.zeros((b, n, dmax))
    xs = np.zeros((b, m, dmax))
    for i, d in enumerate(dims):  # padded coordinates stay 0
        x[i, :, :d] = g.uniform(-1, 1, (n, d))
        xs[i, :, :d] = g.uniform(-1, 1, (m, d))
    y = g.normal(size=(b, n))
    ls = g.uniform(0.2, 1.5, (b, dmax))
    s2 = g.uniform(0.5, 2.0, b)
    noise = g.uniform(1e-4, 1e-1, b)
    return x, y, xs, ls, s2, noise


def test_gp_posterior_and_likelihood_match_sklearn():
    dims = (3, 2, 3)
    x, y, xs, ls, s2, noise = _random_gp_problem(dims=dims)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    mean, std = gp_posterior(t(x), t(y), t(xs), t(ls), t(s2), t(noise))
    _, std_noisy = gp_posterior(t(x), t(y), t(xs), t(ls), t(s2), t(noise), observation_noise=True)
    lml = gp_log_marginal_likelihood(t(x), t(y), t(ls), t(s2), t(noise))
    for i, d in enumerate(dims):
        kernel = ConstantKernel(s2[i], "fixed") * Matern(ls[i, :d], "fixed", nu=2.5) + WhiteKernel(noise[i], "fixed")
        gpr = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None, normalize_y=False)
        gpr.fit(x[i, :, :d], y[i])
        ref_mean, ref_std = gpr.predict(xs[i, :, :d], return_std=True)  # std includes the white noise
        np.testing.assert_allclose(mean[i].numpy(), ref_mean, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(std_noisy[i].numpy(), ref_std, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(std[i].numpy() ** 2, ref_std**2 - noise[i], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(float(lml[i]), gpr.log_marginal_likelihood_value_, rtol=1e-6)


def test_analytic_likelihood_gradient_matches_autograd():
    x, y, _, ls, s2, noise = _random_gp_problem(seed=1)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    x, y = t(x), t(y)
    params = [t(np.log(ls)).requires_grad_(), t(np.log(s2)).requires_grad_(), t(np.log(noise)).requires_grad_()]
    ref = gp_log_marginal_likelihood(x, y, *(p.exp() for p in params))
    ref.sum().backward()
    delta2 = (x.unsqueeze(-2) - x.unsqueeze(-3)) ** 2
    lml, *grads = _lml_and_grad(delta2, y, *(p.detach() for p in params))
    torch.testing.assert_close(lml, ref.detach())
    for grad, p in zip(grads, params):
        torch.testing.assert_close(grad, p.grad)
    assert torch.all(grads[0][1, 2] == 0.0)  # the padded dim of row 1 has no gradient


def test_expected_improvement_matches_formula():
    g = np.random.default_rng(0)
    mean, std, best = g.normal(size=200), g.uniform(0.05, 2.0, 200), g.normal(size=200)
    u = (best - mean) / std
    ref = (best - mean) * norm.cdf(u) + std * norm.pdf(u)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    ei = expected_improvement(t(mean), t(std), t(best)).numpy()
    log_ei = log_expected_improvement(t(mean), t(std), t(best)).numpy()
    np.testing.assert_allclose(ei, ref, rtol=1e-9, atol=1e-12)
    fine = ref > 1e-250  # where the textbook formula has not underflowed
    assert fine.sum() > 150
    np.testing.assert_allclose(log_ei[fine], np.log(ref[fine]), rtol=1e-7, atol=1e-7)
    assert np.all(np.isfinite(log_ei))
    # far above the incumbent plain EI underflows to 0; log EI stays finite and ordered
    far = t(np.array([30.0, 40.0, 60.0, 200.0]))
    log_far = log_expected_improvement(far, t(np.ones(4)), t(np.zeros(4))).numpy()
    assert np.all(np.isfinite(log_far)) and np.all(np.diff(log_far) < 0)
    assert expected_improvement(far, t(np.ones(4)), t(np.zeros(4)))[-1] == 0.0


# ------------------------------------------------------------------ search quality
def test_every_baseline_beats_random_search_on_branin():
    rows, budget = 16, 30
    medians = {}
    for name, cls in HPO_BASELINES.items():
        agent = cls(seed=0)
        best, _ = run_loop(agent, [branin] * rows, [2] * rows, budget)
        medians[name] = float(np.median(best))
        assert len(agent.suggest_seconds) == budget and all(s > 0 for s in agent.suggest_seconds)
    assert medians["sobol"] <= medians["random"], medians
    assert medians["tpe"] <= medians["random"], medians
    assert medians["gp_ei"] <= 0.1 * medians["random"], medians  # clearly better


# ------------------------------------------------------------------ state, resets, padding
def _fast(name, seed=0):
    if name == "gp_ei":
        return GPEI(num_initial=3, num_candidates=256, num_local=64, fit_steps=20, seed=seed)
    return HPO_BASELINES[name](seed=seed)


@pytest.mark.parametrize("name", list(HPO_BASELINES))
def test_mixed_dims_actions_and_history(name):
    dims = [1, 2, 3, 6]
    objectives = [sphere, branin, sphere, sphere]
    agent = _fast(name)
    _, actions = run_loop(agent, objectives, dims, budget=7)
    for row, d in enumerate(dims):
        xs, ys = agent.history(row)
        assert xs.shape == (6, d) and ys.shape == (6,)
        # the history holds the evaluated configurations (active dims) and their values
        np.testing.assert_allclose(xs, np.stack([a[row, :d] for a in actions[:6]]), atol=1e-7)
        np.testing.assert_allclose(ys, objectives[row](xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(HPO_BASELINES))
def test_episode_start_resets_one_row_only(name):
    objectives, dims, budget, reset_step = [branin, sphere, branin], [2, 3, 2], 9, 5
    _, plain = run_loop(_fast(name), objectives, dims, budget)
    agent = _fast(name)
    _, reset = run_loop(agent, objectives, dims, budget, resets=[(reset_step, 1)])
    for step in range(budget):
        np.testing.assert_array_equal(reset[step][[0, 2]], plain[step][[0, 2]])  # other rows untouched
        if step < reset_step:
            np.testing.assert_array_equal(reset[step][1], plain[step][1])
    assert not np.array_equal(reset[reset_step][1], plain[reset_step][1])  # a new episode's draws
    xs, ys = agent.history(1)
    assert xs.shape == (budget - reset_step - 1, 3) and ys.shape == (budget - reset_step - 1,)
    assert agent.history(0)[1].shape == (budget - 1,)
    assert list(agent.episodes) == [1, 2, 1]


def test_unflagged_first_decision_or_new_mask_starts_an_episode():
    agent = RandomSearch(seed=3)
    mask = np.zeros((2, D))
    mask[:, :2] = 1.0
    agent.predict(make_obs(np.zeros((2, D)), mask, np.ones(2), np.ones(2), 0.0))
    for t in range(1, 4):
        x = np.zeros((2, D))
        x[:, :2] = 0.5
        agent.predict(make_obs(x, mask, np.full(2, 0.2), np.full(2, 0.2), t / 10))
    assert agent.history(0)[0].shape == (3, 2)
    new_mask = mask.copy()
    new_mask[1, 2] = 1.0  # row 1 now has 3 dims, no flag
    used = np.array([0.0, 0.4])  # row 0: budget used 0, no flag
    agent.predict(make_obs(np.zeros((2, D)), new_mask, np.ones(2), np.ones(2), used))
    assert agent.history(0)[0].shape == (0, 2) and agent.history(1)[0].shape == (0, 3)
    assert list(agent.episodes) == [2, 2]


@pytest.mark.parametrize("name", list(HPO_BASELINES))
def test_reproducible_with_the_same_seed(name):
    objectives, dims = [branin, sphere], [2, 4]
    _, first = run_loop(_fast(name, seed=7), objectives, dims, budget=8)
    _, again = run_loop(_fast(name, seed=7), objectives, dims, budget=8)
    _, other = run_loop(_fast(name, seed=8), objectives, dims, budget=8)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))


def test_gp_rows_do_not_depend_on_the_rest_of_the_batch():
    """Row 0 makes the same choices next to a 3-d row (padded group) as next to a 2-d one."""
    _, with_3d = run_loop(_fast("gp_ei"), [branin, sphere], [2, 3], budget=10)
    _, with_2d = run_loop(_fast("gp_ei"), [branin, branin], [2, 2], budget=10)
    np.testing.assert_allclose(np.stack(with_3d)[:, 0], np.stack(with_2d)[:, 0], atol=1e-6)


def test_tpe_is_told_the_observed_values():
    agent = TPE(seed=0, n_startup_trials=2)
    run_loop(agent, [branin], [2], budget=6)
    trials = agent.studies[0].get_trials(deepcopy=False)
    told = [tr.value for tr in trials if tr.value is not None]
    np.testing.assert_allclose(told, agent.history(0)[1], rtol=1e-6)
    np.testing.assert_allclose(
        [[tr.params["x0"], tr.params["x1"]] for tr in trials[:5]], agent.history(0)[0], atol=1e-6
    )


# ------------------------------------------------------------------ registry and bad input
def test_registry_names_and_hyperparameters():
    assert set(HPO_BASELINES) == {"random", "sobol", "gp_ei", "tpe"}
    for name, cls in HPO_BASELINES.items():
        agent = cls(seed=4)
        assert agent.name == name and agent.hyperparameters()["seed"] == 4
        assert agent.suggest_seconds == []
    assert GPEI(num_initial=7).hyperparameters()["num_initial"] == 7
    assert TPE(n_startup_trials=3).hyperparameters()["n_startup_trials"] == 3
    assert max_dim(2 * 6 + 5) == 6


@pytest.mark.parametrize("width", [4, 5, 6, 18])
def test_bad_observation_width(width):
    for cls in (RandomSearch, GPEI):
        with pytest.raises(ValueError, match="observation"):
            cls().predict(np.zeros((2, width), np.float32))


def test_bad_observation_values():
    mask = np.zeros((2, D))
    mask[:, :2] = 1.0
    obs = make_obs(np.zeros((2, D)), mask, np.ones(2), np.ones(2), 0.0)
    bad = obs.copy()
    bad[0, 2 * D] = np.nan
    with pytest.raises(ValueError, match="observation"):
        Sobol().predict(bad)
    bad = obs.copy()
    bad[1, D : 2 * D] = 0.0
    with pytest.raises(ValueError, match="observation"):
        Sobol().predict(bad)
    with pytest.raises(ValueError, match="episode_start"):
        Sobol().predict(obs, episode_start=np.ones(3, bool))


@pytest.mark.parametrize(
    "build, parameter",
    [
        (lambda: RandomSearch(seed=-1), "seed"),
        (lambda: Sobol(seed=1.5), "seed"),
        (lambda: GPEI(num_initial=0), "num_initial"),
        (lambda: GPEI(num_candidates=0), "num_candidates"),
        (lambda: GPEI(num_local=-1), "num_local"),
        (lambda: GPEI(fit_steps=-1), "fit_steps"),
        (lambda: GPEI(fit_lr=0.0), "fit_lr"),
        (lambda: GPEI(y_transform="sqrt"), "y_transform"),
        (lambda: GPEI(log_shift=-1.0), "log_shift"),
        (lambda: TPE(n_startup_trials=-1), "n_startup_trials"),
        (lambda: TPE(multivariate="yes"), "multivariate"),
    ],
)
def test_bad_hyperparameters(build, parameter):
    with pytest.raises(ValueError, match=parameter):
        build()
