"""Feed an epoch's precomputed batch schedule to the training loop, optionally through DataLoader
worker processes (``num_workers``) and pinned memory (CUDA).

The schedule (which rows form each batch, in which order) is decided in the main process by
``batching.epoch_schedule``; workers only pad the rows into tensors (``batching.collate``). Batches
come back in schedule order, so a run computes the same with any ``num_workers``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..records import TokenizedSplit
from .batching import Batch, collate


class _ScheduleDataset(Dataset):
    """Item ``i`` = the padded tensors of the ``i``-th scheduled batch (map-style, no auto-batching)."""

    def __init__(self, splits: dict[str, TokenizedSplit], items: list[tuple[str, np.ndarray]],
                 pad_id: int, pad_to_multiple_of: int | None) -> None:
        self.splits = splits
        self.items = items
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        task, rows = self.items[i]
        return collate(self.splits[task], rows, self.pad_id, self.pad_to_multiple_of)


def schedule_loader(splits: dict[str, TokenizedSplit], schedule: Sequence[Batch], pad_id: int, *,
                    num_workers: int = 0, device: torch.device | None = None,
                    pad_to_multiple_of: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """The collated batches of ``schedule``, in order.

    ``schedule`` holds the rows this process computes (a distributed rank: its share of each
    global batch). With ``num_workers == 0`` batches are collated lazily in
    this process, exactly as a plain loop would; otherwise a ``DataLoader`` with that many worker
    processes collates ahead of the model (``pin_memory`` when ``device`` is CUDA, so the copies
    to the GPU can overlap with compute)."""
    if num_workers <= 0:
        return (collate(splits[b.task], b.indices, pad_id, pad_to_multiple_of) for b in schedule)
    items = [(b.task, np.asarray(b.indices)) for b in schedule]
    if not items:
        return iter(())
    cuda = device is not None and device.type == "cuda"
    loader = DataLoader(_ScheduleDataset(splits, items, pad_id, pad_to_multiple_of), batch_size=None,
                        shuffle=False, num_workers=num_workers, pin_memory=cuda,
                        prefetch_factor=4, persistent_workers=False,
                        # the workers' seeds come from a private generator: drawing them from torch's
                        # global one would shift every later dropout mask of the run
                        generator=torch.Generator().manual_seed(0))
    return iter(loader)
