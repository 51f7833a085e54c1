"""How far a trained ``CandidateScorePolicy`` with ``ei_prior`` moved from EI's argmax (``acq_ei``).

Rolls the policy (sampling, as in training) on the training mixture with the pool for one search of
``budget`` decisions and reports, over the decisions: how often its deterministic choice equals
``acq_ei``'s on the same candidates, its policy entropy, and the spread (max - min) of the MLP head's
logits over the candidates (0 for the untrained prior, whose choice is always ``acq_ei``'s).

    python benchmarks/acquisition_prior_agreement.py /tmp/acq_prior_run
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import metaopt_envs
from agents.controllers.acquisition import ExpectedImprovementScores
from agents.rl2 import runs


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory or model zip (a checkpoint with its run spec)")
    parser.add_argument("--num-envs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    policy = runs.load_model(args.model).policy
    n = policy.num_candidates
    core = metaopt_envs.make_core(
        "MetaOpt-Acquisition-v0",
        num_envs=args.num_envs,
        episodes_per_trial=2,
        task_family="mixture",
        task_family_kwargs={"members": ["branin", "hartmann3", "hartmann6"]},
        budget=32,
        max_dim=6,
        num_candidates=n,
        num_local=8,
        fit_steps=20,
        candidate_pool=1024,
        reward_mode="log_regret",
    )
    acq_ei = ExpectedImprovementScores(num_candidates=n)
    agree, entropy, spread = [], [], []
    for _ in range(32):
        obs = core.observe().float()
        with torch.no_grad():
            chosen, _, _ = policy(obs, deterministic=True)
            head = policy.scorer(policy.candidate_inputs(obs)).squeeze(-1)
            entropy.append(policy.get_distribution(obs).entropy().mean().item())
            sampled, _, _ = policy(obs, deterministic=False)
        expected, _ = acq_ei.predict(obs[:, : n * policy.num_features].numpy())
        agree.append(float((chosen.numpy().argmax(-1) == expected.argmax(-1)).mean()))
        spread.append((head.amax(-1) - head.amin(-1)).mean().item())
        core.step(sampled)
    result = {
        "agrees_with_acq_ei": float(np.mean(agree)),
        "entropy": float(np.mean(entropy)),
        "head_logit_spread": float(np.mean(spread)),
        "ei_prior": float(getattr(policy, "ei_prior", 0.0)),
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
