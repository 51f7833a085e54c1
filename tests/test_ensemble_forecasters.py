"""The forecaster bank: no look-ahead, agreement with per-series references, AR recovery, bad names.

Promises (metaopt_envs.ensemble.forecasters docstring): ``out[:, k, t]`` uses
``values[:, :t]`` only; 0.0 at ``t = 0``; the last value until a forecaster
has enough history; each forecaster is the documented estimator (checked
against a direct per-series numpy implementation: ``numpy.linalg.lstsq`` on
the same window for AR); the output is finite for finite input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaopt_envs.ensemble.forecasters import (
    DEFAULT_FORECASTERS,
    RIDGE,
    ar_min_pairs,
    forecast,
    parse_forecaster,
)

ALL = (*DEFAULT_FORECASTERS, "ma1", "ma30", "ses0.5", "ses1", "ar3")


def _reference(v: np.ndarray, name: str, window: int) -> np.ndarray:
    """One series, one forecaster, step by step from the history ``v[:t]`` alone."""
    kind, param = parse_forecaster(name)
    out = np.zeros(len(v))
    for t in range(1, len(v)):
        history = v[:t]
        last = history[-1]
        recent = history[-window:]
        if kind == "last":
            f = last
        elif kind == "drift":
            f = last + (recent[-1] - recent[0]) / (len(recent) - 1) if len(recent) >= 2 else last
        elif kind == "ma":
            f = history[-param:].mean()
        elif kind == "ses":
            level = history[0]
            for y in history[1:]:
                level = (1 - param) * level + param * y
            f = level
        else:
            p = param
            targets = recent[p:]
            if len(targets) < ar_min_pairs(p):
                f = last
            else:
                # Least squares with an unpenalized intercept: centre, then ridge rows.
                lags = np.stack([recent[p - 1 - i : len(recent) - 1 - i] for i in range(p)], 1)
                lag_mean, target_mean = lags.mean(0), targets.mean()
                centred = lags - lag_mean
                ridge = RIDGE * np.trace(centred.T @ centred) / p
                design = np.vstack([centred, np.sqrt(ridge) * np.eye(p)])
                rhs = np.concatenate([targets - target_mean, np.zeros(p)])
                beta = np.linalg.lstsq(design, rhs, rcond=None)[0]
                f = target_mean + beta @ (recent[::-1][:p] - lag_mean)
        out[t] = f
    return out


def _series(n: int, T: int, seed: int) -> torch.Tensor:
    """Random walks with offsets, trends and seasonality: a varied test set."""
    g = np.random.default_rng(seed)
    t = np.arange(T)
    walk = g.normal(size=(n, T)).cumsum(1)
    offset = g.normal(0, 30, size=(n, 1))
    trend = g.normal(0, 0.2, size=(n, 1)) * t
    season = g.uniform(0, 3, size=(n, 1)) * np.sin(2 * np.pi * t / 7)
    noise = g.normal(size=(n, T)) * g.uniform(0.1, 2, size=(n, 1))
    return torch.tensor(walk + offset + trend + season + noise, dtype=torch.float32)


@pytest.mark.parametrize("window", [40, 17, 90])
def test_matches_per_series_reference(window):
    names = [n for n in ALL if parse_forecaster(n)[0] != "ar" or 3 * parse_forecaster(n)[1] + 2 <= window]
    values = _series(3, 130, seed=window)
    out = forecast(values, names, window=window).double().numpy()
    assert out.shape == (3, len(names), 130)
    for k, name in enumerate(names):
        for i in range(3):
            v = values[i].double().numpy()
            expected = _reference(v, name, window)
            scale = 1.0 + np.abs(v).max()
            np.testing.assert_allclose(out[i, k], expected, rtol=0, atol=2e-6 * scale, err_msg=name)


def test_ar_matches_plain_lstsq_closely():
    """The ridge is small: the AR fit is close to ordinary least squares with an intercept."""
    values = _series(2, 120, seed=3)
    out = forecast(values, ["ar2"], window=40)[:, 0].double().numpy()
    for i in range(2):
        v = values[i].double().numpy()
        for t in range(60, 120, 7):
            recent = v[t - 40 : t]
            X = np.stack([np.ones(38), recent[1:-1], recent[:-2]], 1)
            coef = np.linalg.lstsq(X, recent[2:], rcond=None)[0]
            ols = coef @ np.array([1.0, recent[-1], recent[-2]])
            assert abs(out[i, t] - ols) < 0.05 * recent.std()


def test_no_look_ahead():
    values = _series(4, 150, seed=1)
    base = forecast(values, ALL, window=30)
    g = torch.Generator().manual_seed(0)
    for t in (0, 1, 2, 5, 13, 29, 30, 31, 49, 50, 51, 100, 149):
        perturbed = values.clone()
        perturbed[:, t:] += 100.0 * torch.randn(4, 150 - t, generator=g)
        out = forecast(perturbed, ALL, window=30)
        assert torch.equal(out[..., : t + 1], base[..., : t + 1]), t
        if t < 149:
            assert not torch.equal(out[..., t + 1], base[..., t + 1])  # the future is used once it is past


def test_first_step_is_zero_and_short_history_is_last_value():
    values = _series(2, 60, seed=2)
    out = forecast(values, ["ar4", "ar1", "drift", "ma16", "ses0.1", "last"], window=40)
    assert (out[..., 0] == 0).all()
    for k, p in ((0, 4), (1, 1)):
        short = p + ar_min_pairs(p)  # steps before the first fit
        assert torch.equal(out[:, k, 1:short], values[:, : short - 1])
        assert not torch.equal(out[:, k, short], values[:, short - 1])
    assert torch.equal(out[:, 2, 1], values[:, 0])  # drift needs two values
    assert torch.equal(out[:, 5, 1:], values[:, :-1])


def test_ar_recovers_noiseless_ar2_forecasts():
    """A sinusoid plus a constant is an exact AR(2) with intercept: with a little noise the fitted
    AR(2) and AR(4) forecast it nearly exactly, AR(1) and the last value do not."""
    g = np.random.default_rng(0)
    t = np.arange(300)
    clean = np.stack([3.0 + 5.0 * np.sin(2 * np.pi * t / 13 + 0.3), -1.0 + 2.0 * np.sin(2 * np.pi * t / 31)])
    values = torch.tensor(clean + 1e-3 * g.normal(size=clean.shape), dtype=torch.float32)
    out = forecast(values, ["ar2", "ar4", "ar1", "last"], window=40).double().numpy()
    steps = np.arange(50, 300)
    amplitude = np.array([[5.0], [2.0]])
    for k in (0, 1):
        assert (np.abs(out[:, k, steps] - clean[:, steps]) < 0.02 * amplitude).all()
    for k in (2, 3):
        assert (np.abs(out[:, k, steps] - clean[:, steps]).max(1) > 0.1 * amplitude[:, 0]).all()


def test_ar_recovers_true_one_step_predictor():
    """On long noisy AR(2) series the fitted AR(2) and AR(4) forecasts approach the true conditional mean."""
    g = np.random.default_rng(0)
    phi = np.array([[1.6, -0.9], [0.5, 0.3], [-0.4, 0.45], [0.9, -0.2]])
    const = np.array([2.0, -1.0, 0.5, 0.0])
    n, T = 4, 600
    x = np.zeros((n, T))
    for t in range(2, T):
        x[:, t] = const + phi[:, 0] * x[:, t - 1] + phi[:, 1] * x[:, t - 2] + g.normal(size=n)
    out = forecast(torch.tensor(x, dtype=torch.float32), ["ar2", "ar4", "last"], window=300).double().numpy()
    truth = const[:, None] + phi[:, :1] * x[:, 1:-1] + phi[:, 1:] * x[:, :-2]  # the prediction of x[:, 2:]
    steps = np.arange(350, T)
    for k in (0, 1):
        err = np.abs(out[:, k, steps] - truth[:, steps - 2])  # innovations have std 1
        assert (err.mean(1) < 0.2).all() and (err.max(1) < 0.6).all(), (k, err.mean(1), err.max(1))
    err_last = np.abs(out[:, 2, steps] - truth[:, steps - 2]).mean(1)
    assert (err_last > 0.3).all()


def test_finite_on_extreme_inputs():
    T = 80
    cases = [
        torch.zeros(1, T),
        torch.full((1, T), 1e4),
        torch.randn(1, T) * 1e30,
        torch.randn(1, T) * 1e-30,
        torch.cat([torch.zeros(1, T // 2), torch.ones(1, T // 2)], 1),
        torch.tensor([[3e38, -3e38] * (T // 2)]),
        (torch.arange(T, dtype=torch.float32) ** 2).unsqueeze(0),
    ]
    for values in cases:
        out = forecast(values, ALL)
        assert torch.isfinite(out).all(), values[0, :4]
    constant = forecast(torch.full((1, T), 7.0), ALL)
    assert torch.allclose(constant[..., 1:], torch.tensor(7.0))


def test_defaults_shape_and_dtype():
    assert len(DEFAULT_FORECASTERS) == 8 and len(set(DEFAULT_FORECASTERS)) == 8
    values = _series(5, 70, seed=4)
    out = forecast(values)
    assert out.shape == (5, 8, 70) and out.dtype == torch.float32
    assert forecast(values.double()).dtype == torch.float32
    assert torch.equal(forecast(torch.arange(6).reshape(2, 3), ["last"])[:, 0], torch.tensor([[0.0, 0, 1], [0, 3, 4]]))
    assert forecast(values[:0]).shape == (0, 8, 70)
    assert forecast(values[:, :0]).shape == (5, 8, 0)


@pytest.mark.parametrize("name", ["foo", "ma0", "ma", "ma-3", "ses0", "ses1.5", "ses", "ar0", "AR2", "", "ma4 ", "arx"])
def test_bad_names_raise(name):
    with pytest.raises(ValueError, match=r"allowed patterns.*last.*drift.*ma.*ses.*ar"):
        forecast(torch.zeros(2, 10), ["last", name])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="window"):
        forecast(torch.zeros(2, 10), ["ar4"], window=12)  # needs 3p + 2 = 14
    with pytest.raises(ValueError, match="window"):
        forecast(torch.zeros(2, 10), ["last"], window=1)
    with pytest.raises(ValueError, match="names"):
        forecast(torch.zeros(2, 10), "last")
    with pytest.raises(ValueError, match="names"):
        forecast(torch.zeros(2, 10), [])
    with pytest.raises(ValueError, match="values"):
        forecast(torch.zeros(10), ["last"])
