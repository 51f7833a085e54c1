"""Gradient-based meta-learners on the package's sinusoid task family.

Everything is functional (``torch.func``): a network is a dict of tensors, the
inner loop is ``torch.func.grad`` steps on one task, and a batch of tasks is a
``torch.func.vmap`` over that per-task program.

* :mod:`agents.meta.functional` -- the MLP (1-40-40-1 ReLU by default) over a
  dict or flat parameter set;
* :mod:`agents.meta.tasks` -- K-shot support / query sets drawn from
  :class:`metaopt_envs.lr.families.mlp.SinusoidMLPFamily` with keyed train/test
  splits (:mod:`metaopt_envs.core.rng`);
* :mod:`agents.meta.learners` -- :class:`MAML` (second order), :class:`FOMAML`,
  :class:`Reptile`, :class:`MetaSGD`, :class:`CAVIA` and the joint-training
  :class:`Pretrained` baseline, all with ``meta_train(...)`` and
  ``adapt_and_evaluate(tasks, shots, steps)``.
"""

from agents.meta.functional import flatten_params, init_mlp, mlp_forward, mse, unflatten_params
from agents.meta.learners import CAVIA, FOMAML, LEARNERS, MAML, MetaLearner, MetaSGD, Pretrained, Reptile
from agents.meta.tasks import SinusoidTasks, support_query

__all__ = [
    "CAVIA",
    "FOMAML",
    "LEARNERS",
    "MAML",
    "MetaLearner",
    "MetaSGD",
    "Pretrained",
    "Reptile",
    "SinusoidTasks",
    "flatten_params",
    "init_mlp",
    "mlp_forward",
    "mse",
    "support_query",
    "unflatten_params",
]
