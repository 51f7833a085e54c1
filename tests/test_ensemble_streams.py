"""Stream families: shapes, keyed determinism, batch equivalence, task/episode keys, splits, pools, segments.

Promises (metaopt_envs.ensemble.families.base docstring): the task key fixes the process
(regimes and their parameters, or the real series and their rescaling), the
episode key one realisation of it; the split is folded into the task key; row
``i`` of a batch equals sampling that row alone; regime labels are contiguous
segments of at least the minimum length, consecutive segments in different
regimes; the real family's test split only crops test-pool series.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metaopt_envs.core import rng
from metaopt_envs.ensemble.families import (
    STREAM_FAMILIES,
    TEST_SERIES,
    TRAIN_SERIES,
    RealSeriesFamily,
    RegimesFamily,
    StreamMixture,
    SwitchingARFamily,
    make_stream_family,
)

NAMES = ("switching_ar", "regimes", "real", "mixture")
MIN_SEGMENT = {"switching_ar": 25, "regimes": 25, "real": 40, "mixture": 25}


@pytest.fixture(scope="module")
def families():
    return {name: make_stream_family(name) for name in NAMES}


def _keys(n: int, seed: int) -> torch.Tensor:
    return rng.keys_from_seeds(list(range(seed, seed + n)))


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """(label, run length) of the maximal constant runs of a 1-D array."""
    change = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], change, [len(labels)]])
    return [(int(labels[a]), int(b - a)) for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_dtypes_ranges(families, name, split):
    family = families[name]
    n, length = 48, 220
    out = family.sample_stream(_keys(n, 0), _keys(n, 1000), length, split)
    assert out["values"].shape == (n, length) and out["values"].dtype == torch.float32
    assert out["regime"].shape == (n, length) and out["regime"].dtype == torch.int64
    assert out["family"].shape == (n,) and out["family"].dtype == torch.int64
    assert out["num_regimes"].shape == (n,) and out["num_regimes"].dtype == torch.int64
    assert out["regime_params"].shape == (n, family.max_regimes, len(family.param_names))
    assert torch.isfinite(out["values"]).all()
    assert out["values"].abs().max() < 1e3
    assert ((out["num_regimes"] >= 2) & (out["num_regimes"] <= 4)).all()
    assert (out["regime"] >= 0).all() and (out["regime"] < out["num_regimes"].unsqueeze(-1)).all()
    assert ((out["family"] >= 0) & (out["family"] < len(family.families()))).all()
    # Regimes beyond R carry no parameters.
    unused = torch.arange(family.max_regimes) >= out["num_regimes"].unsqueeze(-1)
    assert (out["regime_params"][unused] == 0).all()
    # The series are not degenerate.
    assert (out["values"].std(1) > 1e-3).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_keys_same_streams(families, name):
    family = families[name]
    a = family.sample_stream(_keys(16, 5), _keys(16, 50), 150, "train")
    b = family.sample_stream(_keys(16, 5), _keys(16, 50), 150, "train")
    assert a.keys() == b.keys()
    for field in a:
        assert torch.equal(a[field], b[field]), field


@pytest.mark.parametrize("name", NAMES)
def test_batch_row_equals_single_row(families, name):
    family = families[name]
    tasks, episodes = _keys(7, 200), _keys(7, 300)
    batch = family.sample_stream(tasks, episodes, 180, "test")
    for i in range(7):
        single = family.sample_stream(tasks[i : i + 1], episodes[i : i + 1], 180, "test")
        for field in batch:
            if field == "values":
                torch.testing.assert_close(batch[field][i : i + 1], single[field], rtol=1e-6, atol=1e-6)
            else:
                assert torch.equal(batch[field][i : i + 1], single[field]), (field, i)


@pytest.mark.parametrize("name", NAMES)
def test_same_task_new_episode_same_process(families, name):
    family = families[name]
    tasks = _keys(24, 7)
    a = family.sample_stream(tasks, _keys(24, 100), 200, "train")
    b = family.sample_stream(tasks, _keys(24, 900), 200, "train")
    assert torch.equal(a["num_regimes"], b["num_regimes"])
    assert torch.equal(a["regime_params"], b["regime_params"])
    assert torch.equal(a["family"], b["family"])
    # Different realisations: every row's values, and most rows' switch patterns, differ.
    assert (a["values"] != b["values"]).any(1).all()
    assert (a["regime"] != b["regime"]).any(1).float().mean() > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_train_and_test_draw_different_tasks(families, name):
    family = families[name]
    tasks, episodes = _keys(24, 11), _keys(24, 12)
    train = family.sample_stream(tasks, episodes, 120, "train")
    test = family.sample_stream(tasks, episodes, 120, "test")
    assert (train["values"] != test["values"]).any(1).all()
    assert not torch.equal(train["regime_params"], test["regime_params"])


def test_different_tasks_differ(families):
    out = families["switching_ar"].sample_stream(_keys(32, 0), torch.zeros(32, dtype=torch.int64), 100, "train")
    params = out["regime_params"].flatten(1)
    assert torch.unique(params, dim=0).shape[0] == 32  # every task its own regimes


@pytest.mark.parametrize("name", NAMES)
def test_regimes_are_contiguous_segments_of_min_length(families, name):
    family = families[name]
    length = 350
    out = family.sample_stream(_keys(64, 40), _keys(64, 41), length, "train")
    switches = 0
    for row in out["regime"].numpy():
        runs = _runs(row)
        switches += len(runs) - 1
        assert min(r for _, r in runs) >= MIN_SEGMENT[name], runs
        # Consecutive segments are in different regimes (so runs are exactly the segments).
        assert all(a != b for (a, _), (b, _) in itertools.pairwise(runs))
    assert switches >= 64  # on average well over one switch per series


def test_real_segments_are_two_to_four_crops(families):
    out = families["real"].sample_stream(_keys(128, 3), _keys(128, 4), 350, "train")
    crops = [len(_runs(row)) for row in out["regime"].numpy()]
    assert set(crops) == {2, 3, 4}
    # Segments of regime and of series coincide: one crop, one series.
    for regime, series in zip(out["regime"].numpy(), out["series"].numpy()):
        assert [r for _, r in _runs(regime)] == [r for _, r in _runs(series)]


def test_short_streams_have_one_segment(families):
    for name in NAMES:
        out = families[name].sample_stream(_keys(8, 0), _keys(8, 1), 12, "train")
        assert out["values"].shape == (8, 12)
        assert (out["regime"] == out["regime"][:, :1]).all(), name


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_split_uses_only_its_pool(families, split):
    family: RealSeriesFamily = families["real"]
    assert family.pool("train") == TRAIN_SERIES and family.pool("test") == TEST_SERIES
    assert not set(TRAIN_SERIES) & set(TEST_SERIES)
    assert family.series_names == TRAIN_SERIES + TEST_SERIES
    out = family.sample_stream(_keys(256, 0), _keys(256, 1), 300, split)
    used = {family.series_names[i] for i in out["series"].unique().tolist()}
    assert used <= set(family.pool(split))
    assert len(used) >= len(family.pool(split)) // 2  # the pool is actually used
    # The per-step series is the series of the step's regime.
    regime_series = out["regime_params"][..., 0].to(torch.int64)
    assert torch.equal(out["series"], regime_series.gather(1, out["regime"]))
    # A task's regimes are distinct series.
    for row, count in zip(regime_series, out["num_regimes"]):
        assert len(set(row[:count].tolist())) == int(count)


def test_real_crops_are_standardized_and_rescaled(families):
    out = families["real"].sample_stream(_keys(32, 9), _keys(32, 10), 300, "test")
    values, regime, params = out["values"], out["regime"], out["regime_params"]
    for i in range(32):
        change = torch.nonzero(torch.diff(regime[i])).squeeze(-1) + 1
        bounds = [0, *change.tolist(), 300]
        for a, b in itertools.pairwise(bounds):
            crop = values[i, a:b].double()
            scale, shift = params[i, regime[i, a], 1].item(), params[i, regime[i, a], 2].item()
            assert abs(crop.mean().item() - shift) < 1e-3 * (1 + abs(shift))
            assert abs(crop.std(unbiased=False).item() - scale) < 1e-3 * scale


def test_real_data_loads_from_bundled_files():
    from metaopt_envs.ensemble.families.real import SERIES_SPECS, load_real_series

    series = load_real_series()
    assert set(series) == set(SERIES_SPECS) == set(TRAIN_SERIES) | set(TEST_SERIES)
    assert load_real_series() is series  # cached once per process
    lengths = {name: len(x) for name, x in series.items()}
    assert lengths["elnino.monthly"] == 61 * 12 and lengths["sunspots.SUNACTIVITY"] == 309
    assert lengths["nile.volume"] == 100 and lengths["macrodata.realgdp"] == 202
    assert min(lengths.values()) >= 50
    assert all(np.isfinite(x).all() for x in series.values())


def test_mixture_reports_each_rows_family(families):
    mixture: StreamMixture = families["mixture"]
    assert mixture.families() == ("switching_ar", "regimes")
    tasks, episodes = _keys(64, 0), _keys(64, 1)
    out = mixture.sample_stream(tasks, episodes, 120, "train")
    assert set(out["family"].tolist()) == {0, 1}
    for index, member in enumerate(mixture.members):
        rows = (out["family"] == index).nonzero().squeeze(-1)
        alone = member.sample_stream(tasks[rows], episodes[rows], 120, "train")
        torch.testing.assert_close(out["values"][rows], alone["values"], rtol=1e-6, atol=1e-6)
        assert torch.equal(out["regime"][rows], alone["regime"])
        width = len(member.param_names)
        assert torch.equal(out["regime_params"][rows, :, :width], alone["regime_params"])


def test_mixture_with_real_member_pads_series():
    mixture = make_stream_family("mixture", members=["switching_ar", "real"], weights=[1.0, 3.0])
    assert mixture.families() == ("switching_ar", "real")
    out = mixture.sample_stream(_keys(64, 0), _keys(64, 1), 100, "test")
    real_rows = out["family"] == 1
    assert 0 < real_rows.sum() < 64
    assert (out["series"][~real_rows] == -1).all()
    assert (out["series"][real_rows] >= len(TRAIN_SERIES)).all()


def test_switching_ar_regime_parameters_drive_the_dynamics():
    """Least squares AR(2) on each regime's steps recovers the reported coefficients."""
    family = SwitchingARFamily()
    out = family.sample_stream(_keys(4, 0), _keys(4, 1), 4000, "train")
    values, regime, params = out["values"].double().numpy(), out["regime"].numpy(), out["regime_params"].numpy()
    for i in range(4):
        for r in range(int(out["num_regimes"][i])):
            steps = np.flatnonzero(regime[i, 2:] == r) + 2
            X = np.stack([values[i, steps - 1], values[i, steps - 2]], 1)
            coef = np.linalg.lstsq(X, values[i, steps], rcond=None)[0]
            np.testing.assert_allclose(coef, params[i, r], atol=0.12)


def test_regimes_levels_follow_the_regime():
    """Without noise, trend and seasonality the series is each regime's level."""
    family = RegimesFamily(noise_range=(1e-6, 1e-6), slope_std=0.0, seasonal_prob=0.0)
    out = family.sample_stream(_keys(8, 0), _keys(8, 1), 200, "train")
    level = out["regime_params"][..., 2].gather(1, out["regime"])
    torch.testing.assert_close(out["values"], level, rtol=0, atol=1e-3)


def test_registry():
    assert set(STREAM_FAMILIES) == {"switching_ar", "regimes", "real"}
    family = SwitchingARFamily()
    assert make_stream_family(family) is family
    with pytest.raises(ValueError, match=r"switching_ar.*regimes.*real.*mixture"):
        make_stream_family("nope")
    with pytest.raises(ValueError, match="instance"):
        make_stream_family(family, noise_std=2.0)
    with pytest.raises(ValueError, match="members"):
        make_stream_family("mixture", members=[])
    with pytest.raises(ValueError, match="weights"):
        make_stream_family("mixture", weights=[1.0])


@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments_raise(families, name):
    family = families[name]
    tasks, episodes = _keys(4, 0), _keys(4, 1)
    with pytest.raises(ValueError, match="split"):
        family.sample_stream(tasks, episodes, 50, "val")
    for length in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="length"):
            family.sample_stream(tasks, episodes, length, "train")
    with pytest.raises(ValueError, match="task_keys"):
        family.sample_stream(tasks.to(torch.int32), episodes, 50, "train")
    with pytest.raises(ValueError, match="episode_keys"):
        family.sample_stream(tasks, episodes[:3], 50, "train")


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="num_regimes"):
        SwitchingARFamily(num_regimes=(3, 2))
    with pytest.raises(ValueError, match="min_segment"):
        SwitchingARFamily(min_segment=0)
    with pytest.raises(ValueError, match="max_modulus"):
        RegimesFamily(max_modulus=1.0)
    with pytest.raises(ValueError, match="noise_range"):
        RegimesFamily(noise_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="num_regimes"):
        RealSeriesFamily(num_regimes=(2, 5))  # the test pool has 4 series
    with pytest.raises(ValueError, match="min_crop"):
        RealSeriesFamily(min_crop=0)
