"""Batched inner optimizers whose hyperparameters are per-problem tensors."""

from metaopt_envs.inner.optimizers import INNER_OPTIMIZERS, InnerOptimizer, OptimizerState

__all__ = ["INNER_OPTIMIZERS", "InnerOptimizer", "OptimizerState"]
