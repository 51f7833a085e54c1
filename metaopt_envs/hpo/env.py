"""MetaOpt-HPO-v0 (sequential hyperparameter search) and MetaOpt-Acquisition-v0 (its learned acquisition
function): thin adapters over :class:`HPOCore` and :class:`AcquisitionCore`."""

from __future__ import annotations

from metaopt_envs.core import CoreEnv, CoreVectorEnv
from metaopt_envs.hpo.acquisition import AcquisitionCore
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


class MetaOptAcquisitionEnv(CoreEnv):
    """Score candidate configurations from a GP posterior: a learned acquisition function (MetaBO-style).

    ## Description
    The search of ``MetaOpt-HPO-v0`` (same objective families, normalization, rewards and episode;
    the same seeds give the same objectives), but the agent does not propose a point: as in MetaBO
    (Volpp et al., 2020), each step the env fits a Gaussian process to the configurations evaluated so
    far (Matérn-5/2 ARD + noise, MAP hyperparameters, warm-started from the previous fit; the batched GP
    of the GP-EI baseline, :mod:`metaopt_envs.hpo.gp`), proposes ``num_candidates`` points, and shows
    the posterior at each. The action scores the candidates and the best-scored one is evaluated next,
    so a policy is an acquisition function; one that scores Expected Improvement is GP-EI on these
    candidates. Candidates: ``num_candidates - num_local`` points of a scrambled Sobol set shifted by a
    random vector (modulo 1) per row and decision, and ``num_local`` Gaussian perturbations of the
    incumbent (scales log-uniform in [1e-3, 0.3]; uniform points before the first evaluation), drawn
    from the row's keys (row ``i`` of a batch is the single env seeded ``i``).

    With ``candidate_pool=P > 0`` the shown points are picked, in the spirit of MetaBO on continuous
    domains (its neural AF scores points found by maximizing a standard AF): each decision the row
    draws a pool of ``P`` shifted Sobol points and ``P // 4`` perturbations of the incumbent, adds
    ``P // 16`` finer perturbations (scales in [1e-4, 0.03]) of the pool's 8 best-EI points (GP-EI's
    refinement round), computes Expected Improvement on the same GP posterior, and shows the
    ``num_candidates - num_local`` best-EI Sobol points and the ``num_local`` best-EI local points
    (neighbours and refinements), each best first (ties, as before the first evaluation: the pool's
    order). The pool's best-EI point is always shown, so EI over the shown set is EI maximized over
    the pool, about GP-EI; the Sobol part keeps the set spread out (the overall best-EI points are one
    tight cluster around the best, among which a choice hardly matters). ``P`` must be at least
    ``num_candidates`` and ``4 * num_local``.

    With ``num_initial=n0 > 0`` the first ``n0`` evaluations of each search are an initial design, as
    GP-EI's (``num_initial=5`` there): the first ``n0`` points of a scrambled Sobol set shifted by a
    random vector per row and inner episode (modulo 1). At those steps every candidate is the design's
    next point, so any action evaluates it; the budget counts them, and the rewards are as usual.

    ## Action Space
    ``Box(-1, 1, (num_candidates,), float32)``: a score per candidate; the argmax is evaluated (ties:
    the first). NaN or inf actions and wrong shapes raise ``ValueError``.

    ## Observation Space
    ``Box(float32)`` of ``num_candidates * (4 + D)`` features, candidate-major (reshape to
    ``(num_candidates, 4 + D)``; ``D`` is the family's largest dimension or ``max_dim``), per candidate:

    | # | name | meaning |
    |---|------|---------|
    | 0 | mean | GP posterior mean at the candidate, standardized targets (clipped to [-10, 10]) |
    | 1 | std | posterior standard deviation of the latent function (clipped to [0, 10]) |
    | 2 | incumbent | the lowest standardized target so far (0 before the first evaluation) |
    | 3 | budget_used | evaluations / budget |
    | 4..4+D-1 | x[i] | the candidate's coordinates in [-1, 1] (0 on padded dims) |

    Targets are modelled as GP-EI does: ``z = log(y - min y + (median y - min y))`` of the normalized
    regrets ``y`` (``y_transform="log"``; ``"none"`` models ``y``), standardized per row. Before the
    first evaluation every candidate shows the prior (mean 0, std 1).

    ## Rewards, Starting State, Episode End
    As ``MetaOpt-HPO-v0``: the improvement of the best ``log10`` normalized regret (``reward_mode``),
    a new objective at every reset, truncation after ``budget`` evaluations, RL² trials with
    ``episodes_per_trial=K``. ``info`` adds ``candidate``, the index evaluated.

    ## Arguments
    ```python
    import gymnasium as gym
    import metaopt_envs

    env = gym.make("MetaOpt-Acquisition-v0", task_family="branin", budget=16, num_candidates=32)
    ```

    The arguments of ``MetaOpt-HPO-v0`` (``task_family``, ``task_family_kwargs``, ``split``, ``budget``,
    ``reward_mode``, ``regret_floor``, ``max_dim``, ``device``), and:

    | argument | default | meaning |
    |---|---|---|
    | num_candidates | 64 | candidates scored per decision (the action's size) |
    | num_local | 16 | of which perturbations of the incumbent (the rest: the shifted Sobol set) |
    | fit_steps | 30 | Adam steps of the GP hyperparameter fit per decision (0: keep the prior) |
    | fit_lr | 0.1 | their step size |
    | y_transform | "log" | "log" or "none" (see above) |
    | candidate_pool | 0 | 0: the candidates above; ``P >= num_candidates``: show the best-EI points of a pool of ``P`` (see above) |
    | num_initial | 0 | the first ``num_initial < budget`` evaluations of a search are an initial design (see above) |

    ## Vectorized environment
    ``gym.make_vec("MetaOpt-Acquisition-v0", num_envs=64)`` fits the 64 GPs in one batched program;
    ``metaopt_envs.make_sb3_vec_env`` gives an SB3 VecEnv. Both take ``episodes_per_trial=K``.

    ## Version History
    - v0: initial release; ``candidate_pool`` and ``num_initial`` added later (defaults 0: the candidates as
      released).
    """

    core_class = AcquisitionCore


class MetaOptAcquisitionVectorEnv(CoreVectorEnv):
    """Batched MetaOpt-Acquisition-v0 (see :class:`MetaOptAcquisitionEnv` for the documentation)."""

    core_class = AcquisitionCore
