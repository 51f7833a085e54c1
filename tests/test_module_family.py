"""Any torch model as an inner problem: ``ModuleFamily`` and the realistic suite built on it.

Promises (metaopt_envs.lr.families.module and .realistic docstrings, README "Bring your own model"):

- a user's own ``nn.Module`` passes the family checker and goes through ``gym.make``, ``gym.make_vec`` and the
  SB3 VecEnv, passing both env checkers;
- batch equivalence: row ``i`` of a batch seeded ``s`` is the single env seeded ``s + i`` within
  ``BATCH_TOLERANCE`` (vmap may reorder reductions; the largest deviation measured is printed);
- the inner problems learn: with a sane constant learning rate the training loss falls;
- keyed randomness: dropout masks come from the minibatch keys (same keys, same loss; other keys, another);
- bad input is refused at construction with a message that names the problem and the fix;
- the realistic families construct fast (cached data), are deterministic and hold data out for the test split.
"""

from __future__ import annotations

import pickle
import random
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch import nn

import metaopt_envs
from metaopt_envs import check_task_family
from metaopt_envs.core import rng
from metaopt_envs.lr.core import LRCore
from metaopt_envs.lr.families import REALISTIC_FAMILIES, ModuleFamily, make_task_family, mse
from metaopt_envs.lr.families.realistic import DIGITS_TEST_IMAGES, digits_images, mnist1d, pydoc_text

BATCH_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
"""Batched rows vs single envs for module families (the README states it); measured: see
test_batched_rows_equal_single_envs (0 on this CPU for the MLP below)."""


class TinyNet(nn.Module):
    """A user's module: 6 features -> 16 (ReLU, dropout) -> 3 classes."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _data(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator)
    return x, (x[:, :3] + 0.3 * torch.randn(n, 3, generator=generator)).argmax(-1)


def _family(**kwargs) -> ModuleFamily:
    options = {"num_train": 64, "num_val": 32, "batch_size": 16, "name": "tiny"}
    return ModuleFamily(kwargs.pop("module", TinyNet), (6,), kwargs.pop("data", _data()), **{**options, **kwargs})


# ---------------------------------------------------------------------------------------------- a user's module
def test_user_module_passes_the_checker():
    check_task_family(_family())
    check_task_family(_family(module=TinyNet(0.2)))  # keyed dropout: batch rows equal single rows too


def test_user_module_through_every_adapter_and_both_env_checkers():
    family = _family(module=TinyNet(0.1))
    env = gym.make("MetaOpt-LR-v0", task_family=family, horizon=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
        sb3_check_env(env, warn=True)
    vec = gym.make_vec("MetaOpt-LR-v0", num_envs=3, task_family=family, horizon=4)
    sb3 = metaopt_envs.make_sb3_vec_env("MetaOpt-LR-v0", 3, seed=0, task_family=family, horizon=4)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 8) and sb3.reset().shape == (3, 8)
    for _ in range(5):  # across an autoreset
        obs, reward, _, _, _ = vec.step(np.zeros((3, 1), np.float32))
        sb3_obs, sb3_reward, _, _ = sb3.step(np.zeros((3, 1), np.float32))
        assert np.isfinite(reward).all() and vec.single_observation_space.contains(obs[0])
        np.testing.assert_allclose(sb3_obs, obs, **BATCH_TOLERANCE)
        np.testing.assert_allclose(sb3_reward, reward, **BATCH_TOLERANCE)
    clone = pickle.loads(pickle.dumps(env))  # the family pickles with its module
    np.testing.assert_array_equal(clone.reset(seed=3)[0], env.reset(seed=3)[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_rows_equal_single_envs(optimizer):
    """Row i of a 5-row core seeded 0 is a 1-row core seeded i, over 12 decisions (two episodes, dropout on)."""
    family, steps, rows = _family(module=TinyNet(0.1)), 12, 5
    kwargs = {"task_family": family, "horizon": 6, "inner_optimizer": optimizer, "lr_range": (1e-3, 1.0)}
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, rows, 1)).astype(np.float32)
    batch = LRCore(num_envs=rows, **kwargs)
    batch.reset_rows(torch.ones(rows, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(0, rows, "cpu"))
    singles = [LRCore(num_envs=1, **kwargs) for _ in range(rows)]
    for i, single in enumerate(singles):
        single.reset_rows(torch.ones(1, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(i, 1, "cpu"))
    deviation = 0.0
    for t in range(steps):
        out = batch.step(actions[t])
        ended = out.terminated | out.truncated
        batch.reset_rows(ended)
        for i, single in enumerate(singles):
            one = single.step(actions[t, i : i + 1])
            single.reset_rows(one.terminated | one.truncated)
            for a, b in ((out.observation[i], one.observation[0]), (out.reward[i], one.reward[0])):
                np.testing.assert_allclose(a.numpy(), b.numpy(), **BATCH_TOLERANCE)
                deviation = max(deviation, float((a - b).abs().max()))
            assert bool(ended[i]) == bool((one.terminated | one.truncated)[0])
    print(f"largest batched-vs-single deviation ({optimizer}): {deviation:.3g}")


def test_losses_fall_with_a_sane_learning_rate():
    core = LRCore(
        num_envs=8, task_family=_family(), horizon=60, lr_range=(0.1, 1.0), inner_optimizer="sgd"
    )  # action 0: lr 0.32
    core.reset_rows(torch.ones(8, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(0, 8, "cpu"))
    start = core.loss.clone()
    for _ in range(60):
        core.step(np.zeros((8, 1), np.float32))
    assert (core.loss < 0.7 * start).all(), (start, core.loss)


def test_dropout_masks_come_from_the_keys():
    family = _family(module=TinyNet(0.5))
    keys = rng.keys_from_seeds([0, 1, 2])
    tasks = family.sample(keys, "train")
    params = family.init_params(tasks, keys)
    a = family.minibatch_loss(params, tasks, keys)
    assert torch.equal(a, family.minibatch_loss(params, tasks, keys))
    family.dropouts[0].p = 0.0  # the same minibatch rows without dropout: another loss
    no_dropout = family.minibatch_loss(params, tasks, keys)
    family.dropouts[0].p = 0.5
    assert not torch.equal(a, no_dropout)
    twin = _family(module=TinyNet(0.5))  # a fresh family: the masks are a function of the keys alone
    assert torch.equal(twin.minibatch_loss(params, tasks, keys), a)
    assert torch.equal(family.loss(params, tasks), family.loss(params, tasks))  # the full loss runs in eval mode


def test_tensor_data_with_a_held_out_pool_and_a_keyed_sampler():
    x, y = _data()
    held_x, held_y = x[:100] + 100.0, y[:100]
    family = _family(data=(x, y), test_data=(held_x, held_y))
    keys = rng.keys_from_seeds([0, 1])
    assert (family.sample(keys, "test")["inputs"] > 50).all() and (family.sample(keys, "train")["inputs"] < 50).all()

    def sampler(keys, split, num_samples):
        inputs = rng.normal(rng.fold(keys, 1), (num_samples, 6))
        return inputs, (inputs[..., 0] > 0).long() + (inputs[..., 1] > 0).long()

    check_task_family(_family(data=sampler))


# ---------------------------------------------------------------------------------------------- bad input
class _PerSampleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)
        self.linear.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class _RandomNet(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.nn.functional.dropout(x, 0.5))


BAD_INPUT = [
    pytest.param(
        {"module": lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))},
        r"output of shape \(16, 2\) does not fit the loss with targets of shape \(16,\).*one logit per class",
        id="output-does-not-fit-the-loss",
    ),
    pytest.param(
        {"module": lambda: nn.Linear(5, 3)},
        r"module cannot run on inputs of shape \(16, 6\).*check input_shape",
        id="input-shape",
    ),
    pytest.param(
        {"data": (_data()[0][:50], _data()[1][:50])},
        r"data \(train split\) has 50 samples, but each task needs num_train \+ num_val = 96.*lower num_train",
        id="too-few-samples",
    ),
    pytest.param(
        {"batch_size": 128},
        r"batch_size \(128\) is larger than a task's training set \(num_train=64\).*lower batch_size",
        id="minibatch-larger-than-training-set",
    ),
    pytest.param(
        {"module": _PerSampleNet},
        r"parameters \['linear.bias'\] do not require grad.*requires_grad_\(True\).*register_buffer",
        id="frozen-parameter",
    ),
    pytest.param(
        {"loss": lambda outputs, targets: torch.nn.functional.cross_entropy(outputs, targets, reduction="none")},
        r"loss returned shape \(16,\), a value per sample.*reduction='mean'",
        id="per-sample-loss",
    ),
    pytest.param(
        {"module": lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))},
        r"updates its buffers \['1.running_mean', '1.running_var', '1.num_batches_tracked'\].*"
        r"track_running_stats=False, GroupNorm or LayerNorm",
        id="batch-norm-running-stats",
    ),
    pytest.param(
        {"module": _RandomNet},
        r"draws random numbers outside nn.Dropout.*use nn.Dropout modules",
        id="unkeyed-random-op",
    ),
    pytest.param({"module": 3}, r"module must be an nn.Module or a callable returning one, got 3", id="not-a-module"),
    pytest.param(
        {"data": [1, 2, 3]}, r"data must be an \(inputs, targets\) pair of tensors or a keyed sampler", id="bad-data"
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_INPUT)
def test_bad_input_is_refused_at_construction_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _family(**kwargs)


def test_batch_norm_without_running_stats_is_accepted():
    module = lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 3))  # noqa: E731
    check_task_family(_family(module=module), quick=True)


def test_regression_loss_and_a_float_target():
    x, _ = _data()
    family = _family(module=lambda: nn.Linear(6, 1), data=(x, x[:, :1] * 2.0), loss=mse)
    check_task_family(family, quick=True)


# ---------------------------------------------------------------------------------------------- realistic suite
def test_realistic_data_is_cached_deterministic_and_offline():
    numpy_state, python_state = np.random.get_state(), random.getstate()
    data = mnist1d()
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist() and random.getstate() == python_state
    assert data["x"].shape == (4000, 40) and data["x_test"].shape == (1000, 40)
    assert mnist1d() is data  # generated once per process
    assert int(data["y"][:10].sum()) == 2 + 6 + 4 + 5 + 6 + 6 + 6 + 0 + 3 + 1  # mnist1d's fixed seed 42
    images, labels = digits_images()
    assert images.shape == (1797, 1, 8, 8) and labels.max() == 9 and DIGITS_TEST_IMAGES < 1797
    text = pydoc_text()
    assert text["train"].numel() > 5 * text["test"].numel() > 0


@pytest.mark.parametrize("name", list(REALISTIC_FAMILIES))
def test_realistic_family_learns_and_holds_out_the_test_split(name):
    family = make_task_family(name)
    keys = rng.keys_from_seeds([0, 1])
    train, test = family.sample(keys, "train"), family.sample(keys, "test")
    assert not torch.equal(train["inputs"], test["inputs"])
    core = LRCore(num_envs=2, task_family=name, horizon=30, inner_optimizer="adam", lr_range=(1e-3, 1e-2))  # 3e-3
    start = core.loss.clone()
    for _ in range(30):
        core.step(np.zeros((2, 1), np.float32))
    assert (core.loss < 0.9 * start).all(), (name, start, core.loss)


def test_presets_and_size_arguments():
    small = make_task_family("mnist1d_mlp")
    wide = make_task_family("mnist1d_mlp", preset="gpu")
    narrow = make_task_family("mnist1d_mlp", hidden=8, num_train=32, num_val=16, batch_size=8)
    assert small.param_dim < wide.param_dim and narrow.param_dim == 40 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    with pytest.raises(ValueError, match=r"^preset must be one of 'cpu', 'gpu', got 'tpu'$"):
        make_task_family("char_lstm", preset="tpu")
    with pytest.raises(ValueError, match=r"^hidden must be an int >= 1, got 0$"):
        make_task_family("char_lstm", hidden=0)
    env = gym.make("MetaOpt-LR-v0", task_family="char_transformer", task_family_kwargs={"dim": 16}, horizon=2)
    env.reset(seed=0)
    spec = "metaopt_envs.lr.families.realistic:DigitsConvNetFamily?width=2"
    assert gym.make("MetaOpt-LR-v0", task_family=spec, horizon=2).unwrapped.core.family.param_dim < small.param_dim


def test_module_families_mix_for_a_held_out_architecture():
    """A mixture of module families with different input shapes and parameter counts (padded) learns too."""
    mixture = make_task_family("mixture", members=["mnist1d_mlp", "digits_convnet"])
    check_task_family(mixture, quick=True)
    core = LRCore(num_envs=6, task_family=mixture, horizon=10, inner_optimizer="adam", lr_range=(1e-3, 1e-2))
    assert set(core.tasks["family"].tolist()) == {0, 1}
    start = core.loss.clone()
    for _ in range(10):
        core.step(np.zeros((6, 1), np.float32))
    assert (core.loss < start).all()


def test_gradients_keep_their_graph_in_a_differentiable_unroll():
    """With params in a graph (a learned optimizer's unroll) the gradient is differentiable too, and equals the
    torch.func gradient of the environments' path."""
    family = _family()
    keys = rng.keys_from_seeds([0, 1])
    tasks = family.sample(keys, "train")
    params = family.init_params(tasks, keys)
    _, plain = family.minibatch_loss_and_grad(params, tasks, keys)
    leaf = params.clone().requires_grad_(True)
    _, grad = family.minibatch_loss_and_grad(leaf, tasks, keys)
    assert grad.grad_fn is not None
    torch.testing.assert_close(grad, plain, rtol=1e-5, atol=1e-6)
    (second,) = torch.autograd.grad(grad.square().sum(), leaf)
    assert torch.isfinite(second).all() and second.abs().sum() > 0
