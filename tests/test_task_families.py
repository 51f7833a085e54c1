"""The one task-family protocol: registry, mixtures and the public checker.

Promises (metaopt_envs.core.family, .registry, .mixture, .checker docstrings):

- registry contract: every registered family of every kind is made by name, is
  of its kind and passes ``check_task_family``; bad names, kinds, instances and
  kwargs raise a ``ValueError`` that names the argument, the value and the
  allowed values;
- mixtures: one class for every kind, ``weights`` validated (finite,
  non-negative, positive sum, one per member), one field convention, each row
  exactly its member's own sample;
- bad input to the checker: one planted bug per defect, each caught with a
  message that names the family, the method and the problem;
- environments run the cheap checks on a user's instance (a buggy family fails
  at construction), not on built-in names.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import metaopt_envs
from metaopt_envs import TaskFamilyError, check_task_family, make_core
from metaopt_envs.core import rng
from metaopt_envs.core.family import KINDS, TaskFamily, take
from metaopt_envs.core.mixture import TaskMixture, check_weights, member_field
from metaopt_envs.core.registry import (
    make_task_family,
    register_task_family,
    registered_task_families,
    task_family_names,
)
from metaopt_envs.ensemble.families import StreamFamily, make_stream_family
from metaopt_envs.hpo.families import ObjectiveFamily, make_objective_family
from metaopt_envs.lr.families import LRTaskFamily
from metaopt_envs.lr.families import make_task_family as make_lr_task_family
from metaopt_envs.lr.optimizers import InnerOptimizer

BUILT_INS = [(kind, name) for kind in KINDS for name in task_family_names(kind)]


def _keys(n: int, seed: int = 0) -> torch.Tensor:
    return rng.keys_from_seeds(list(range(seed, seed + n)))


# ---------------------------------------------------------------------------------------------- good families
class LeastSquares(LRTaskFamily):
    """Linear least squares ``1/2 mean((X w - y)^2)``, 5 features, 32 samples per task."""

    name, param_dim = "least_squares", 5

    def sample(self, keys, split):
        x = rng.normal(rng.fold(keys, 1), (32, 5))
        w = rng.normal(rng.fold(keys, 2), (5,))
        return {"x": x, "y": (x @ w.unsqueeze(-1)).squeeze(-1)}

    def init_params(self, tasks, keys):
        return torch.zeros(keys.shape[0], self.param_dim, device=keys.device)

    @staticmethod
    def _objective(params, x, y):
        return 0.5 * ((x @ params.unsqueeze(-1)).squeeze(-1) - y).square().mean(-1)

    def loss(self, params, tasks, split="train"):
        return self._objective(params, tasks["x"], tasks["y"])

    def minibatch_loss(self, params, tasks, keys):
        index = rng.randint(keys, 32, (8,))
        x = tasks["x"].gather(1, index.unsqueeze(-1).expand(-1, -1, 5))
        return self._objective(params, x, tasks["y"].gather(1, index))


class NoisyLevels(StreamFamily):
    """One regime per task: a level plus standard normal noise."""

    name, param_names, max_regimes = "noisy_levels", ("level",), 1

    def sample(self, keys, split):
        task = self.task_stream(keys, split)
        n = keys.shape[0]
        level = 3.0 * rng.normal(rng.fold(task, 1))
        return {
            "family": torch.zeros(n, dtype=torch.int64),
            "num_regimes": torch.ones(n, dtype=torch.int64),
            "regime_params": level.view(n, 1, 1),
            "stream_key": task,
        }

    def realise(self, tasks, episode_keys, length):
        noise = rng.normal(rng.fold(tasks["stream_key"], episode_keys), (length,))
        values = tasks["regime_params"][:, 0] + noise
        return {"values": values, "regime": torch.zeros(values.shape, dtype=torch.int64)}


class Sphere(ObjectiveFamily):
    """``f(x) = |x - c|^2`` on ``[-1, 1]^2``, with a random centre ``c`` in ``[-0.5, 0.5]^2``."""

    name, max_dim = "sphere", 2

    def sample(self, keys, split):
        stream = self.task_stream(keys, split)
        n = keys.shape[0]
        centre = rng.uniform(rng.fold(stream, 1), (2,)) - 0.5
        return {
            "dim": torch.full((n,), 2, dtype=torch.int64),
            "f_opt": torch.zeros(n),
            "f_ref": torch.ones(n),
            "exact_optimum": torch.ones(n, dtype=torch.bool),
            "x_opt": centre,
            "family": torch.zeros(n, dtype=torch.int64),
            "centre": centre,
        }

    def _evaluate(self, tasks, x):
        return (x - tasks["centre"].unsqueeze(1)).square().sum(-1)


GOOD = {"lr": LeastSquares, "ensemble": NoisyLevels, "hpo": Sphere}


# ---------------------------------------------------------------------------------------------- registry contract
@pytest.mark.parametrize(("kind", "name"), BUILT_INS, ids=[f"{k}-{n}" for k, n in BUILT_INS])
def test_every_registered_family_passes_the_checker(kind, name):
    family = make_task_family(kind, name)
    assert isinstance(family, TaskFamily) and family.kind == kind
    check_task_family(family)
    check_task_family(family, kind, batch_sizes=(2,), splits=("test",), quick=True)


def test_registry_lists_every_kind_in_order():
    assert task_family_names("lr") == (
        "quadratic",
        "logistic",
        "sinusoid",
        "sklearn",
        "mixture",
        "digits_convnet",
        "mnist1d_mlp",
        "mnist1d_conv",
        "char_transformer",
        "char_lstm",
    )
    assert task_family_names("ensemble") == ("switching_ar", "regimes", "real", "mixture")
    assert task_family_names("hpo") == ("branin", "hartmann3", "hartmann6", "gp", "sklearn", "mixture")
    assert set(registered_task_families("lr")) == set(task_family_names("lr"))


@pytest.mark.parametrize("kind", KINDS)
def test_good_user_families_pass_and_are_returned_as_is(kind):
    family = GOOD[kind]()
    check_task_family(family)
    check_task_family(family, kind)
    assert make_task_family(kind, family) is family


def test_thin_conveniences_call_the_one_registry():
    assert type(make_lr_task_family("quadratic")) is type(make_task_family("lr", "quadratic"))
    assert type(make_stream_family("regimes")) is type(make_task_family("ensemble", "regimes"))
    assert type(make_objective_family("gp")) is type(make_task_family("hpo", "gp"))
    with pytest.raises(ValueError, match=r"task_family must be one of .*'quadratic'.*got 'nope'"):
        make_lr_task_family("nope")


@pytest.mark.parametrize("bad", [["quadratic"], {"name": "quadratic"}, None, 3, ("quadratic",)])
def test_unhashable_or_unknown_task_family_names_the_argument_and_allowed_values(bad):
    with pytest.raises(ValueError) as info:
        make_task_family("lr", bad)
    message = str(info.value)
    assert "unhashable" not in message
    assert message.startswith("task_family must be one of ('quadratic', 'logistic', 'sinusoid', 'sklearn', 'mixture', ")
    assert repr(bad) in message


def test_unhashable_task_family_reaches_the_env_as_a_clear_error():
    with pytest.raises(ValueError, match=r"task_family must be one of .* got \['quadratic'\]"):
        gym.make("MetaOpt-LR-v0", task_family=["quadratic"])
    with pytest.raises(ValueError, match=r"task_family must be one of \('switching_ar'.* got \['real'\]"):
        make_core("MetaOpt-Ensemble-v0", task_family=["real"])
    with pytest.raises(ValueError, match=r"task_family must be one of \('branin'.* got \{'gp'\}"):
        make_core("MetaOpt-HPO-v0", task_family={"gp"})


def test_registry_errors_name_kind_instance_and_kwargs():
    with pytest.raises(ValueError, match=r"kind must be one of \('lr', 'ensemble', 'hpo'\), got 'rl'"):
        make_task_family("rl", "quadratic")
    with pytest.raises(
        ValueError, match=r"task_family must be a task family of kind 'lr' .*'sphere' \(Sphere\).*LRTaskFamily"
    ):
        make_task_family("lr", Sphere())
    with pytest.raises(ValueError, match="task_family_kwargs cannot be combined with a task family instance"):
        make_task_family("hpo", Sphere(), max_dim=3)
    with pytest.raises(ValueError, match="task_family must be a task family of kind 'hpo'"):
        gym.make("MetaOpt-HPO-v0", task_family=LeastSquares())


def test_register_a_user_family_by_name(monkeypatch):
    from metaopt_envs.core import registry

    monkeypatch.setitem(registry._REGISTRY, "lr", dict(registry._REGISTRY["lr"]))  # leave the registry as it was
    register_task_family("lr", "least_squares_test", LeastSquares)
    register_task_family("lr", "least_squares_test", LeastSquares)  # the same factory again: a no-op
    assert "least_squares_test" in task_family_names("lr")
    assert isinstance(make_task_family("lr", "least_squares_test"), LeastSquares)
    with pytest.raises(ValueError, match="already registered"):
        register_task_family("lr", "least_squares_test", Sphere)
    with pytest.raises(ValueError, match="kind must be one of"):
        register_task_family("vision", "x", LeastSquares)
    with pytest.raises(ValueError, match="factory"):
        register_task_family("lr", "y", "not callable")


# ---------------------------------------------------------------------------------------------- mixtures
MIXTURES = {
    "lr": ("quadratic", "logistic", "sinusoid", "sklearn"),
    "ensemble": ("switching_ar", "regimes", "real"),
    "hpo": ("branin", "hartmann3", "hartmann6", "gp"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ([math.nan, 1, 1, 1], "NaN or infinite"),
        ([math.inf, 1, 1, 1], "NaN or infinite"),
        ([-1, 1, 1, 1], "non-negative"),
        ([0, 0, 0, 0], "positive sum"),
        ([1, 1], "got 2 numbers"),
        (["a", 1, 1, 1], "finite non-negative numbers"),
        ("1111", "finite non-negative numbers"),
        (1.0, "finite non-negative numbers"),
    ],
)
def test_mixture_weights_are_validated(kind, weights, problem):
    members = MIXTURES[kind][:4] if kind != "ensemble" else (*MIXTURES[kind], "switching_ar")
    with pytest.raises(ValueError, match="weights") as info:
        make_task_family(kind, "mixture", members=members, weights=weights)
    assert problem in str(info.value)


def test_check_weights_accepts_numbers_and_defaults():
    assert check_weights(None, 3) == [1.0, 1.0, 1.0]
    assert check_weights(np.array([0, 2, 1]), 3) == [0.0, 2.0, 1.0]
    with pytest.raises(ValueError, match=r"weights must be 2 finite non-negative numbers .*got a NaN"):
        check_weights([float("nan"), 1.0], 2)


@pytest.mark.parametrize("kind", KINDS)
def test_one_mixture_class_one_field_convention(kind):
    good = GOOD[kind]()
    mixture = make_task_family(kind, "mixture", members=[MIXTURES[kind][0], good], weights=[1.0, 1.0])
    assert isinstance(mixture, TaskMixture) and mixture.kind == kind
    assert mixture.families() == (MIXTURES[kind][0], good.name)
    keys = _keys(24, 3)
    for split in ("train", "test"):
        tasks = mixture.sample(keys, split)
        family = mixture.family_index(tasks)
        assert set(family.tolist()) == {0, 1}
        for index, member in enumerate(mixture.members):
            rows = (family == index).nonzero().squeeze(-1)
            own = member.sample(keys[rows], split)
            mine = mixture.member_tasks(tasks, index, rows)
            assert mine.keys() == own.keys()
            for name, value in own.items():
                if name != "family":
                    assert torch.equal(mine[name], value), (kind, split, name)
            for name in own:
                if name not in mixture.shared_fields and name != "family":
                    assert member_field(index, name) in tasks
        # every sample has the same fields and shapes, even without some members
        one = mixture.sample(keys[:1], split)
        assert {k: v.shape[1:] for k, v in one.items()} == {k: v.shape[1:] for k, v in tasks.items()}
    check_task_family(mixture)


def test_mixture_members_are_validated():
    with pytest.raises(ValueError, match="members must be a non-empty list of hpo task family names"):
        make_task_family("hpo", "mixture", members="branin")
    with pytest.raises(ValueError, match=r"members .*task_family must be one of"):
        make_task_family("ensemble", "mixture", members=["switching_ar", "nope"])
    with pytest.raises(ValueError, match="must not contain a mixture"):
        make_task_family("lr", "mixture", members=["quadratic", make_task_family("lr", "mixture")])
    with pytest.raises(ValueError, match="members must be a non-empty list of lr"):
        make_task_family("lr", "mixture", members=[])


def test_lr_mixture_accepts_instances_positionally():
    from metaopt_envs.lr.families import MixtureFamily, NoisyQuadraticFamily

    mixture = MixtureFamily([NoisyQuadraticFamily(), LeastSquares()], weights=[0.0, 1.0])
    assert mixture.param_dim == 32 and not mixture.has_validation
    assert (mixture.sample(_keys(8), "train")["family"] == 1).all()


# ---------------------------------------------------------------------------------------------- planted bugs
class WrongShapeLoss(LeastSquares):
    def loss(self, params, tasks, split="train"):
        return super().loss(params, tasks, split).unsqueeze(-1)


class Float64Init(LeastSquares):
    def init_params(self, tasks, keys):
        return super().init_params(tasks, keys).double()


class FloatKeys(LeastSquares):
    """Casts the keys to float32: neighbouring keys collide."""

    def sample(self, keys, split):
        return super().sample(rng.mix(keys.to(torch.float32).to(torch.int64)), split)


class Int32Keys(LeastSquares):
    """Keeps only the low 32 bits of the keys."""

    def sample(self, keys, split):
        return super().sample(keys & 0xFFFFFFFF, split)


class DetachedMinibatch(LeastSquares):
    def minibatch_loss(self, params, tasks, keys):
        return super().minibatch_loss(params.detach(), tasks, keys)


class ScalarMinibatch(LeastSquares):
    def minibatch_loss(self, params, tasks, keys):
        return super().minibatch_loss(params, tasks, keys).mean()


class SharedInit(LeastSquares):
    def init_params(self, tasks, keys):
        return torch.full((self.param_dim,), 0.1)


class ExpandedInit(LeastSquares):
    def init_params(self, tasks, keys):
        return torch.full((1, self.param_dim), 0.1).expand(keys.shape[0], -1)


class NaNInit(LeastSquares):
    def init_params(self, tasks, keys):
        params = super().init_params(tasks, keys)
        params[:, 0] = float("nan")
        return params


class ZeroInitialLoss(LeastSquares):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["y"] = torch.zeros_like(tasks["y"])  # the zero init is the optimum
        return tasks


class BatchDependent(LeastSquares):
    """Centres the true weights over the batch: a row depends on the others."""

    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["y"] = tasks["y"] - tasks["y"].mean(0, keepdim=True) + 1.0
        return tasks


class GlobalRNG(LeastSquares):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["y"] = tasks["y"] + torch.randn(tasks["y"].shape)
        return tasks


class WrongClosedFormGradient(LeastSquares):
    def minibatch_loss_and_grad(self, params, tasks, keys):
        loss, grad = super().minibatch_loss_and_grad(params, tasks, keys)
        return loss, 2.0 * grad


class RaisingLoss(LeastSquares):
    def loss(self, params, tasks, split="train"):
        raise KeyError("val_x")


class LeadingDimension(LeastSquares):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["scale"] = torch.ones(1)
        return tasks


class NoneTo(LeastSquares):
    def to(self, device):
        pass


class MissingNumRegimes(NoisyLevels):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        del tasks["num_regimes"]
        return tasks


class Float64Values(NoisyLevels):
    def realise(self, tasks, episode_keys, length):
        out = super().realise(tasks, episode_keys, length)
        return {**out, "values": out["values"].double()}


class RegimeOutOfRange(NoisyLevels):
    def realise(self, tasks, episode_keys, length):
        out = super().realise(tasks, episode_keys, length)
        return {**out, "regime": out["regime"] + 1}


class EpisodeBatchDependent(NoisyLevels):
    def realise(self, tasks, episode_keys, length):
        out = super().realise(tasks, episode_keys, length)
        return {**out, "values": out["values"] - out["values"].mean(0, keepdim=True)}


class MissingFRef(Sphere):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        del tasks["f_ref"]
        return tasks


class NonFiniteValues(Sphere):
    def _evaluate(self, tasks, x):
        return torch.log(1.0 - x.abs().amax(-1)) + super()._evaluate(tasks, x)  # -inf on the cube's faces


class WrongXOpt(Sphere):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["x_opt"] = tasks["x_opt"] + 0.3
        return tasks


class RefBelowOptimum(Sphere):
    def sample(self, keys, split):
        tasks = super().sample(keys, split)
        tasks["f_ref"] = tasks["f_opt"]
        return tasks


class Float64Evaluate(Sphere):
    def _evaluate(self, tasks, x):
        return super()._evaluate(tasks, x).double()


PLANTED = [
    (WrongShapeLoss, ["loss (n=1, split='train')", "returned shape (1, 1), expected (1,)", "one loss per problem"]),
    (Float64Init, ["init_params", "dtype torch.float64, expected torch.float32"]),
    (FloatKeys, ["sample", "only in their lowest bit gave identical draws", "cast to a narrower type"]),
    (Int32Keys, ["sample", "only in bit 40 gave identical draws", "float or int32"]),
    (DetachedMinibatch, ["minibatch_loss", "detached from params", "no gradient reaches the parameters"]),
    (
        ScalarMinibatch,
        ["minibatch_loss (n=1, split='train')", "returned shape (), expected (1,)", "reduce over each problem's data"],
    ),
    (SharedInit, ["init_params", "returned shape (5,), expected (n, P) = (1, 5)", "broadcast to every row"]),
    (ExpandedInit, ["init_params (n=3", "broadcast view (stride 0 along the rows"]),
    (NaNInit, ["init_params", "non-finite values (NaN or inf) in rows [0]"]),
    (ZeroInitialLoss, ["loss (n=1", "zero or negative in rows [0]", "relative to the initial loss"]),
    (BatchDependent, ["sample (n=3", "row 0 of a batch of 3 differs from the same row alone (field 'y'"]),
    (GlobalRNG, ["sample", "two calls with the same keys gave different tasks (field 'y')", "global RNG"]),
    (WrongClosedFormGradient, ["minibatch_loss_and_grad", "differs from autograd's gradient of minibatch_loss"]),
    (RaisingLoss, ["loss (n=1, split='train')", "raised KeyError: 'val_x'"]),
    (LeadingDimension, ["sample", "field 'scale' has shape (1,)", "n = 3, as its leading dimension"]),
    (NoneTo, ["to: returned None", "return self"]),
    (MissingNumRegimes, ["sample", "missing the required field(s) ['num_regimes']", "MetaOpt-Ensemble-v0"]),
    (Float64Values, ["realise", "field 'values' has dtype torch.float64, expected torch.float32"]),
    (RegimeOutOfRange, ["realise", "field 'regime' leaves 0..num_regimes-1 in rows [0]"]),
    (EpisodeBatchDependent, ["realise (n=3", "row 0 of a batch of 3 differs from the same row alone (field 'values'"]),
    (MissingFRef, ["sample", "missing the required field(s) ['f_ref']", "MetaOpt-HPO-v0"]),
    (NonFiniteValues, ["evaluate (n=1", "non-finite values (NaN or inf)", "at x = [-1.0, -1.0]"]),
    (WrongXOpt, ["evaluate", "evaluate(x_opt) =", "x_opt must be a point where the objective takes the value f_opt"]),
    (RefBelowOptimum, ["sample", "field 'f_ref' must exceed 'f_opt'"]),
    (Float64Evaluate, ["evaluate", "dtype torch.float64, expected torch.float32"]),
]


@pytest.mark.parametrize(("cls", "phrases"), PLANTED, ids=[cls.__name__ for cls, _ in PLANTED])
def test_checker_names_each_planted_bug(cls, phrases):
    family = cls()
    with pytest.raises(TaskFamilyError) as info:
        check_task_family(family)
    message = str(info.value)
    assert message.startswith(f"task family {family.name!r} ({cls.__name__}), "), message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert isinstance(info.value, ValueError)
    assert info.value.family_name == family.name and info.value.method in message


def test_checker_rejects_non_families_and_wrong_kinds():
    with pytest.raises(ValueError, match="family must be a task family instance"):
        check_task_family(object())
    with pytest.raises(
        TaskFamilyError,
        match=r"kind: is 'hpo', but kind='lr' \(MetaOpt-LR-v0\) needs a subclass of "
        r"metaopt_envs.lr.families.LRTaskFamily",
    ):
        check_task_family(Sphere(), "lr")
    with pytest.raises(ValueError, match="kind must be one of"):
        check_task_family(Sphere(), "vision")

    class KindLess(TaskFamily):
        def sample(self, keys, split):
            return {"x": torch.zeros(keys.shape[0])}

    with pytest.raises(TaskFamilyError, match="subclass your environment's base"):
        check_task_family(KindLess())


def test_quick_check_skips_only_the_costly_parts():
    check_task_family(FloatKeys(), quick=True)  # the key-width check is not quick
    check_task_family(WrongClosedFormGradient(), quick=True)
    with pytest.raises(TaskFamilyError, match="detached"):
        check_task_family(DetachedMinibatch(), quick=True)


# ---------------------------------------------------------------------------------------------- envs
@pytest.mark.parametrize(
    ("env_id", "cls", "phrase"),
    [
        ("MetaOpt-LR-v0", ScalarMinibatch, "minibatch_loss (n=1, split='train'): returned shape ()"),
        ("MetaOpt-LR-v0", SharedInit, "init_params (n=1, split='train'): returned shape (5,)"),
        ("MetaOpt-Ensemble-v0", MissingNumRegimes, "missing the required field(s) ['num_regimes']"),
        ("MetaOpt-HPO-v0", NonFiniteValues, "evaluate (n=1, split='train'): returned non-finite values"),
    ],
)
def test_buggy_family_fails_at_env_construction_with_the_checkers_message(env_id, cls, phrase):
    with pytest.raises(TaskFamilyError, match="task family") as info:
        gym.make(env_id, task_family=cls())
    assert phrase in str(info.value)
    with pytest.raises(TaskFamilyError):
        make_core(env_id, num_envs=2, task_family=cls())


@pytest.mark.parametrize(
    ("env_id", "kind", "kwargs"),
    [
        ("MetaOpt-LR-v0", "lr", {"horizon": 5}),
        ("MetaOpt-Ensemble-v0", "ensemble", {"horizon": 5}),
        ("MetaOpt-HPO-v0", "hpo", {"budget": 5}),
    ],
)
def test_good_user_family_runs_in_its_env(env_id, kind, kwargs):
    family = GOOD[kind]()
    envs = gym.make_vec(env_id, num_envs=3, task_family=family, **kwargs)
    assert envs.core.family is family
    obs, _ = envs.reset(seed=0)
    for _ in range(6):
        obs, reward, *_ = envs.step(envs.action_space.sample())
        assert envs.observation_space.contains(obs) and np.isfinite(reward).all()


def test_registered_user_family_and_mixture_members_are_checked_at_env_construction(monkeypatch):
    from metaopt_envs.core import registry

    monkeypatch.setitem(registry._REGISTRY, "lr", dict(registry._REGISTRY["lr"]))
    register_task_family("lr", "scalar_minibatch", ScalarMinibatch)
    with pytest.raises(TaskFamilyError, match=r"minibatch_loss .*returned shape \(\)"):
        make_core("MetaOpt-LR-v0", num_envs=2, task_family="scalar_minibatch", horizon=4)
    members = {"members": ["quadratic", SharedInit()]}
    with pytest.raises(TaskFamilyError, match=r"init_params .*returned shape \(5,\)"):
        make_core("MetaOpt-LR-v0", num_envs=2, task_family="mixture", task_family_kwargs=members, horizon=4)
    members = {"members": ["branin", NonFiniteValues()]}
    with pytest.raises(TaskFamilyError, match=r"evaluate .*non-finite"):
        make_core("MetaOpt-HPO-v0", num_envs=2, task_family="mixture", task_family_kwargs=members, budget=4)


def test_built_in_names_skip_the_checker(monkeypatch):
    import metaopt_envs.core.checker as checker

    def refuse(*args, **kwargs):
        raise AssertionError("the checker ran on a built-in family")

    monkeypatch.setattr(checker, "check_task_family", refuse)
    make_core("MetaOpt-LR-v0", num_envs=2, task_family="quadratic", horizon=4)
    make_core("MetaOpt-HPO-v0", num_envs=2, task_family="branin", budget=4)
    with pytest.raises(AssertionError, match="built-in"):
        make_core("MetaOpt-HPO-v0", num_envs=2, task_family=Sphere(), budget=4)


def test_checker_is_public():
    assert metaopt_envs.check_task_family is check_task_family
    assert "check_task_family" in metaopt_envs.__all__ and issubclass(metaopt_envs.TaskFamilyError, ValueError)


def test_take_keeps_rows_of_every_field():
    tasks = make_task_family("hpo", "mixture").sample(_keys(6), "train")
    rows = torch.tensor([4, 1])
    picked = take(tasks, rows)
    assert picked.keys() == tasks.keys() and all(torch.equal(picked[k], tasks[k][rows]) for k in tasks)


# -------------------------------------------------------------------------------------- bad constructor arguments
def _constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of ``cls(...)``, following ``**kwargs`` up the bases (``RegimesFamily`` passes
    ``num_regimes`` ... on to ``_SwitchingFamily``); a subclass's default wins."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        forwards = False
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif name != "self" and parameter.default is not inspect.Parameter.empty:
                found.setdefault(name, parameter)
        if not forwards:
            break
    return found


def _bad_constructor_values(parameter: inspect.Parameter) -> list[Any]:
    """Values that must be rejected for an argument, judged by its annotation and default."""
    annotation, default = str(parameter.annotation), parameter.default
    if annotation == "bool":
        return [1, "yes", None]
    if annotation == "int":
        return [True, 2.5, -1, "3"]
    if annotation == "float":
        return [math.nan, math.inf, -math.inf, True, "1.0"]
    if annotation == "tuple[float, float]":
        low, high = default
        return [(math.nan, high), (low, math.inf), (-math.inf, high), (True, high), (low,), low, (high, low)]
    if annotation == "tuple[int, int]":
        low, high = default
        return [(True, high), (low, high + 0.5), (low,), low, (high, low)]
    if annotation == "tuple[int, ...]":
        return [(True,), (2.5,), (0,), 3]
    return []


def _family_classes() -> list[tuple[str, type]]:
    classes = [
        (f"{kind}-{name}", factory)
        for kind in KINDS
        for name, factory in registered_task_families(kind).items()
        if not issubclass(factory, TaskMixture)
    ]
    return [*classes, ("InnerOptimizer", InnerOptimizer)]


def _bad_constructor_cases() -> list[Any]:
    cases = []
    for label, cls in _family_classes():
        for name, parameter in _constructor_parameters(cls).items():
            for value in _bad_constructor_values(parameter):
                cases.append(pytest.param(cls, name, value, id=f"{label}-{name}={value!r}"))
    return cases


BAD_CONSTRUCTOR_CASES = _bad_constructor_cases()


def _shown(value: Any) -> str:
    return re.escape(repr(tuple(value)) if isinstance(value, tuple) else repr(value))


@pytest.mark.parametrize(("cls", "name", "value"), BAD_CONSTRUCTOR_CASES)
def test_bad_family_argument_names_itself(cls, name, value):
    """Every int, float, bool, (low, high) and list-of-ints argument of every built-in family constructor (and of
    the inner optimizers), found from its signature: bools are not numbers, NaN and inf are not floats, a range
    is an ordered pair. The ValueError names the argument, what is allowed and the value."""
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got {_shown(value)}$"):
        cls(**{name: value})


def test_constructor_discovery_covers_every_family():
    """The discovery above is not vacuous: every family has typed arguments, including the ones the contract
    engineer found unchecked."""
    discovered = {
        label: set(_constructor_parameters(cls))
        & {name for name, p in _constructor_parameters(cls).items() if _bad_constructor_values(p)}
        for label, cls in _family_classes()
    }
    assert all(discovered.values()), {label: names for label, names in discovered.items() if not names}
    expected = {
        "lr-quadratic": {"min_dim", "max_dim", "condition_range", "curvature_range", "noise_range", "init_scale"},
        "lr-logistic": {"num_features", "num_train", "num_val", "batch_size", "feature_scale_range", "signal_range"},
        "lr-sinusoid": {
            "hidden_sizes",
            "num_train",
            "num_val",
            "batch_size",
            "amplitude_range",
            "phase_range",
            "input_range",
        },
        "lr-sklearn": {"hidden_sizes", "num_train", "num_val", "batch_size"},
        "ensemble-switching_ar": {"noise_std", "num_regimes", "mean_segment", "min_segment", "max_modulus", "burn_in"},
        "ensemble-regimes": {
            "level_std",
            "slope_std",
            "noise_range",
            "amplitude_range",
            "seasonal_prob",
            "periods",
            "max_modulus",
            "num_regimes",
            "mean_segment",
            "min_segment",
            "burn_in",
        },
        "ensemble-real": {"num_regimes", "num_crops", "min_crop", "scale_range", "shift_std"},
        "hpo-branin": {"max_shift", "scale_range", "offset_std"},
        "hpo-hartmann6": {"max_shift", "scale_range", "offset_std"},
        "hpo-gp": {
            "dims",
            "lengthscale_range",
            "num_features",
            "num_candidates",
            "num_starts",
            "screen_steps",
            "num_refined",
            "descent_steps",
        },
        "hpo-sklearn": {"permute", "flip"},
        "InnerOptimizer": {"momentum", "beta1", "beta2", "eps"},
    }
    for label, names in expected.items():
        assert discovered[label] == names, label


REPORTED_ARGUMENTS = [  # the contract engineer's findings: each of these was accepted before
    ("lr", "quadratic", "init_scale", math.nan),
    ("lr", "quadratic", "init_scale", math.inf),
    ("lr", "quadratic", "condition_range", (10.0, math.inf)),
    ("lr", "quadratic", "noise_range", (0.01, math.inf)),
    ("lr", "quadratic", "min_dim", True),
    ("lr", "logistic", "signal_range", (math.nan, 10.0)),
    ("lr", "logistic", "feature_scale_range", (0.1, math.inf)),
    ("lr", "logistic", "num_features", True),
    ("lr", "logistic", "batch_size", True),
    ("lr", "sinusoid", "amplitude_range", (0.1, math.inf)),
    ("lr", "sinusoid", "input_range", (math.nan, 5.0)),
    ("lr", "sinusoid", "num_train", True),
    ("lr", "sklearn", "num_val", True),
    ("lr", "sklearn", "batch_size", True),
    ("ensemble", "switching_ar", "noise_std", math.inf),
    ("ensemble", "regimes", "level_std", math.nan),
    ("ensemble", "regimes", "slope_std", math.inf),
    ("ensemble", "regimes", "noise_range", (0.3, math.inf)),
    ("ensemble", "real", "shift_std", math.nan),
    ("ensemble", "real", "scale_range", (0.5, math.inf)),
    ("hpo", "branin", "offset_std", math.inf),
    ("hpo", "branin", "scale_range", (0.1, math.inf)),
    ("hpo", "gp", "lengthscale_range", (0.1, math.inf)),
    ("optimizer", "adam", "eps", math.inf),
    ("optimizer", "adam", "eps", 0.0),
    ("optimizer", "momentum", "momentum", 1.0),
    ("optimizer", "adam", "beta1", -0.1),
    ("optimizer", "adam", "beta2", 1.0),
]


@pytest.mark.parametrize(
    ("kind", "family", "name", "value"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}-{case[2]}={case[3]!r}") for case in REPORTED_ARGUMENTS],
)
def test_regression_family_arguments_once_accepted(kind, family, name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got {_shown(value)}$"):
        if kind == "optimizer":
            InnerOptimizer(family, **{name: value})
        else:
            make_task_family(kind, family, **{name: value})
    with pytest.raises(ValueError, match=r"^inner_optimizer must be one of 'sgd', 'momentum', 'adam', got 'lion'$"):
        InnerOptimizer("lion")


def test_check_range_shares_the_float_pair_check():
    """Float ranges go through ``checks.float_pair(strict=False)``: equal ends pass, reversed ones do not, and
    both kinds of range name the allowed pair the same way."""
    from metaopt_envs.core import checks
    from metaopt_envs.core.family import check_range

    assert check_range("noise_range", [0.5, 0.5], low=0.0, low_open=True) == (0.5, 0.5)
    assert checks.float_pair("noise_range", (0.5, 0.5), strict=False) == (0.5, 0.5)
    with pytest.raises(
        ValueError,
        match=r"^noise_range must be a \(low, high\) pair of finite numbers > 0 with "
        r"low <= high, got \(2.0, 1.0\)$",
    ):
        check_range("noise_range", (2.0, 1.0), low=0.0, low_open=True)
    with pytest.raises(ValueError, match=r"with low < high, got \(0.5, 0.5\)$"):
        checks.float_pair("lr_range", (0.5, 0.5))
    with pytest.raises(ValueError, match=r"^num_regimes must be a \(low, high\) pair of ints >= 1 with low <= high"):
        check_range("num_regimes", (3, 2), low=1, integer=True)


def test_family_arguments_accept_config_values_and_keep_their_numbers():
    """What configs and numpy hand over still passes (lists for pairs, numpy scalars, degenerate ranges), in its
    canonical type, and the defaults passed explicitly sample the same tasks as the defaults."""
    family = make_task_family(
        "lr", "quadratic", min_dim=np.int64(3), condition_range=[100, 100], init_scale=np.float32(2)
    )
    assert (family.min_dim, family.condition_range, family.init_scale) == (3, (100.0, 100.0), 2.0)
    assert type(family.min_dim) is int and type(family.condition_range[0]) is float
    assert make_task_family("ensemble", "regimes", periods=[np.int64(5)], slope_std=0).periods == (5,)
    assert make_task_family("hpo", "sklearn", permute=np.bool_(False)).permute is False
    assert make_task_family("lr", "sinusoid", hidden_sizes=[8]).layer_sizes == (1, 8, 1)
    assert InnerOptimizer("momentum", momentum=0).momentum == 0.0
    keys = _keys(4)
    explicit = {
        "quadratic": {"min_dim": 4, "max_dim": 32, "condition_range": (10, 1e4), "init_scale": 1},
        "logistic": {"num_features": 16, "feature_scale_range": [0.1, 10], "signal_range": (1, 10)},
    }
    for name, kwargs in explicit.items():
        default = make_task_family("lr", name).sample(keys, "train")
        given = make_task_family("lr", name, **kwargs).sample(keys, "train")
        assert all(torch.equal(default[k], given[k]) for k in default)


def test_mixture_weights_reject_bools():
    with pytest.raises(ValueError, match=r"weights must be 2 finite non-negative numbers .*got \[True, 1.0\]"):
        check_weights([True, 1.0], 2)


def test_logistic_family_is_exactly_batch_size_independent():
    """Labels are drawn from logits computed as a row vector times a transposed matrix (as ``_logits``), which
    rounds the same for one task as for many: the checker's batched == single holds bit for bit."""
    check_task_family(make_task_family("lr", "logistic"), batch_sizes=(1, 3, 8), rtol=0.0, atol=0.0)
    check_task_family(make_task_family("lr", "quadratic"), batch_sizes=(1, 3, 8), rtol=0.0, atol=0.0)
