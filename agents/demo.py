"""The main job until the RL² agent lands: constant learning rates against the analytic optimum.

On held-out noisy quadratics (the test split) with SGD, compare
- the analytic optimal constant step of each task (the oracle, closed form),
- the best single constant rate, tuned by grid search on the training split,
- a few fixed constant rates and a random policy,
and print a table of the return (log L0/LT), the final loss as a fraction of
the initial one, and how often the inner run diverged.

    python -m agents.demo --num-tasks 256 --horizon 100
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

import metaopt_envs
from metaopt_envs.envs.lr_core import LRCore

Policy = Callable[[LRCore], torch.Tensor]


def lr_to_action(core: LRCore, lr: torch.Tensor | float) -> torch.Tensor:
    """The absolute-mode action that sets learning rate ``lr`` (clipped to the range)."""
    log_lr = torch.log(torch.as_tensor(lr, dtype=torch.float32, device=core.device))
    action = 2.0 * (log_lr - core.log_lr_low) / (core.log_lr_high - core.log_lr_low) - 1.0
    return action.clamp(-1.0, 1.0).expand(core.num_envs).unsqueeze(-1)


def evaluate(core: LRCore, policy: Policy, seed: int) -> dict[str, float]:
    """Run one episode on each of the core's B tasks; summary statistics over tasks."""
    core.reset_rows(torch.ones(core.num_envs, dtype=torch.bool), keys=metaopt_envs.core.seeds_to_keys(seed, core.num_envs, core.device))
    returns = torch.zeros(core.num_envs)
    done = torch.zeros(core.num_envs, dtype=torch.bool)
    diverged = torch.zeros(core.num_envs, dtype=torch.bool)
    final_fraction = torch.ones(core.num_envs)
    while not done.all():
        result = core.step(policy(core))
        live = ~done
        returns += torch.where(live, result.reward, 0.0)
        ended = live & (result.terminated | result.truncated)
        diverged |= ended & result.terminated
        final_fraction = torch.where(ended, result.info["loss"] / result.info["initial_loss"], final_fraction)
        done |= ended
    final_fraction = torch.where(diverged, torch.inf, final_fraction)
    return {
        "mean_return": returns.mean().item(),
        "median_final_loss_fraction": final_fraction.median().item(),
        "diverged_percent": 100.0 * diverged.float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-tasks", type=int, default=256, help="held-out tasks (and training tasks for tuning)")
    parser.add_argument("--horizon", type=int, default=100, help="inner SGD steps per episode")
    parser.add_argument("--grid-size", type=int, default=21, help="constant rates tried when tuning on train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    common = dict(num_envs=args.num_tasks, task_family="quadratic", inner_optimizer="sgd", horizon=args.horizon)
    train = LRCore(split="train", **common)
    test = LRCore(split="test", **common)

    grid = np.exp(np.linspace(math.log(1e-3), math.log(3.0), args.grid_size))
    tuned = {lr: evaluate(train, lambda c, lr=lr: lr_to_action(c, lr), args.seed)["mean_return"] for lr in grid}
    best_lr = max(tuned, key=tuned.get)

    generator = torch.Generator().manual_seed(args.seed)
    policies: dict[str, Policy] = {
        "oracle: analytic optimal constant (per task)": lambda c: lr_to_action(c, c.optimal_constant_lr()),
        f"best constant tuned on train (lr={best_lr:.3g}, {args.grid_size}-point grid)": lambda c: lr_to_action(c, best_lr),
        "constant lr=0.01": lambda c: lr_to_action(c, 0.01),
        "constant lr=0.1": lambda c: lr_to_action(c, 0.1),
        "random action": lambda c: torch.rand(c.num_envs, 1, generator=generator) * 2 - 1,
    }
    results = {name: evaluate(test, policy, args.seed + 10_000) for name, policy in policies.items()}

    print(f"\nMetaOpt-LR-v0, quadratic family, SGD, {args.num_tasks} held-out test tasks, horizon {args.horizon}\n")
    print("| policy | mean return log(L0/LT) | median LT/L0 | diverged % |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['mean_return']:.3f} | {r['median_final_loss_fraction']:.3g} | {r['diverged_percent']:.1f} |")
    print(f"\n(took {time.perf_counter() - start:.1f} s; next: `pytest`, then see the README)")
    return results


if __name__ == "__main__":
    main()
