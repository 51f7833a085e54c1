"""K-shot support / query sets from the package's sinusoid family, keyed by split.

Tasks are the family's own :data:`TaskData`: ``inputs`` / ``targets``
``(n, N, 1)`` are the training points (a K-shot support set is their first K
rows) and ``val_inputs`` / ``val_targets`` ``(n, Q, 1)`` the query points.
A task is a function of its key only, and the keys follow the environments'
convention: task ``i`` of a split is ``fold(base_key(seed), split_id, i)``, so
train and test tasks come from disjoint streams. The support x's of a key are a
prefix of one stream, so the 5-shot support of a task is contained in its
10- and 20-shot supports.
"""

from __future__ import annotations

import torch

from metaopt_envs.core import rng
from metaopt_envs.core.family import SPLIT_IDS
from metaopt_envs.lr.families.base import TaskData, check_split
from metaopt_envs.lr.families.mlp import SinusoidMLPFamily


class SinusoidTasks:
    """Sampler of sinusoid tasks with ``num_support`` support and ``num_query`` query points.

    Uses the distribution of ``family`` (default :class:`SinusoidMLPFamily()`:
    amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]).
    """

    def __init__(self, family: SinusoidMLPFamily | None = None) -> None:
        self.family = family or SinusoidMLPFamily()
        self._cache: dict[tuple[int, int], SinusoidMLPFamily] = {}

    def _family(self, num_support: int, num_query: int) -> SinusoidMLPFamily:
        key = (num_support, num_query)
        if key not in self._cache:
            f = self.family
            self._cache[key] = SinusoidMLPFamily(
                hidden_sizes=tuple(f.layer_sizes[1:-1]),
                num_train=num_support,
                num_val=num_query,
                batch_size=1,
                amplitude_range=f.amplitude_range,
                phase_range=f.phase_range,
                input_range=f.input_range,
            )
        return self._cache[key]

    @staticmethod
    def keys(seed: int, split: str, start: int, n: int) -> torch.Tensor:
        """Keys ``(n,)`` of tasks ``start .. start + n - 1`` of ``split`` for ``seed``."""
        base = rng.keys_from_seeds([seed]).expand(n)
        return rng.fold(base, SPLIT_IDS[check_split(split)], torch.arange(start, start + n))

    def sample(
        self,
        n: int,
        num_support: int,
        num_query: int,
        split: str = "train",
        seed: int = 0,
        start: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> TaskData:
        """``n`` tasks (indices ``start ..``) of ``split``, fields cast to ``dtype``."""
        tasks = self._family(num_support, num_query).sample(self.keys(seed, split, start, n), split)
        return {k: v.to(dtype) for k, v in tasks.items()}


def support_query(tasks: TaskData, shots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support x, support y, query x, query y): the first ``shots`` training points and all query points."""
    if shots > tasks["inputs"].shape[1]:
        raise ValueError(f"tasks hold {tasks['inputs'].shape[1]} support points, asked for {shots} shots")
    return tasks["inputs"][:, :shots], tasks["targets"][:, :shots], tasks["val_inputs"], tasks["val_targets"]
