"""Build the precomputed table of the ``"sklearn"`` objective family.

Trains every (problem, dataset, grid point) of
:mod:`metaopt_envs.hpo.families.sklearn_problems` and writes
``metaopt_envs/hpo/families/data/hpo_tables.npz`` (compressed, a few tens of kB).
Deterministic: fixed data splits and model seeds, one thread. About 3 minutes
on one CPU core::

    OMP_NUM_THREADS=1 python scripts/make_hpo_tables.py [--out PATH] [--problems svm,sgd] [--datasets iris]

File layout (every array a numpy array):

* ``problems``, ``datasets``: the names, in the order used by the family;
* ``axes/<problem>``: the axis names (str array); ``grid/<problem>/<axis>``: the
  grid values (float64) of each axis;
* ``table/<problem>/<dataset>``: float32 validation losses, one axis per
  hyperparameter (see ``sklearn_problems.PROBLEMS``);
* ``meta``: a str array of ``key=value`` lines (library versions, seeds).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaopt_envs.hpo.families import sklearn_problems as sp

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "metaopt_envs" / "objectives" / "data" / "hpo_tables.npz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--problems", default=",".join(sp.PROBLEMS))
    parser.add_argument("--datasets", default=",".join(sp.DATASETS))
    args = parser.parse_args(argv)
    problems = [p for p in args.problems.split(",") if p]
    datasets = [d for d in args.datasets.split(",") if d]
    for p in problems:
        if p not in sp.PROBLEMS:
            raise ValueError(f"--problems must be among {tuple(sp.PROBLEMS)}, got {p!r}")
    for d in datasets:
        if d not in sp.DATASETS:
            raise ValueError(f"--datasets must be among {sp.DATASETS}, got {d!r}")

    import sklearn

    start = time.perf_counter()
    arrays: dict[str, np.ndarray] = {
        "problems": np.asarray(problems),
        "datasets": np.asarray(datasets),
    }
    for problem in problems:
        axes = sp.PROBLEMS[problem]
        arrays[f"axes/{problem}"] = np.asarray([name for name, _ in axes])
        for name, grid in axes:
            arrays[f"grid/{problem}/{name}"] = np.asarray(grid, dtype=np.float64)
        for dataset in datasets:
            t0 = time.perf_counter()
            table = sp.problem_table(problem, dataset)
            arrays[f"table/{problem}/{dataset}"] = table
            print(
                f"{problem:>4} {dataset:>13} {table.shape!s:>12}: min {table.min():.4f} "
                f"median {np.median(table):.4f} max {table.max():.4f}  ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    elapsed = time.perf_counter() - start
    arrays["meta"] = np.asarray(
        [
            f"sklearn={sklearn.__version__}",
            f"numpy={np.__version__}",
            f"python={platform.python_version()}",
            f"split_seed={sp.SPLIT_SEED}",
            f"model_seed={sp.MODEL_SEED}",
            f"regression_cap={sp.REGRESSION_CAP}",
        ]
    )  # no timing or date: rebuilding gives the same arrays
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} kB) in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
