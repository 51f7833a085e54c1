"""A permutation-equivariant actor-critic for MetaOpt-Acquisition-v0 (MetaBO's neural acquisition function).

As in MetaBO (Volpp et al., 2020), one small MLP with shared weights reads each candidate's features
and gives that candidate's logit; the policy is the softmax over the candidates (a categorical
distribution), so permuting the candidates permutes the probabilities and nothing else. The value
function reads a second per-candidate encoder pooled over the candidates (mean and max) beside the
budget used.

The env's action space is a score per candidate (``Box(-1, 1, (N,))``, argmax evaluated); the
policy's action is the chosen candidate as a one-hot score (1 on it, -1 elsewhere), and PPO's stored
actions map back to the index by their argmax, so the env stays as it is and PPO (SB3's, with
:class:`AcquisitionPPO`'s policy alias) trains the categorical policy exactly.

Per candidate the scorer reads the env's features (posterior mean, std, incumbent, budget used,
coordinates; :data:`metaopt_envs.hpo.acquisition.CANDIDATE_FEATURES`) and, by default, three derived
ones that a small MLP finds hard to compute: ``z = (incumbent - mean) / std``, ``log std`` and
``log EI`` (Expected Improvement, :func:`metaopt_envs.hpo.gp.log_expected_improvement`), each clipped.
``derived_features=[]`` is MetaBO's input set.

``ei_prior=s > 0`` makes the scorer a residual acquisition function: ``logit_i = s log EI_i + MLP(x_i)``
with the unclipped log EI of :func:`~metaopt_envs.hpo.gp.log_expected_improvement` (as the ``acq_ei``
baseline computes it), and the MLP's last layer starts at zero, so the untrained policy is the softmax
of EI raised to the power ``s`` (``s -> inf``: EI's argmax, the ``acq_ei`` baseline) and training learns
what to add to EI. ``ei_prior=0`` (the default) is the plain scorer. With ``prior_kl=True`` (needs ``ei_prior > 0``)
the "entropy" :meth:`CandidateScorePolicy.evaluate_actions` gives PPO is minus the KL divergence from the
policy to that prior, ``-KL(pi || softmax(s log EI))``, so PPO's ``ent_coef * entropy_loss`` term becomes a
penalty ``ent_coef * KL`` that keeps the trained policy near EI unless its advantages pay for leaving it
(SB3 logs it as ``entropy_loss``). RL² trial observations (previous action, reward and
first-step flag after the candidates) are accepted; those trailing entries are not read (the previous
step's candidates are not this step's).

    metaopt-train env=acquisition agent=acquisition_ppo

Every constructor argument is JSON (``policy_kwargs`` in a run's spec), so a saved model is rebuilt by
:func:`agents.rl2.runs.load_model` without unpickling anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from metaopt_envs.hpo.acquisition import CANDIDATE_FEATURES
from metaopt_envs.hpo.gp import log_expected_improvement

POLICY_NAME = "CandidateScorePolicy"
"""The policy's name in ``agent.policy`` (an alias of :class:`AcquisitionPPO`)."""
DERIVED_FEATURES = ("z", "log_std", "log_ei")
"""Per-candidate features the scorer may compute from the posterior (``derived_features``)."""
_MEAN, _STD, _INCUMBENT, _BUDGET = (CANDIDATE_FEATURES.index(n) for n in ("mean", "std", "incumbent", "budget_used"))
_TRIAL_EXTRAS = 2  # an RL² trial's observation: + previous action (N), previous reward, first-step flag
_CLIP = 10.0
_PRIOR_FLOOR = -1e4  # log EI's floor in the prior: float32 log EI can reach -inf far below the incumbent


def _mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def candidate_layout(observation_dim: int, num_candidates: int) -> int:
    """Features per candidate of an observation of ``observation_dim`` entries (plain or an RL² trial's).

    ValueError if the observation is neither ``N * F`` nor ``N * F + N + 2`` entries with ``F > 4``.
    """
    n = num_candidates
    if observation_dim % n == 0 and observation_dim // n > len(CANDIDATE_FEATURES):
        return observation_dim // n
    extra = observation_dim - _TRIAL_EXTRAS
    if extra > 0 and extra % n == 0 and extra // n - 1 > len(CANDIDATE_FEATURES):
        return extra // n - 1
    raise ValueError(
        f"{POLICY_NAME} needs MetaOpt-Acquisition-v0 observations: num_candidates x (4 + D) entries (plus "
        f"num_candidates + 2 in an RL² trial) with num_candidates={n} from the action space, got {observation_dim}"
    )


class CandidateScorePolicy(ActorCriticPolicy):
    """Shared per-candidate MLP logits (a softmax over candidates) and a pooled value; see the module docstring.

    :param scorer_arch: hidden sizes of the per-candidate scorer (its output is one logit).
    :param value_arch: hidden sizes of the value's per-candidate encoder; its last size is the pooled
        embedding, followed by a ``[*, 1]`` head over ``[mean pool, max pool, budget_used]``.
    :param derived_features: which of :data:`DERIVED_FEATURES` the scorer and the value read besides the env's.
    :param activation: ``"tanh"`` or ``"relu"``.
    :param ei_prior: ``s >= 0``; ``s > 0`` adds ``s * log EI`` to each candidate's logit and zeroes the
        scorer's last layer at the start (the untrained policy is ``softmax(s log EI)``); 0 is the plain scorer.
    :param prior_kl: with ``ei_prior > 0``, PPO's entropy bonus becomes a KL penalty to the prior (module docstring).
    The remaining arguments are :class:`ActorCriticPolicy`'s (``ortho_init``, ``optimizer_kwargs``, ...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        scorer_arch: Sequence[int] = (64, 64),
        value_arch: Sequence[int] = (64, 64),
        derived_features: Sequence[str] = DERIVED_FEATURES,
        activation: str = "tanh",
        ei_prior: float = 0.0,
        prior_kl: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(ei_prior, bool) or not isinstance(ei_prior, int | float) or not 0.0 <= ei_prior < float("inf"):
            raise ValueError(f"ei_prior must be a finite number >= 0 (0: no EI prior), got {ei_prior!r}")
        self.ei_prior = float(ei_prior)
        if not isinstance(prior_kl, bool) or (prior_kl and self.ei_prior == 0):
            raise ValueError(
                f"prior_kl must be a bool, True only with ei_prior > 0 (got ei_prior={ei_prior!r}), got {prior_kl!r}"
            )
        self.prior_kl = prior_kl
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"{POLICY_NAME} needs a Box(-1, 1, (num_candidates,)) action space, got {action_space}")
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"{POLICY_NAME} needs a flat Box observation space, got {observation_space}")
        unknown = [name for name in derived_features if name not in DERIVED_FEATURES]
        if unknown:
            raise ValueError(f"derived_features must be among {DERIVED_FEATURES}, got {list(derived_features)}")
        activations = {"tanh": nn.Tanh, "relu": nn.ReLU}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        self.num_candidates = int(action_space.shape[0])
        self.num_features = candidate_layout(int(observation_space.shape[0]), self.num_candidates)
        self.scorer_arch = [int(size) for size in scorer_arch]
        self.value_arch = [int(size) for size in value_arch]
        if not self.value_arch:
            raise ValueError("value_arch needs at least one size (the pooled embedding)")
        self.derived_features = [str(name) for name in derived_features]
        self.activation = activation
        self._activation_class = activations[activation]
        kwargs.pop("net_arch", None)  # the networks are the scorer and the value encoder
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        width = self.num_features + len(self.derived_features)
        self.scorer = _mlp([width, *self.scorer_arch, 1], self._activation_class)
        self.value_encoder = nn.Sequential(_mlp([width, *self.value_arch], self._activation_class), nn.Tanh())
        embedding = self.value_arch[-1]
        self.value_head = _mlp([2 * embedding + 1, embedding, 1], self._activation_class)
        self.action_dist = CategoricalDistribution(self.num_candidates)
        if self.ortho_init:
            for module in (self.scorer, self.value_encoder, self.value_head):
                module.apply(lambda m: self.init_weights(m, gain=float(np.sqrt(2))))
            # Near-uniform choice at the start (as SB3's 0.01 action head), a unit-scale value head.
            self.init_weights(self.scorer[-1], gain=0.01)
            self.init_weights(self.value_head[-1], gain=1.0)
        if self.ei_prior > 0:
            # The untrained policy is the prior alone: softmax(ei_prior * log EI).
            head = self.scorer[-1]
            assert isinstance(head, nn.Linear)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("net_arch", None)
        return {
            **data,
            "scorer_arch": self.scorer_arch,
            "value_arch": self.value_arch,
            "derived_features": self.derived_features,
            "activation": self.activation,
            **({"ei_prior": self.ei_prior} if self.ei_prior > 0 else {}),
            **({"prior_kl": True} if self.prior_kl else {}),
        }

    # ------------------------------------------------------------------ features
    def candidate_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (B, obs_dim)`` -> per-candidate inputs ``(B, N, F + len(derived_features))``."""
        n, f = self.num_candidates, self.num_features
        candidates = obs.float().reshape(obs.shape[0], -1)[:, : n * f].reshape(-1, n, f)
        if not self.derived_features:
            return candidates
        mean, incumbent = candidates[..., _MEAN], candidates[..., _INCUMBENT]
        std = candidates[..., _STD].clamp_min(1e-6)
        derived = {
            "z": lambda: ((incumbent - mean) / std).clamp(-_CLIP, _CLIP),
            "log_std": lambda: std.log().clamp(-_CLIP, _CLIP) / 5.0,
            "log_ei": lambda: log_expected_improvement(mean, std, incumbent).clamp(-3 * _CLIP, _CLIP) / 5.0,
        }
        extra = [derived[name]() for name in self.derived_features]
        return torch.cat([candidates, torch.stack(extra, dim=-1)], dim=-1)

    def prior_log_ei(self, inputs: torch.Tensor) -> torch.Tensor:
        """Unclipped ``log EI (B, N)`` of :meth:`candidate_inputs` (as ``acq_ei`` computes it), floored at -1e4."""
        mean, std, incumbent = inputs[..., _MEAN], inputs[..., _STD].clamp_min(1e-12), inputs[..., _INCUMBENT]
        log_ei = log_expected_improvement(mean, std, incumbent)
        return torch.nan_to_num(log_ei, nan=_PRIOR_FLOOR, neginf=_PRIOR_FLOOR).clamp_min(_PRIOR_FLOOR)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per-candidate logits ``(B, N)`` from :meth:`candidate_inputs` (plus ``ei_prior * log EI`` when set)."""
        logits = self.scorer(inputs).squeeze(-1)
        if self.ei_prior > 0:
            logits = logits + self.ei_prior * self.prior_log_ei(inputs)
        return logits

    def values(self, inputs: torch.Tensor) -> torch.Tensor:
        """State values ``(B, 1)`` from :meth:`candidate_inputs` (pooled, so invariant to the candidates' order)."""
        embedded = self.value_encoder(inputs)
        budget = inputs[:, :1, _BUDGET]
        return self.value_head(torch.cat([embedded.mean(1), embedded.amax(1), budget], dim=-1))

    # ------------------------------------------------------------------ actions
    def one_hot(self, index: torch.Tensor) -> torch.Tensor:
        """The env action choosing candidate ``index (B,)``: 1 on it, -1 elsewhere, ``(B, N)``."""
        return nn.functional.one_hot(index.long(), self.num_candidates).float() * 2.0 - 1.0

    def _distribution(self, inputs: torch.Tensor) -> CategoricalDistribution:
        distribution = CategoricalDistribution(self.num_candidates)
        return distribution.proba_distribution(action_logits=self.logits(inputs))

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = self.candidate_inputs(self.extract_features(obs, self.features_extractor))  # type: ignore[arg-type]
        distribution = self._distribution(inputs)
        index = distribution.get_actions(deterministic=deterministic)
        return self.one_hot(index), self.values(inputs), distribution.log_prob(index)

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        inputs = self.candidate_inputs(self.extract_features(obs, self.features_extractor))  # type: ignore[arg-type]
        distribution = self._distribution(inputs)
        index = actions.reshape(actions.shape[0], -1).argmax(-1)
        if self.prior_kl:  # minus KL(pi || prior) in the entropy's place: ent_coef * KL joins PPO's loss
            log_pi = torch.log_softmax(distribution.distribution.logits, dim=-1)
            log_prior = torch.log_softmax(self.ei_prior * self.prior_log_ei(inputs), dim=-1)
            return self.values(inputs), distribution.log_prob(index), -(log_pi.exp() * (log_pi - log_prior)).sum(-1)
        return self.values(inputs), distribution.log_prob(index), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        """The categorical distribution over candidate *indices* (the env action is :meth:`one_hot` of a sample)."""
        inputs = self.candidate_inputs(self.extract_features(obs, self.features_extractor))  # type: ignore[arg-type]
        return self._distribution(inputs)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        inputs = self.candidate_inputs(self.extract_features(obs, self.features_extractor))  # type: ignore[arg-type]
        return self.values(inputs)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        return self.one_hot(self.get_distribution(observation).get_actions(deterministic=deterministic))


class AcquisitionPPO(PPO):
    """SB3's PPO that also knows :data:`POLICY_NAME` (``agent.policy: CandidateScorePolicy``); otherwise PPO."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        **PPO.policy_aliases,
        POLICY_NAME: CandidateScorePolicy,
    }


__all__ = ["DERIVED_FEATURES", "POLICY_NAME", "AcquisitionPPO", "CandidateScorePolicy", "candidate_layout"]
