"""MetaOpt-HPO-v0: sequential hyperparameter search. Thin adapters over :class:`HPOCore`."""

from __future__ import annotations

from metaopt_envs.core import CoreEnv, CoreVectorEnv
from metaopt_envs.hpo.core import HPOCore


class MetaOptHPOEnv(CoreEnv):
    """Propose the next configuration of a black-box search, one evaluation per step.

    ## Description
    Each episode is one black-box objective ``f`` on ``[-1, 1]^d`` (minimization) drawn from a task
    family: randomly translated and scaled Branin, Hartmann-3 and Hartmann-6; functions sampled from
    a Gaussian process (Matérn-5/2, random Fourier features, random length scales); and real tuning
    problems of small scikit-learn models on its bundled datasets, read from a precomputed table
    (nothing is trained or downloaded at run time). At each of ``budget`` steps the agent proposes a
    configuration and observes its value. Values are normalized per task as the regret
    ``y = (f - f_opt) / (f_ref - f_opt)``: 0 at the optimum, 1 at a typical random point (``f_ref`` is
    the median of 256 random points).

    ## Action Space
    ``Box(-1, 1, (D,), float32)`` with ``D`` the family's largest dimension (or ``max_dim``); coordinates beyond the
    task's ``d`` are ignored (see the mask). Out-of-range actions are clipped; NaN or inf actions and
    wrong shapes raise ``ValueError``.

    ## Observation Space
    ``Box(float32)`` of ``2D + 5`` features:

    | # | name | meaning |
    |---|------|---------|
    | 0..D-1 | x[i] | the last evaluated configuration (0 before the first evaluation; 0 on padded dims) |
    | D..2D-1 | mask[i] | 1 on the task's active dimensions, 0 on padding |
    | 2D | value | the last normalized regret ``y``, clipped to [-1, 10] (1 before the first evaluation) |
    | 2D+1 | log10_value | log10 of it, floored at ``regret_floor`` |
    | 2D+2 | best | the best normalized regret so far (1 before any evaluation) |
    | 2D+3 | log10_best | log10 of it, floored at ``regret_floor`` |
    | 2D+4 | budget_used | evaluations / budget |

    ## Rewards
    The improvement of the best value so far. ``reward_mode="log_regret"`` (default):
    ``log10(best_{t-1}) - log10(best_t)`` with regrets floored at ``regret_floor`` (1e-6), so the return
    is ``-log10`` of the final normalized simple regret (each episode starts at ``best = 1``).
    ``reward_mode="regret"``: ``best_{t-1} - best_t``, a return of ``1 -`` the simple regret. For
    families whose optimum is estimated (``gp``; ``info["exact_optimum"]`` is False) the regret is
    measured against the estimate and may dip below 0; the floor then caps the log.

    ## Starting State
    A new objective is drawn at every reset; no evaluation has been made.

    ## Episode End
    - Termination: never.
    - Truncation: after ``budget`` evaluations (default 32).
    - RL² trials (``episodes_per_trial=K``, any adapter): inner episode ends are hidden; the trial ends as a
      termination after K inner episodes.
    - Time limit: none is registered. The core is the one owner of the episode length, so
      ``gym.make("MetaOpt-HPO-v0", budget=n)`` runs exactly n evaluations
      and ``env.spec.max_episode_steps`` is None.
      A ``max_episode_steps`` you pass yourself adds Gymnasium's ``TimeLimit`` on top (it can only cut
      episodes short, and sets ``truncated`` at its limit even on a terminating step); ``gym.make_vec``
      applies it the same way; ``metaopt_envs.make_sb3_vec_env`` takes none.

    ## Arguments
    ```python
    import gymnasium as gym
    import metaopt_envs

    env = gym.make("MetaOpt-HPO-v0", task_family="branin", budget=32)
    ```

    | argument | default | meaning |
    |---|---|---|
    | task_family | "mixture" | "branin", "hartmann3", "hartmann6", "gp", "sklearn", "mixture" or an ``ObjectiveFamily`` |
    | task_family_kwargs | None | keyword arguments of the family's constructor |
    | split | "train" | "train" or "test" ("sklearn" holds out whole datasets for test) |
    | budget | 32 | evaluations per episode |
    | reward_mode | "log_regret" | "log_regret" or "regret" (see Rewards) |
    | regret_floor | 1e-6 | floor of the regret in the log features and reward |
    | max_dim | None | pad the spaces to this many dimensions (>= the family's largest ``d``), so that an agent
    trained on one family (the mixture: 6) runs on another (Branin: 2) |
    | device | "cpu" | "cpu", "cuda" or "auto" |

    ## Vectorized environment
    ``gym.make_vec("MetaOpt-HPO-v0", num_envs=1024)`` is one batched tensor program
    (:class:`MetaOptHPOVectorEnv`, same-step autoreset);
    ``metaopt_envs.make_sb3_vec_env("MetaOpt-HPO-v0", num_envs=64)`` is an SB3 VecEnv. Both take
    ``episodes_per_trial=K`` for RL² trials (K searches of the same objective).

    ## Version History
    - v0: initial release.
    """

    core_class = HPOCore


class MetaOptHPOVectorEnv(CoreVectorEnv):
    """Batched MetaOpt-HPO-v0 (see :class:`MetaOptHPOEnv` for the documentation)."""

    core_class = HPOCore
