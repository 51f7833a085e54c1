"""MetaOpt-Ensemble-v0: ensemble weighting on a changing stream. Thin adapters over :class:`EnsembleCore`."""

from __future__ import annotations

from metaopt_envs.core import CoreEnv, CoreVectorEnv
from metaopt_envs.ensemble.core import EnsembleCore


class MetaOptEnsembleEnv(CoreEnv):
    """Set the weights of a pool of base forecasters on a data stream whose regime changes.

    ## Description
    Each episode is one data stream of ``warmup + horizon`` steps drawn from a stream family:
    synthetic regime-switching processes (switching AR coefficients, level and trend shifts,
    noise-scale shifts, seasonality) or real series bundled with statsmodels, cropped, rescaled
    and spliced into regimes. A fixed pool of K base forecasters (by default last value, moving
    averages, exponential smoothing at two rates, rolling least-squares AR(1), AR(2), AR(4))
    predicts every next value from the past only. At each of the ``horizon`` decisions the agent
    weights the pool; the weighted forecast is scored against the value, which is then revealed.
    The forecasters do not depend on the agent, so the core computes them once per reset.

    ## Action Space
    ``Box(-1, 1, (K,), float32)`` in ``action_mode="logits"`` (default): weights
    ``w = softmax(logit_scale * a)`` (``logit_scale`` 4 spans weight ratios up to e^8).
    ``Box(0, 1, (K,), float32)`` in ``action_mode="simplex"``: ``w = a / sum(a)``, uniform when
    ``sum(a) = 0`` (the hand-designed baselines use this mode: their action is the weight vector).
    ``Box(-1, 1, (K,), float32)`` in ``action_mode="residual"``: a correction of the first share
    filter's weights (see Observation Space), ``w = softmax(log w_filter + logit_scale * a)``, so
    ``a = 0`` plays Fixed-Share (started on the warm-up); without ``share_filters`` this mode adds
    the filter ``[1.0, 0.01]`` (eta, alpha: Fixed-Share as tuned on switching AR).
    Out-of-range actions are clipped; NaN or inf actions and wrong shapes raise ``ValueError``.

    ## Observation Space
    ``Box(-100, 100, (5K + 4,), float32)``; ``5K + 4 + K * len(share_filters)`` with ``share_filters``.
    Errors are normalized by ``sigma``, the RMS one-step
    change of the stream over the warm-up (warm-up statistics only: nothing from the future):
    ``e_k = (p_k - y) / sigma``.

    | # | name | meaning |
    |---|------|---------|
    | 0..K-1 | error[k] | last signed normalized error of each forecaster |
    | K..2K-1 | log_sq_error_fast[k] | log(EMA of e_k^2 + 1e-6), rate 0.3 (half-life ~2 steps) |
    | 2K..3K-1 | log_sq_error_slow[k] | the same with rate 0.03 (half-life ~23 steps) |
    | 3K..4K-1 | weight[k] | the weights used for the last forecast |
    | 4K..5K-1 | forecast_spread[k] | (p_k - mean_j p_j) / sigma for the value about to be forecast |
    | 5K | ensemble_error | last signed normalized error of the weighted forecast |
    | 5K+1, 5K+2 | ensemble_log_sq_error_fast/slow | the ensemble's error EMAs, as above |
    | 5K+3 | progress | decisions taken / horizon |
    | 5K+4+jK.. | share_log_weight[j][k] | only with ``share_filters``: log-weights of Fixed-Share filter j |

    ``share_filters=[[eta, alpha], ...]`` appends, per pair, the K log-weights of a Fixed-Share filter
    (``v = w exp(-eta e_k^2)`` normalized, then ``(1 - alpha) v + alpha / K``) run on the observed
    errors: the warm-up's second half from uniform weights, then every decision. They are functions of
    the past errors only (bounded below by ``log(alpha / K)``), a summary an agent could compute itself.

    The first observation of an episode carries statistics of the warm-up's second half under
    uniform weights. ``env.unwrapped.core.observation_names`` lists the names.

    ## Rewards
    ``r_t = -min(e_ens^2, loss_clip)``: the negative normalized squared error of the weighted
    forecast, clipped at ``loss_clip`` (default 25, an error of 5 sigma) so that one outlier does
    not dominate a PPO update. ``info["loss"]`` carries the unclipped value; the benchmark reports
    its mean over the episode (the normalized MSE). Streams are finite and bounded, so no episode
    diverges; no NaN or inf reaches an observation or a reward.

    ## Starting State
    A new stream is drawn at every reset; the agent's first decision is at step ``warmup``
    with uniform weights in force.

    ## Episode End
    - Termination: never.
    - Truncation: after ``horizon`` decisions (default 300).
    - RL² trials (``episodes_per_trial=K``, any adapter): inner episode ends are hidden; the trial ends as a
      termination after K inner episodes.
    - Time limit: none is registered. The core is the one owner of the episode length, so
      ``gym.make("MetaOpt-Ensemble-v0", horizon=n)`` runs exactly n decisions
      and ``env.spec.max_episode_steps`` is None.
      A ``max_episode_steps`` you pass yourself adds Gymnasium's ``TimeLimit`` on top (it can only cut
      episodes short, and sets ``truncated`` at its limit even on a terminating step); ``gym.make_vec``
      applies it the same way; ``metaopt_envs.make_sb3_vec_env`` takes none.

    ## Arguments
    ```python
    import gymnasium as gym
    import metaopt_envs

    env = gym.make("MetaOpt-Ensemble-v0", task_family="switching_ar", horizon=300)
    ```

    | argument | default | meaning |
    |---|---|---|
    | task_family | "mixture" | "switching_ar", "regimes", "real", "mixture" (the synthetic ones) or a ``StreamFamily`` |
    | task_family_kwargs | None | keyword arguments of the family's constructor |
    | split | "train" | "train" or "test"; "real" uses disjoint series for the two |
    | forecasters | 8 defaults | names of the pool (see ``metaopt_envs.ensemble.forecasters``) |
    | forecaster_window | 40 | window of the rolling forecasters (drift, AR fits) |
    | horizon | 300 | decisions per episode |
    | warmup | 50 | steps before the first decision; they set ``sigma`` and the first statistics |
    | action_mode | "logits" | "logits", "simplex" or "residual" (see Action Space) |
    | logit_scale | 4.0 | softmax temperature of the logits mode |
    | loss_clip | 25.0 | the reward's clip of the normalized squared error |
    | share_filters | None | ``[[eta, alpha], ...]``: observe these Fixed-Share filters' log-weights |
    | device | "cpu" | "cpu", "cuda" or "auto" |

    ## Vectorized environment
    ``gym.make_vec("MetaOpt-Ensemble-v0", num_envs=1024)`` is one batched tensor program
    (:class:`MetaOptEnsembleVectorEnv`, same-step autoreset);
    ``metaopt_envs.make_sb3_vec_env("MetaOpt-Ensemble-v0", num_envs=64)`` is an SB3 VecEnv.
    Both take ``episodes_per_trial=K`` for RL² trials: the inner episodes of a trial are new
    realizations (noise, switch times, crops) of the same process (regimes, series pool).

    ## Version History
    - v0: initial release.
    """

    core_class = EnsembleCore


class MetaOptEnsembleVectorEnv(CoreVectorEnv):
    """Batched MetaOpt-Ensemble-v0 (see :class:`MetaOptEnsembleEnv` for the documentation)."""

    core_class = EnsembleCore
