"""Objective families of MetaOpt-HPO-v0: shapes, keyed determinism, batch equivalence, splits, optima, tables.

Promises (metaopt_envs.hpo.families docstrings): every family returns the common
fields with fixed shapes; the split is folded into the key; row ``i`` of a batch
equals sampling that row alone; ``f_opt`` is the exact minimum where
``exact_optimum`` (Branin/Hartmann after their shift and scale, the sklearn
table), attained at ``x_opt``, and no point evaluates below it; coordinates
``>= dim`` are ignored; ``f_ref > f_opt``; the sklearn table is bundled (no
download) and agrees with a fresh scikit-learn fit; bad arguments raise
``ValueError`` naming the parameter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaopt_envs.core import rng
from metaopt_envs.hpo.families import (
    COMMON_FIELDS,
    OBJECTIVE_FAMILIES,
    BraninFamily,
    GPFamily,
    Hartmann3Family,
    Hartmann6Family,
    ObjectiveMixture,
    SklearnTableFamily,
    make_objective_family,
)
from metaopt_envs.hpo.families.base import uniform_points
from metaopt_envs.hpo.families.tables import load_tables

NAMES = ("branin", "hartmann3", "hartmann6", "gp", "sklearn", "mixture")
MAX_DIM = {"branin": 2, "hartmann3": 3, "hartmann6": 6, "gp": 6, "sklearn": 3, "mixture": 6}
BENCHMARKS = (BraninFamily, Hartmann3Family, Hartmann6Family)


@pytest.fixture(scope="module")
def families():
    return {name: make_objective_family(name) for name in NAMES}


@pytest.fixture(scope="module")
def samples(families):
    """32 objectives per family and split (the GP search is the slow part: sample once)."""
    keys = _keys(32, 0)
    return {(name, split): fam.sample(keys, split) for name, fam in families.items() for split in ("train", "test")}


def _keys(n: int, seed: int) -> torch.Tensor:
    return rng.keys_from_seeds(list(range(seed, seed + n)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_fields_shapes_dtypes(families, samples, name, split):
    fam, tasks = families[name], samples[(name, split)]
    n = 32
    assert fam.max_dim == MAX_DIM[name]
    for field in COMMON_FIELDS:
        assert field in tasks, field
    for field, value in tasks.items():
        assert value.shape[0] == n, field
        if value.is_floating_point():
            assert value.dtype == torch.float32 and torch.isfinite(value).all(), field
    assert tasks["dim"].dtype == torch.int64 and tasks["family"].dtype == torch.int64
    assert tasks["exact_optimum"].dtype == torch.bool
    assert tasks["x_opt"].shape == (n, fam.max_dim)
    assert ((tasks["dim"] >= 1) & (tasks["dim"] <= fam.max_dim)).all()
    assert (tasks["f_ref"] > tasks["f_opt"]).all()
    assert (tasks["x_opt"].abs() <= 1.0).all()
    assert torch.equal(fam.family_index(tasks), tasks["family"])
    assert ((tasks["family"] >= 0) & (tasks["family"] < len(fam.families()))).all()
    x = uniform_points(_keys(n, 7), 1, fam.max_dim).squeeze(1)
    values = fam.evaluate(tasks, x)
    assert values.shape == (n,) and values.dtype == torch.float32 and torch.isfinite(values).all()
    assert torch.equal(fam.evaluate_points(tasks, x.unsqueeze(1)).squeeze(1), values)


@pytest.mark.parametrize("name", NAMES)
def test_determinism_batch_equivalence_and_splits(families, samples, name):
    fam = families[name]
    keys = _keys(32, 0)
    again = fam.sample(keys[:6], "train")
    for field, value in again.items():
        assert torch.equal(value, samples[(name, "train")][field][:6]), field
    for row in (0, 5):
        single = fam.sample(keys[row : row + 1], "test")
        for field, value in single.items():
            assert torch.equal(value, samples[(name, "test")][field][row : row + 1]), (row, field)
    train, test = samples[(name, "train")], samples[(name, "test")]
    assert not torch.equal(train["f_ref"], test["f_ref"])
    x = uniform_points(_keys(32, 3), 1, fam.max_dim).squeeze(1)
    x2 = x.clone()
    x2[5] = torch.linspace(-0.9, 0.9, fam.max_dim)
    v1, v2 = fam.evaluate(train, x), fam.evaluate(train, x2)
    assert torch.equal(v1[:5], v2[:5]) and torch.equal(v1[6:], v2[6:])  # rows do not interact


@pytest.mark.parametrize("cls", BENCHMARKS)
def test_untransformed_benchmarks_match_known_minima(cls):
    fam = cls(max_shift=0.0, scale_range=(1.0, 1.0), offset_std=0.0)
    tasks = fam.sample(_keys(4, 0), "train")
    assert torch.allclose(tasks["f_opt"], torch.full((4,), cls.f_min), rtol=0, atol=1e-6)
    assert torch.allclose(fam.evaluate(tasks, tasks["x_opt"]), tasks["f_opt"], rtol=0, atol=2e-6)
    if cls is BraninFamily:  # all three minimizers, mapped to [-1, 1]^2
        for u in ((-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)):
            x = torch.tensor([[2 * (u[0] + 5) / 15 - 1, 2 * u[1] / 15 - 1]]).expand(4, 2)
            assert torch.allclose(fam.evaluate(tasks, x), torch.full((4,), 0.397887), atol=2e-5)
    else:  # the widely quoted values
        quoted = {3: -3.86278, 6: -3.32237}[fam.max_dim]
        assert abs(float(tasks["f_opt"][0]) - quoted) < 1e-5


@pytest.mark.parametrize("cls", BENCHMARKS)
def test_shifted_scaled_benchmarks_exact_optimum(cls):
    fam = cls()
    n = 64
    tasks = fam.sample(_keys(n, 100), "train")
    assert tasks["exact_optimum"].all()
    scale = tasks["scale"]
    assert ((scale >= 0.1 - 1e-6) & (scale <= 10 + 1e-5)).all() and scale.max() / scale.min() > 5
    assert (tasks["shift"].abs() <= 0.3 + 1e-6).all() and tasks["shift"].abs().max() > 0.2
    assert torch.allclose(tasks["f_opt"], scale * cls.f_min + tasks["offset"], rtol=0, atol=1e-5 * 10)
    # f at the transformed minimizer is f_opt (float32 rounding of a value of size ~ scale * 4 + offset)
    tol = 2e-6 * (scale * 4 + tasks["offset"].abs() + 1)
    assert ((fam.evaluate(tasks, tasks["x_opt"]) - tasks["f_opt"]).abs() <= tol).all()
    # no random point (nor a point near the minimizer) is below it
    points = uniform_points(_keys(n, 200), 2048, fam.max_dim)
    near = tasks["x_opt"].unsqueeze(1) + 0.01 * (2 * rng.uniform(_keys(n, 300), (256, fam.max_dim)) - 1)
    values = fam.evaluate_points(tasks, torch.cat([points, near], 1))
    assert (values.amin(1) >= tasks["f_opt"] - tol).all()


@pytest.mark.parametrize("name", NAMES)
def test_no_value_below_f_opt(families, samples, name):
    fam = families[name]
    for split in ("train", "test"):
        tasks = samples[(name, split)]
        points = uniform_points(_keys(32, 500), 2048, fam.max_dim)
        values = fam.evaluate_points(tasks, points)
        tol = 2e-6 * (tasks["f_opt"].abs() + tasks["f_ref"].abs() + 1)
        assert (values.amin(1) >= tasks["f_opt"] - tol).all(), split
        at_opt = fam.evaluate(tasks, tasks["x_opt"])
        assert ((at_opt - tasks["f_opt"]).abs() <= tol).all(), split
        # f_ref is a typical value: most random points are on either side of it
        below = (values < tasks["f_ref"].unsqueeze(1)).float().mean(1)
        assert ((below > 0.3) & (below < 0.7)).float().mean() > 0.8


@pytest.mark.parametrize("name", ["gp", "sklearn", "mixture"])
def test_coordinates_beyond_dim_are_ignored(families, samples, name):
    fam, tasks = families[name], samples[(name, "train")]
    assert (tasks["dim"] < fam.max_dim).any()
    x = uniform_points(_keys(32, 11), 1, fam.max_dim).squeeze(1)
    other = uniform_points(_keys(32, 12), 1, fam.max_dim).squeeze(1)
    beyond = torch.arange(fam.max_dim) >= tasks["dim"].unsqueeze(-1)
    changed = torch.where(beyond, other, x)
    assert torch.equal(fam.evaluate(tasks, x), fam.evaluate(tasks, changed))
    assert (tasks["x_opt"][beyond] == 0).all()


def test_gp_family_structure():
    fam = GPFamily(dims=(3, 3), lengthscale_range=(0.5, 0.5), num_features=64, num_candidates=256, num_starts=16)
    tasks = fam.sample(_keys(8, 0), "train")
    assert (tasks["dim"] == 3).all() and not tasks["exact_optimum"].any()
    assert tasks["omega"].shape == (8, 3, 64)
    assert torch.allclose(tasks["lengthscale"], torch.full((8, 3), 0.5))
    # value and closed-form gradient agree with autograd
    x = uniform_points(_keys(8, 1), 5, 3).requires_grad_(True)
    value, grad = fam.value_and_grad(tasks, x)
    value.sum().backward()
    assert torch.allclose(grad, x.grad, atol=1e-4)
    # the descent improves on the best random candidate
    coarse = GPFamily(
        dims=(3, 3),
        lengthscale_range=(0.5, 0.5),
        num_features=64,
        num_candidates=256,
        num_starts=16,
        screen_steps=0,
        descent_steps=0,
    )
    assert (tasks["f_opt"] <= coarse.sample(_keys(8, 0), "train")["f_opt"]).all()
    # unit prior variance: values over many points and functions have variance ~ 1
    cheap = GPFamily(num_candidates=8, num_starts=8, screen_steps=0, descent_steps=0)
    many = cheap.sample(_keys(64, 5), "train")
    values = cheap.evaluate_points(many, uniform_points(_keys(64, 6), 64, 6))
    assert 0.6 < float(values.var()) < 1.5


def test_sklearn_table_bundled_and_split_datasets(families, samples):
    fam = families["sklearn"]
    arrays = load_tables()
    assert {str(p) for p in arrays["problems"]} == {"svm", "sgd", "mlp"}
    for key in arrays:
        if key.startswith("table/"):
            table = arrays[key]
            assert table.dtype == np.float32 and np.isfinite(table).all() and (table >= 0).all()
            assert np.median(table) > table.min()  # never flat: f_ref is meaningful
    train_ds = {fam.datasets[i] for i in samples[("sklearn", "train")]["dataset"].tolist()}
    test_ds = {fam.datasets[i] for i in samples[("sklearn", "test")]["dataset"].tolist()}
    assert train_ds <= {"digits", "breast_cancer", "iris"} and test_ds <= {"wine", "diabetes"}
    tasks = fam.sample(_keys(256, 0), "train")
    assert set(tasks["problem"].tolist()) == {0, 1, 2} and len(set(tasks["dataset"].tolist())) == 3
    assert tasks["exact_optimum"].all()


def _grid_point(fam: SklearnTableFamily, tasks, row: int, index: tuple[int, ...]) -> torch.Tensor:
    """The input point of task ``row`` at table vertex ``index`` (through its permutation and signs)."""
    sizes = tasks["grid_size"][row]
    x = torch.zeros(fam.max_dim)
    for j, i in enumerate(index):
        u = 2.0 * i / (int(sizes[j]) - 1) - 1.0
        x[int(tasks["perm"][row, j])] = float(tasks["sign"][row, j]) * u
    return x


def test_sklearn_interpolation_hits_table_and_fresh_fit():
    pytest.importorskip("sklearn")
    from metaopt_envs.hpo.families import sklearn_problems as sp

    fam = SklearnTableFamily(problems=("svm", "sgd"), train_datasets=("iris",), test_datasets=("wine",))
    tasks = fam.sample(_keys(64, 0), "train")
    arrays = load_tables()
    for problem, index in (("svm", (7, 3)), ("sgd", (6, 4, 1))):
        row = int((tasks["problem"] == fam.problems.index(problem)).nonzero()[0])
        table = arrays[f"table/{problem}/iris"]
        x = _grid_point(fam, tasks, row, index).expand(64, -1).clone()
        value = float(fam.evaluate(tasks, x)[row])
        assert value == pytest.approx(float(table[index]), abs=1e-6)
        config = {name: float(arrays[f"grid/{problem}/{name}"][i]) for (name, _), i in zip(sp.PROBLEMS[problem], index)}
        assert sp.fit_score(problem, "iris", config) == pytest.approx(value, abs=1e-6)
    # midway between two grid points along one axis: the mean of the two
    row = int((tasks["problem"] == 0).nonzero()[0])
    one = {name: value[row : row + 1].expand(3, *value.shape[1:]) for name, value in tasks.items()}
    a, b = _grid_point(fam, tasks, row, (4, 5)), _grid_point(fam, tasks, row, (5, 5))
    values = fam.evaluate(one, torch.stack([a, b, (a + b) / 2]))
    table = arrays["table/svm/iris"]
    expected = [table[4, 5], table[5, 5], (table[4, 5] + table[5, 5]) / 2]
    assert values.tolist() == pytest.approx([float(v) for v in expected], abs=1e-6)


def test_mixture_members_and_dispatch(families, samples):
    fam = families["mixture"]
    assert fam.families() == ("branin", "hartmann3", "hartmann6", "gp")
    keys = _keys(32, 0)
    tasks = samples[("mixture", "train")]
    assert len(set(tasks["family"].tolist())) == 4
    x = uniform_points(_keys(32, 9), 1, 6).squeeze(1)
    values = fam.evaluate(tasks, x)
    for index, member in enumerate(fam.members):
        rows = (tasks["family"] == index).nonzero().squeeze(-1)
        own = member.sample(keys[rows], "train")
        assert torch.equal(own["f_opt"], tasks["f_opt"][rows]) and torch.equal(own["dim"], tasks["dim"][rows])
        assert torch.equal(member.evaluate(own, x[rows, : member.max_dim]), values[rows])
    # every sample has the same fields and shapes, even without some members
    one = fam.sample(keys[:1], "train")
    assert {k: v.shape[1:] for k, v in one.items()} == {k: v.shape[1:] for k, v in tasks.items()}
    weighted = ObjectiveMixture(members=("branin", "sklearn"), weights=[0.0, 1.0])
    assert weighted.max_dim == 3 and (weighted.sample(keys, "test")["family"] == 1).all()


def test_bad_arguments_raise_value_error(families):
    fam = families["branin"]
    keys = _keys(2, 0)
    with pytest.raises(ValueError, match="task_family"):
        make_objective_family("rosenbrock")
    with pytest.raises(ValueError, match="task_family"):
        make_objective_family(fam, max_shift=0.1)
    for name in ("branin", "gp", "sklearn", "mixture"):
        with pytest.raises(ValueError, match="split"):
            families[name].sample(keys, "validation")
    with pytest.raises(ValueError, match="keys"):
        fam.sample(torch.zeros(2, dtype=torch.int32), "train")
    with pytest.raises(ValueError, match="x must have shape"):
        fam.evaluate(fam.sample(keys, "train"), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_shift"):
        BraninFamily(max_shift=0.9)
    with pytest.raises(ValueError, match="scale_range"):
        Hartmann6Family(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="dims"):
        GPFamily(dims=(0, 3))
    with pytest.raises(ValueError, match="num_starts"):
        GPFamily(num_candidates=4, num_starts=8)
    with pytest.raises(ValueError, match="test_datasets"):
        SklearnTableFamily(test_datasets=("mnist",))
    with pytest.raises(ValueError, match="problems"):
        SklearnTableFamily(problems=("xgboost",))
    with pytest.raises(ValueError, match="members"):
        ObjectiveMixture(members=("branin", "nope"))
    with pytest.raises(ValueError, match="weights"):
        ObjectiveMixture(members=("branin", "gp"), weights=[1.0])
    assert set(OBJECTIVE_FAMILIES) == {"branin", "hartmann3", "hartmann6", "gp", "sklearn"}


def test_gp_tasks_sampled_in_row_blocks_are_those_of_one_block():
    # The search runs in blocks of rows (cache-sized); a task must not depend on its block.
    family = GPFamily(num_features=64, num_candidates=256, num_starts=16)
    keys = rng.keys_from_seeds(list(range(37)))
    family._row_block = 10**9
    whole = family.sample(keys, "test")
    family._row_block = 16  # 16 + 16 + 5
    blocked = family.sample(keys, "test")
    assert whole.keys() == blocked.keys()
    for name in whole:
        assert torch.equal(whole[name], blocked[name]), name
    assert not torch.equal(whole["x_opt"][:16], whole["x_opt"][16:32])
