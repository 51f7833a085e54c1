"""The tuning problems behind the ``"sklearn"`` objective family, and how its table is made.

Each problem is a small scikit-learn model with two or three hyperparameters on
a grid; a task of the family is one (problem, dataset) pair. This module defines
the datasets (bundled with scikit-learn: nothing is downloaded), their fixed
train/validation splits, the hyperparameter grids and :func:`fit_score`, which
trains one configuration and returns its validation loss.
``scripts/make_hpo_tables.py`` runs it over every grid point and writes
``metaopt_envs/hpo/families/data/hpo_tables.npz``, which the family reads; this
module is only needed to rebuild or check the table (it imports scikit-learn
lazily), never on the environment's step path.

Datasets (``DATASETS``): ``digits`` (1797 x 64, 10 classes), ``breast_cancer``
(569 x 30, 2 classes), ``iris`` (150 x 4, 3 classes), ``wine`` (178 x 13,
3 classes) and ``diabetes`` (442 x 10, regression). Each is split once into
2/3 train and 1/3 validation (``train_test_split(random_state=0)``, stratified
for classification); features are standardized with the train statistics, and
so is the regression target.

Validation loss: the classification error for classifiers; for the regression
dataset the normalized mean squared error ``MSE / Var(y_val)`` (1 for a
constant prediction of the validation mean), capped at ``REGRESSION_CAP``
(diverged fits are assigned the cap).

Problems (``PROBLEMS``; axes in table order, each grid uniform in the listed
(log) range):

* ``svm``: ``SVC`` (``SVR`` with ``epsilon=0.1`` for regression), RBF kernel;
  ``log10_C`` in [-2, 4] (12 points), ``log10_gamma`` in [-5, 1] (12 points).
* ``sgd``: linear model by stochastic gradient descent, ``SGDClassifier``
  (log loss, one-vs-rest) or ``SGDRegressor`` (squared loss), L2 penalty,
  constant step size, ``random_state=0``; ``log10_alpha`` in [-6, 0]
  (10 points), ``log10_eta0`` in [-4, 0] (10 points), ``epochs`` in
  (1, 2, 3, 5, 8, 13, 20, 32): the number of ``partial_fit`` calls (one pass
  over the shuffled train set each).
* ``mlp``: one-hidden-layer ``MLPClassifier``/``MLPRegressor`` (ReLU, Adam,
  batch 64, 30 epochs, no early stopping, ``random_state=0``);
  ``log10_learning_rate`` in [-4, -0.5] (8 points), ``log10_alpha`` in [-6, 1]
  (8 points), ``log2_width`` in 2..7 (6 points: 4 to 128 hidden units).
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np

DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "iris", "wine", "diabetes")
REGRESSION: frozenset[str] = frozenset({"diabetes"})
REGRESSION_CAP = 2.0
SPLIT_SEED = 0
MODEL_SEED = 0

SGD_EPOCHS: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 20, 32)
MLP_EPOCHS = 30

PROBLEMS: dict[str, tuple[tuple[str, np.ndarray], ...]] = {
    "svm": (
        ("log10_C", np.linspace(-2.0, 4.0, 12)),
        ("log10_gamma", np.linspace(-5.0, 1.0, 12)),
    ),
    "sgd": (
        ("log10_alpha", np.linspace(-6.0, 0.0, 10)),
        ("log10_eta0", np.linspace(-4.0, 0.0, 10)),
        ("epochs", np.asarray(SGD_EPOCHS, dtype=np.float64)),
    ),
    "mlp": (
        ("log10_learning_rate", np.linspace(-4.0, -0.5, 8)),
        ("log10_alpha", np.linspace(-6.0, 1.0, 8)),
        ("log2_width", np.arange(2.0, 8.0)),
    ),
}
"""Problem name -> its axes, each ``(name, grid values)``, in table order."""


@cache
def load_split(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)`` of a bundled dataset: the fixed split, standardized.

    Features (and, for regression, the target) are standardized with the train
    statistics. Classification labels are int64, everything else float64.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    x, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    regression = dataset in REGRESSION
    y = np.asarray(y, dtype=np.float64 if regression else np.int64)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=1 / 3, random_state=SPLIT_SEED, stratify=None if regression else y
    )
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    if regression:
        y_mean, y_std = y_tr.mean(), y_tr.std()
        y_tr, y_va = (y_tr - y_mean) / y_std, (y_va - y_mean) / y_std
    return x_tr, y_tr, x_va, y_va


def _loss(dataset: str, prediction: np.ndarray, y_val: np.ndarray) -> float:
    if dataset in REGRESSION:
        if not np.isfinite(prediction).all():
            return REGRESSION_CAP
        nmse = float(np.mean((prediction - y_val) ** 2) / np.var(y_val))
        return min(nmse, REGRESSION_CAP)
    return float(np.mean(prediction != y_val))


def fit_score(problem: str, dataset: str, config: dict[str, float]) -> float:
    """Train ``problem`` on ``dataset`` with the hyperparameters ``config`` (axis name -> value,
    see :data:`PROBLEMS`) and return the validation loss (error, or capped normalized MSE)."""
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {tuple(PROBLEMS)}, got {problem!r}")
    if problem == "sgd":
        return sgd_curve(dataset, config["log10_alpha"], config["log10_eta0"], (int(config["epochs"]),))[0]
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.svm import SVC, SVR

    x_tr, y_tr, x_va, y_va = load_split(dataset)
    regression = dataset in REGRESSION
    if problem == "svm":
        kwargs = {"C": 10.0 ** config["log10_C"], "gamma": 10.0 ** config["log10_gamma"], "kernel": "rbf"}
        model = SVR(epsilon=0.1, **kwargs) if regression else SVC(**kwargs)
    else:
        kwargs = {
            "hidden_layer_sizes": (round(2.0 ** config["log2_width"]),),
            "learning_rate_init": 10.0 ** config["log10_learning_rate"],
            "alpha": 10.0 ** config["log10_alpha"],
            "batch_size": 64,
            "max_iter": MLP_EPOCHS,
            "n_iter_no_change": MLP_EPOCHS + 1,
            "tol": 0.0,
            "random_state": MODEL_SEED,
        }
        model = MLPRegressor(**kwargs) if regression else MLPClassifier(**kwargs)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            model.fit(x_tr, y_tr)
            prediction = model.predict(x_va)
        except (ValueError, FloatingPointError, OverflowError):
            return REGRESSION_CAP if regression else 1.0
    return _loss(dataset, prediction, y_va)


def sgd_curve(dataset: str, log10_alpha: float, log10_eta0: float, epochs: tuple[int, ...] = SGD_EPOCHS) -> list[float]:
    """Validation losses of the ``sgd`` problem after each number of ``epochs`` (one run, read off
    along the way: ``partial_fit`` is called once per epoch)."""
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    x_tr, y_tr, x_va, y_va = load_split(dataset)
    regression = dataset in REGRESSION
    kwargs = {
        "alpha": 10.0**log10_alpha,
        "eta0": 10.0**log10_eta0,
        "learning_rate": "constant",
        "penalty": "l2",
        "random_state": MODEL_SEED,
    }
    model = SGDRegressor(loss="squared_error", **kwargs) if regression else SGDClassifier(loss="log_loss", **kwargs)
    classes = None if regression else np.unique(y_tr)
    out, done, failed = [], 0, False
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for target in epochs:
            while done < target and not failed:
                try:
                    if regression:
                        model.partial_fit(x_tr, y_tr)
                    else:
                        model.partial_fit(x_tr, y_tr, classes=classes)
                except (ValueError, FloatingPointError, OverflowError):
                    failed = True
                done += 1
            if failed:
                out.append(REGRESSION_CAP if regression else 1.0)
            else:
                out.append(_loss(dataset, model.predict(x_va), y_va))
    return out


def problem_table(problem: str, dataset: str) -> np.ndarray:
    """The validation loss at every grid point of ``problem`` on ``dataset``: float32 array of
    shape ``(len(grid_0), len(grid_1)[, len(grid_2)])``."""
    axes = PROBLEMS[problem]
    shape = tuple(len(grid) for _, grid in axes)
    table = np.empty(shape, dtype=np.float64)
    if problem == "sgd":
        for i, alpha in enumerate(axes[0][1]):
            for j, eta0 in enumerate(axes[1][1]):
                table[i, j] = sgd_curve(dataset, float(alpha), float(eta0), tuple(int(e) for e in axes[2][1]))
        return table.astype(np.float32)
    for index in np.ndindex(*shape):
        config = {name: float(grid[k]) for (name, grid), k in zip(axes, index)}
        table[index] = fit_score(problem, dataset, config)
    return table.astype(np.float32)
