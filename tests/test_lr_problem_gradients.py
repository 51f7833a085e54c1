"""Reference parity of the hand-written MLP passes: losses and gradients equal plain autograd.

The MLP families compute the full loss and both minibatch gradients in one
hand-written pass with layout tricks (transposed narrow layers, outer products
for width-one inputs, fused ReLU backward). Here an independent reference
builds each problem's network with ``h @ W + b`` and differentiates it with
autograd, in float64, on the same minibatch rows.
"""

import pytest
import torch

from metaopt_envs.core import rng
from metaopt_envs.lr.families import make_task_family


def _reference_loss(family, params, inputs, targets, tasks):
    n, offset, h = params.shape[0], 0, inputs
    for depth, (fan_in, fan_out) in enumerate(family.shapes):
        weight = params[:, offset : offset + fan_in * fan_out].reshape(n, fan_in, fan_out)
        offset += fan_in * fan_out
        bias = params[:, offset : offset + fan_out]
        offset += fan_out
        h = h @ weight + bias[:, None, :]
        if depth < len(family.shapes) - 1:
            h = torch.relu(h)
    if family.name == "sinusoid":
        return ((h - targets) ** 2).mean(dim=(1, 2))
    present = torch.arange(family.max_classes) < family.num_classes[tasks["dataset"]].unsqueeze(-1)
    logits = h.masked_fill(~present.unsqueeze(1), -1e9)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(-1)


@pytest.mark.parametrize("name", ["sinusoid", "sklearn"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_loss_and_paired_grads_match_autograd_reference(name, split):
    family = make_task_family(name)
    keys = rng.keys_from_seeds(list(range(6)))
    tasks = family.sample(keys, split)
    params = family.init_params(tasks, keys) + 0.05 * rng.normal(rng.fold(keys, 7), (family.param_dim,))
    keys_a, keys_b = rng.fold(keys, 1), rng.fold(keys, 2)
    loss, grads = family.loss_and_paired_grads(params, tasks, keys_a, keys_b)
    assert grads.shape == (6, 2, family.param_dim)
    grad_a, grad_b = grads[:, 0], grads[:, 1]

    double = {k: (v.double() if v.is_floating_point() else v) for k, v in tasks.items()}
    full = _reference_loss(family, params.double(), double["inputs"], double["targets"], tasks)
    torch.testing.assert_close(loss.double(), full, rtol=1e-5, atol=1e-6)
    for keys_m, grad in ((keys_a, grad_a), (keys_b, grad_b)):
        index = rng.randint(keys_m, family.num_train, (family.batch_size,))
        rows = torch.arange(index.shape[0]).unsqueeze(-1)
        leaf = params.double().requires_grad_(True)
        reference = _reference_loss(family, leaf, double["inputs"][rows, index], double["targets"][rows, index], tasks)
        (expected,) = torch.autograd.grad(reference.sum(), leaf)
        torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-6)
    # The two minibatches are different draws, so their gradients differ.
    assert not torch.allclose(grad_a, grad_b)
    # And the separate-call path (loss + paired gradients) agrees with the shared pass.
    separate = family.paired_minibatch_grads(params, tasks, keys_a, keys_b)
    torch.testing.assert_close(separate[0], grad_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(family.loss(params, tasks), loss, rtol=1e-5, atol=1e-6)
