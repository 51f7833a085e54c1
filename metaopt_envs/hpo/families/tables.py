"""Real tuning problems of small scikit-learn models, read from a precomputed table (``"sklearn"``).

The table (``data/hpo_tables.npz``, built by ``scripts/make_hpo_tables.py``; see
:mod:`metaopt_envs.hpo.families.sklearn_problems` for the models, grids, data
splits and losses) holds the validation loss of every grid point of every
(problem, dataset) pair. Nothing is trained or downloaded at run time, and
scikit-learn is not imported.

A task is one (problem, dataset) pair, uniform among the pairs of its split:
the **train** split uses the datasets ``train_datasets`` (default digits,
breast_cancer, iris), the **test** split holds out ``test_datasets`` (default
wine and diabetes, the only regression dataset). The objective is the
multilinear interpolation of the pair's table: table axis ``j`` (``G_j`` grid
points) spans ``[-1, 1]`` with its grid points equally spaced (so a coordinate
is linear in the grid index: in log10 C, log10 gamma... for the log-uniform
grids; the ``sgd`` epochs grid 1, 2, 3, 5, 8, 13, 20, 32 is roughly
geometric), and ``evaluate`` is a handful of gathers (8 corners). ``dim`` is
the number of hyperparameters (2 for ``svm``, 3 for ``sgd`` and ``mlp``;
``max_dim = 3``).

To draw more distinct tasks from few tables, each task also takes a random
permutation of its ``d`` axes (``permute``, default True) and flips each axis
with probability 1/2 (``flip``, default True): table axis ``j`` reads the input
coordinate ``perm[j]``, multiplied by ``sign[j]``. These only relabel the cube,
so ``f_opt`` and the distribution of values are unchanged.

A multilinear interpolant is linear along each axis inside every cell, so its
minimum is the smallest table entry: ``f_opt`` is exact (``exact_optimum``
True, ``x_opt`` the first grid vertex holding it). ``f_ref`` is the median of
256 random points as for every family. Ties are common (classification errors
on small validation sets): several vertices can hold the minimum.

Task fields beyond the common ones (all ``(n,)`` int64 unless noted):
``problem``, ``dataset`` (indices into :attr:`SklearnTableFamily.problems` and
:attr:`SklearnTableFamily.datasets`), ``table_offset`` (start of the task's
table in the flat value array), ``grid_size: (n, 3)`` (1 on unused axes),
``stride: (n, 3)`` (0 on unused axes), ``perm: (n, 3)``, ``sign: (n, 3)``
float32.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from metaopt_envs.core import checks, rng
from metaopt_envs.hpo.families.base import ObjectiveFamily, ObjectiveTasks, reference_values

DEFAULT_TABLE_PATH = Path(__file__).resolve().parent / "data" / "hpo_tables.npz"
TRAIN_DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "iris")
TEST_DATASETS: tuple[str, ...] = ("wine", "diabetes")
TABLE_DIM = 3
"""Most hyperparameters of a problem (``max_dim`` of the family)."""


@lru_cache(maxsize=4)
def load_tables(path: str | Path = DEFAULT_TABLE_PATH) -> dict[str, np.ndarray]:
    """The arrays of a table file (read-only, cached per process); see ``scripts/make_hpo_tables.py``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"HPO table {path} not found; build it with `python scripts/make_hpo_tables.py --out {path}`"
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


class SklearnTableFamily(ObjectiveFamily):
    """Tuning problems of scikit-learn models on bundled datasets, interpolated from a table.

    See the module docstring. ``problems``: which problems to use (default all
    in the table: ``svm``, ``sgd``, ``mlp``); ``train_datasets`` and
    ``test_datasets``: the datasets of each split (each non-empty, names from
    the table); ``table_path``: another table file in the same format.
    """

    name = "sklearn"
    max_dim = TABLE_DIM
    _salt = 0x5C1

    def __init__(
        self,
        problems: tuple[str, ...] | None = None,
        train_datasets: tuple[str, ...] = TRAIN_DATASETS,
        test_datasets: tuple[str, ...] = TEST_DATASETS,
        permute: bool = True,
        flip: bool = True,
        table_path: str | Path | None = None,
    ) -> None:
        arrays = load_tables(DEFAULT_TABLE_PATH if table_path is None else table_path)
        available = tuple(str(p) for p in arrays["problems"])
        known = tuple(str(d) for d in arrays["datasets"])
        problems = available if problems is None else tuple(problems)
        for label, names, allowed in (
            ("problems", problems, available),
            ("train_datasets", tuple(train_datasets), known),
            ("test_datasets", tuple(test_datasets), known),
        ):
            if isinstance(names, str) or len(names) == 0 or any(name not in allowed for name in names):
                raise ValueError(f"{label} must be a non-empty list of names from {allowed}, got {names!r}")
        self.problems, self.datasets = problems, known
        self.split_datasets = {"train": tuple(train_datasets), "test": tuple(test_datasets)}
        self.permute, self.flip = checks.boolean("permute", permute), checks.boolean("flip", flip)
        self.axes = {p: tuple(str(a) for a in arrays[f"axes/{p}"]) for p in problems}
        self.grids = {p: {a: arrays[f"grid/{p}/{a}"] for a in self.axes[p]} for p in problems}

        values, rows = [], []  # rows: (problem, dataset, offset, sizes..., strides..., argmin vertex..., min)
        offset = 0
        for pi, problem in enumerate(problems):
            for di, dataset in enumerate(known):
                table = np.asarray(arrays[f"table/{problem}/{dataset}"], dtype=np.float32)
                if table.ndim > TABLE_DIM or not np.isfinite(table).all():
                    raise ValueError(f"table {problem}/{dataset} must be finite with at most {TABLE_DIM} axes")
                sizes = list(table.shape) + [1] * (TABLE_DIM - table.ndim)
                strides = [int(np.prod(sizes[j + 1 :])) if sizes[j] > 1 else 0 for j in range(TABLE_DIM)]
                vertex = list(np.unravel_index(int(table.argmin()), table.shape)) + [0] * (TABLE_DIM - table.ndim)
                rows.append((pi, di, offset, table.ndim, *sizes, *strides, *vertex))
                values.append(table.reshape(-1))
                offset += table.size
        self.values = torch.from_numpy(np.concatenate(values))
        self.pairs = torch.tensor(rows, dtype=torch.int64)  # (P, 4 + 3 * TABLE_DIM)
        self.pools = {
            split: torch.tensor([i for i, row in enumerate(rows) if known[row[1]] in names], dtype=torch.int64)
            for split, names in self.split_datasets.items()
        }
        corners = list(itertools.product((0, 1), repeat=TABLE_DIM))
        self.corners = torch.tensor(corners, dtype=torch.int64)  # (8, 3)

    def to(self, device: torch.device | str) -> SklearnTableFamily:
        self.values = self.values.to(device)
        self.pairs = self.pairs.to(device)
        self.pools = {k: v.to(device) for k, v in self.pools.items()}
        self.corners = self.corners.to(device)
        return self

    def sample(self, keys: torch.Tensor, split: str) -> ObjectiveTasks:
        stream = self.task_stream(keys, split)
        n, device, k = keys.shape[0], keys.device, TABLE_DIM
        pool = self.pools[split].to(device)
        pair = self.pairs.to(device)[pool[rng.randint(rng.fold(stream, 1), len(pool))]]  # (n, 4 + 3k)
        dim = pair[:, 3]
        sizes, strides, vertex = pair[:, 4 : 4 + k], pair[:, 4 + k : 4 + 2 * k], pair[:, 4 + 2 * k :]
        axis = torch.arange(k, device=device)
        active = axis < dim.unsqueeze(-1)
        if self.permute:  # a uniform permutation of the active axes (inactive ones sort last, in order)
            order = rng.uniform(rng.fold(stream, 2), (k,), torch.float64)
            perm = torch.argsort(torch.where(active, order, 2.0 + axis), dim=1, stable=True)
        else:
            perm = axis.expand(n, k).clone()
        if self.flip:
            sign = torch.where(active & (rng.uniform(rng.fold(stream, 3), (k,)) < 0.5), -1.0, 1.0)
        else:
            sign = torch.ones(n, k, device=device)
        # The minimizing vertex in table coordinates, then in input coordinates: x[perm[j]] = sign[j] u[j].
        u_opt = torch.where(sizes > 1, 2.0 * vertex / (sizes - 1).clamp_min(1) - 1.0, 0.0).to(torch.float32)
        x_opt = torch.zeros(n, k, device=device).scatter(1, perm, sign * u_opt)
        flat = pair[:, 2] + (vertex * strides).sum(1)
        tasks: ObjectiveTasks = {
            "dim": dim,
            "f_opt": self.values.to(device)[flat],
            "exact_optimum": torch.ones(n, dtype=torch.bool, device=device),
            "x_opt": x_opt,
            "family": torch.zeros(n, dtype=torch.int64, device=device),
            "problem": pair[:, 0],
            "dataset": pair[:, 1],
            "table_offset": pair[:, 2],
            "grid_size": sizes,
            "stride": strides,
            "perm": perm,
            "sign": sign,
        }
        tasks["f_ref"] = reference_values(self, tasks, stream)
        return tasks

    def _evaluate(self, tasks: ObjectiveTasks, x: torch.Tensor) -> torch.Tensor:
        n, m, k = x.shape[0], x.shape[1], TABLE_DIM
        perm = tasks["perm"].unsqueeze(1).expand(n, m, k)
        u = x.gather(2, perm) * tasks["sign"].unsqueeze(1)  # table coordinates (n, m, k)
        cells = (tasks["grid_size"] - 1).unsqueeze(1)  # (n, 1, k)
        t = (u + 1.0) * 0.5 * cells
        low = torch.minimum(t.floor().to(torch.int64), (cells - 1).clamp_min(0)).clamp_min(0)
        frac = (t - low).clamp(0.0, 1.0)  # (n, m, k); 0 on unused axes
        corners = self.corners.to(x.device)  # (8, k)
        index = tasks["table_offset"].view(n, 1, 1) + (
            (low.unsqueeze(2) + corners) * tasks["stride"].view(n, 1, 1, k)
        ).sum(-1)  # (n, m, 8)
        weight = torch.where(corners.bool(), frac.unsqueeze(2), 1.0 - frac.unsqueeze(2)).prod(-1)
        return (self.values.to(x.device)[index] * weight).sum(-1)

    def hyperparameters(self, tasks: ObjectiveTasks, x: torch.Tensor) -> list[dict[str, float]]:
        """The hyperparameter values (axis name -> grid-scale value, interpolated linearly between
        grid points) of each task's point ``x: (n, max_dim)``; for inspection, a Python loop."""
        out = []
        for i in range(x.shape[0]):
            problem = self.problems[int(tasks["problem"][i])]
            entry = {}
            for j, axis in enumerate(self.axes[problem]):
                u = float(tasks["sign"][i, j]) * float(x[i, int(tasks["perm"][i, j])])
                grid = self.grids[problem][axis]
                entry[axis] = float(np.interp((u + 1.0) / 2.0 * (len(grid) - 1), np.arange(len(grid)), grid))
            out.append(entry)
        return out
