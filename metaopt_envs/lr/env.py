"""MetaOpt-LR-v0: learning-rate control. The Env and VectorEnv are thin adapters over :class:`LRCore`."""

from __future__ import annotations

from metaopt_envs.core import CoreEnv, CoreVectorEnv
from metaopt_envs.lr.core import LRCore


class MetaOptLREnv(CoreEnv):
    """Control the learning rate of an inner optimizer, one inner problem per episode.

    ## Description
    Each episode samples one inner optimization problem from a task family and
    optimizes it for ``horizon`` inner steps with a base optimizer (SGD, SGD
    with momentum, or Adam). Before every ``action_every`` inner steps the
    agent sets the learning rate. Each inner step draws two independent
    minibatches, updates with their mean gradient, and measures the gradient
    noise from their difference. Return is the log of how much the training
    loss fell over the episode, so it compares across problems of any scale.

    ## Action Space
    ``Box(-1, 1, (1,), float32)``.

    - ``action_mode="absolute"`` (default): ``log lr = log lr_low + (a + 1) / 2 * (log lr_high - log lr_low)``.
    - ``action_mode="relative"``: ``lr <- clip(lr * max_lr_change ** a, lr_range)``;
      episodes start at ``initial_lr`` (default: the geometric middle of ``lr_range``).
    - ``action_mode="hypergradient"``: a correction of hypergradient descent's multiplicative rule,
      ``lr <- clip(lr * exp(hypergradient_beta * update_cosine) * max_lr_change ** a, lr_range)``
      (``update_cosine``: observation feature 7); ``a = 0`` is the rule itself (the ``hypergradient``
      baseline with ``beta = hypergradient_beta``), started at ``initial_lr``.

    Actions outside [-1, 1] are clipped; NaN or inf actions and wrong shapes raise ``ValueError``.

    ## Observation Space
    ``Box(float32)`` of 8 features (9 with ``observe_validation=True``), each clipped to its bounds:

    | # | name | meaning | bounds |
    |---|------|---------|--------|
    | 0 | log_loss_ratio | log((L_t + eps L_0) / L_0), training loss relative to the initial loss | [-15, 10] |
    | 1 | loss_change | log((L_t + eps L_0) / (L_{t-k} + eps L_0)), change over the last decision | [-10, 10] |
    | 2 | log_grad_norm_ratio | log(norm(g_t) / norm(g_0)), gradient norm relative to the first | [-15, 15] |
    | 3 | grad_cosine | cosine between the last two minibatch gradients (0 at the start) | [-1, 1] |
    | 4 | grad_noise | log(norm(g_a - g_b)^2 / norm(g_a + g_b)^2) of the two minibatch gradients: about 0 when noise dominates, very negative when the gradient is exact | [-15, 5] |
    | 5 | log_lr | current log learning rate, scaled to [-1, 1] over ``lr_range`` | [-1, 1] |
    | 6 | progress | inner steps taken / horizon | [0, 1] |
    | 7 | update_cosine | cosine between the gradient and the last update direction (equals ``grad_cosine`` for SGD; the normalized hypergradient of Baydin et al. 2018) | [-1, 1] |
    | 8 | log_val_loss_ratio | (with ``observe_validation``) validation loss relative to its initial value | [-15, 10] |

    ``eps`` is ``loss_floor`` (default 1e-6). ``env.unwrapped.core.observation_names`` lists the names.

    ## Rewards
    ``r_t = log((L_{t-k} + eps L_0) / (L_t + eps L_0))``: the log-loss improvement over the decision,
    so an episode's return telescopes to ``log((1 + eps) L_0 / (L_T + eps L_0))`` ~ ``log(L_0 / L_T)``.
    A diverging inner run (non-finite loss or gradient, or loss above ``divergence_threshold * L_0``)
    gets ``-divergence_penalty`` (default -10) and terminates. No NaN or inf reaches an observation or a reward.

    ## Starting State
    A new task is drawn from ``task_family``'s ``split`` at every reset (a finished problem never
    replays its first state); parameters start at the family's initialization, the optimizer state at zero.

    ## Episode End
    - Termination: the inner run diverged (``terminated=True, truncated=False``, also when it diverges on
      the last decision; ``gym.make``, ``gym.make_vec`` and the SB3 VecEnv report the same flags).
    - Truncation: ``horizon`` inner steps were taken, i.e. ``horizon // action_every`` decisions.
    - RL² trials (``episodes_per_trial=K``, any adapter): inner episode ends are hidden; the trial ends as a
      termination after K inner episodes.
    - Time limit: none is registered. The core is the one owner of the episode length, so
      ``gym.make("MetaOpt-LR-v0", horizon=n)`` runs exactly n inner steps (``n // action_every`` decisions)
      and ``env.spec.max_episode_steps`` is None.
      A ``max_episode_steps`` you pass yourself adds Gymnasium's ``TimeLimit`` on top (it can only cut
      episodes short, and sets ``truncated`` at its limit even on a terminating step); ``gym.make_vec``
      applies it the same way; ``metaopt_envs.make_sb3_vec_env`` takes none.

    ## Arguments
    ```python
    import gymnasium as gym
    import metaopt_envs

    env = gym.make("MetaOpt-LR-v0", task_family="quadratic", inner_optimizer="sgd", horizon=100)
    ```

    | argument | default | meaning |
    |---|---|---|
    | task_family | "mixture" | "quadratic", "logistic", "sinusoid", "sklearn", "mixture" (uniform over the four), or a ``TaskFamily`` instance |
    | task_family_kwargs | None | keyword arguments of the family's constructor |
    | split | "train" | "train" or "test" half of the task distribution ("sklearn" holds out the wine dataset for test) |
    | inner_optimizer | "sgd" | "sgd", "momentum" or "adam" |
    | optimizer_kwargs | None | ``momentum`` (0.9), ``beta1`` (0.9), ``beta2`` (0.999), ``eps`` (1e-8) |
    | horizon | 100 | inner steps per episode |
    | action_every | 1 | inner steps per decision; must divide ``horizon`` |
    | action_mode | "absolute" | "absolute", "relative" or "hypergradient" (see Action Space) |
    | lr_range | (1e-4, 10.0) | learning-rate range the action maps to |
    | initial_lr | None | starting rate in relative mode (geometric middle of ``lr_range`` by default) |
    | max_lr_change | 2.0 | largest factor per decision in relative mode |
    | hypergradient_beta | 0.1 | the rule's step in ``action_mode="hypergradient"`` |
    | observe_validation | False | add the validation-loss feature (families with validation data) |
    | divergence_threshold | 1e4 | loss above this multiple of the initial loss counts as divergence |
    | divergence_penalty | 10.0 | reward (negated) of a diverging step |
    | loss_floor | 1e-6 | ``eps`` in the features and the reward, bounding the return by ~log(1/eps) |
    | chunk_size | 1024 | rows evaluated per block (cache blocking on the CPU; results do not depend on it) |
    | initial_params | None | a parameter vector every inner problem starts from instead of the family's random initialization, e.g. a meta-learned one (``agents.meta`` learners' ``initialization()``) |
    | device | "cpu" | "cpu", "cuda" or "auto" |

    ## Vectorized environment
    ``gym.make_vec("MetaOpt-LR-v0", num_envs=1024)`` is one batched tensor program
    (:class:`MetaOptLRVectorEnv`, same-step autoreset), not a loop of envs;
    ``metaopt_envs.make_sb3_vec_env("MetaOpt-LR-v0", num_envs=64)`` is an SB3 VecEnv over the same core.
    Both take ``episodes_per_trial=K`` for RL² trials. Row ``i`` of a batch reset with
    ``seed=s`` is the same run as a single env reset with ``seed=s + i``.

    ## Version History
    - v0: initial release.
    """

    core_class = LRCore


class MetaOptLRVectorEnv(CoreVectorEnv):
    """Batched MetaOpt-LR-v0 (see :class:`MetaOptLREnv` for the documentation).

    ``num_envs`` problems advance together on one :class:`LRCore`; ``episodes_per_trial=K``
    turns on RL² trial mode.
    """

    core_class = LRCore
