"""The LR mixture's ``loss_scale_range``: each task's objective times its own factor, drawn from its key.

The same problem with a step ``s`` times larger: losses and gradients scale by ``s``, the task data and
the minibatches stay; the option off is the mixture as before (bit for bit); rows of a batch equal single
envs; and an SGD run at rate ``lr`` on a scaled task is the unscaled run at ``s * lr``.
"""

from __future__ import annotations

import pytest
import torch

import metaopt_envs
from metaopt_envs.core import rng, seeds_to_keys
from metaopt_envs.lr.families import MixtureFamily
from metaopt_envs.lr.families.mixture import LOSS_SCALE_FIELD

MEMBERS = ["quadratic", "logistic", "sklearn"]


def test_losses_and_gradients_scale_by_each_task_factor():
    keys = rng.keys_from_seeds(list(range(12)))
    plain, scaled = MixtureFamily(MEMBERS), MixtureFamily(MEMBERS, loss_scale_range=(0.1, 10.0))
    tasks, scaled_tasks = plain.sample(keys, "train"), scaled.sample(keys, "train")
    factor = scaled_tasks.pop(LOSS_SCALE_FIELD)
    assert tasks.keys() == scaled_tasks.keys() and all(torch.equal(tasks[k], scaled_tasks[k]) for k in tasks)
    assert factor.dtype == torch.float32 and (factor >= 0.1).all() and (factor <= 10.0).all()
    assert factor.max() / factor.min() > 5  # spread over the range, one factor per task
    scaled_tasks[LOSS_SCALE_FIELD] = factor
    params = plain.init_params(tasks, rng.fold(keys, 1))
    a, b = rng.fold(keys, 2), rng.fold(keys, 3)
    loss, grads = plain.loss_and_paired_grads(params, tasks, a, b)
    scaled_loss, scaled_grads = scaled.loss_and_paired_grads(params, scaled_tasks, a, b)
    torch.testing.assert_close(scaled_loss, loss * factor)
    torch.testing.assert_close(scaled_grads, grads * factor.view(-1, 1, 1))
    torch.testing.assert_close(scaled.loss(params, scaled_tasks), plain.loss(params, tasks) * factor)
    torch.testing.assert_close(
        scaled.minibatch_loss(params, scaled_tasks, a), plain.minibatch_loss(params, tasks, a) * factor
    )


def test_a_scaled_task_at_rate_lr_runs_as_the_plain_task_at_scale_times_lr():
    kwargs = {"task_family": "mixture", "horizon": 6, "action_mode": "absolute", "lr_range": (1e-4, 10.0)}
    scaled = metaopt_envs.make_core(
        "MetaOpt-LR-v0", num_envs=4, task_family_kwargs={"members": MEMBERS, "loss_scale_range": [0.3, 3.0]}, **kwargs
    )
    plain = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=4, task_family_kwargs={"members": MEMBERS}, **kwargs)
    factor = scaled.tasks[LOSS_SCALE_FIELD]
    lr = torch.full((4,), 0.01)
    for _ in range(5):
        # absolute actions: the log rate's position in lr_range
        to_action = lambda rate: 2 * (rate.log() - torch.log(torch.tensor(1e-4))) / (torch.log(torch.tensor(1e5))) - 1  # noqa: E731
        scaled.step(to_action(lr).unsqueeze(-1))
        plain.step(to_action(lr * factor).unsqueeze(-1))
        torch.testing.assert_close(scaled.params, plain.params, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(scaled.loss, plain.loss * factor, rtol=1e-4, atol=1e-6)


def test_scaled_rows_equal_single_envs():
    family_kwargs = {"members": MEMBERS, "loss_scale_range": [0.1, 10.0]}
    kwargs = {"task_family": "mixture", "task_family_kwargs": family_kwargs, "horizon": 5, "action_mode": "relative"}
    batched = metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=3, **kwargs)
    singles = [metaopt_envs.make_core("MetaOpt-LR-v0", num_envs=1, **kwargs) for _ in range(3)]
    keys = seeds_to_keys(7, 3, batched.device)
    batched.reset_rows(torch.ones(3, dtype=torch.bool), keys=keys)
    for i, single in enumerate(singles):
        single.reset_rows(torch.ones(1, dtype=torch.bool), keys=keys[i : i + 1])
    actions = torch.rand(4, 3, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for action in actions:
        out = batched.step(action)
        outs = [single.step(action[i : i + 1]) for i, single in enumerate(singles)]
        assert torch.equal(out.observation, torch.cat([o.observation for o in outs]))
        assert torch.equal(out.reward, torch.cat([o.reward for o in outs]))


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ((0.0, 1.0), r"loss_scale_range"),
        ((2.0, 1.0), r"loss_scale_range"),
        ("big", r"loss_scale_range"),
    ],
)
def test_a_bad_loss_scale_range_is_refused_by_name(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        MixtureFamily(MEMBERS, loss_scale_range=value)
