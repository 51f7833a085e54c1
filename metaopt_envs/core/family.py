"""What every environment family's task distribution shares: plain task data, splits, row helpers.

A task is plain data: a flat ``dict`` of tensors whose leading dimension is the
number of problems ``n`` (:data:`TaskData`). Every family samples it from int64
row keys and a split (``"train"`` or ``"test"``); cores take and put rows of it
when some rows reset.
"""

from __future__ import annotations

import torch

TaskData = dict[str, torch.Tensor]
"""Plain task data: every tensor has the number of problems as leading dimension."""

SPLITS = ("train", "test")

SPLIT_IDS = {"train": 0, "test": 1}
"""The integer folded into a row key to draw its tasks from one split."""


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def take(tasks: TaskData, index: torch.Tensor) -> TaskData:
    """Rows ``index`` (a long or bool tensor over the leading dimension) of every field."""
    return {name: value[index] for name, value in tasks.items()}


def put(tasks: TaskData, rows: torch.Tensor, new: TaskData) -> None:
    """Write ``new`` into the rows ``rows`` (bool ``(B,)`` mask or long index) in place."""
    for name, value in new.items():
        tasks[name][rows] = value


def gather_rows(data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``data: (n, N, ...)``, ``index: (n, m)`` -> ``(n, m, ...)``: rows of each problem's own data.

    One ``index_select`` on the flattened data copies whole rows; much faster on
    the CPU than ``torch.gather`` with an index expanded over the feature axis.
    """
    n, rows = data.shape[0], data.shape[1]
    flat = index + (torch.arange(n, device=index.device) * rows).unsqueeze(-1)
    picked = data.reshape(n * rows, *data.shape[2:]).index_select(0, flat.reshape(-1))
    return picked.view(*index.shape, *data.shape[2:])
