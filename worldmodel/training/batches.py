"""Which batch each training step reads: a pure function of ``(seed, step)``.

The batch of step ``s`` (sequence indices and the seeds of their random window offsets) depends
only on the run's seed and ``s``, so the data order needs no saved iterator state: a resumed run
reads the same batches as an uninterrupted one (``worldmodel.training.trainer``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler


def mix_seed(*values: int) -> int:
    """A 62-bit seed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0]) >> 2


class StepBatchSampler(Sampler):
    """Yields, for steps ``start, start+1, ...``, this process's share of the global batch as
    ``(index, item_seed)`` pairs.

    Indices run through seeded permutations of the dataset, epoch after epoch (no repeats within
    an epoch); everything is a function of ``(seed, step)``, so resuming needs no iterator state.
    Process ``rank`` of ``world`` takes the slice ``[rank * B / world, (rank + 1) * B / world)``.
    """

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ValueError("the training dataset is empty")
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world} processes")
        self.n, self.global_batch, self.seed, self.start_step = n, global_batch, seed, start_step
        self.per_rank = global_batch // world
        self.offset = rank * self.per_rank
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            )
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The ``(index, item_seed)`` pairs of ``step`` (1-based) for this process."""
        first = (step - 1) * self.global_batch + self.offset
        idx = [int(self._perm(p // self.n)[p % self.n]) for p in range(first, first + self.per_rank)]
        seeds = [mix_seed(self.seed, step, self.offset + j, 1) for j in range(self.per_rank)]
        return list(zip(idx, seeds, strict=False))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class SeededItems(Dataset):
    """``dataset[index]`` with torch's global RNG seeded by ``item_seed`` (then restored), so random
    window offsets depend only on the item's seed, in the main process and in workers alike."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of ``batch`` on ``device`` (non-blocking from pinned memory), nested dicts
    (the trainer's ``transitions``) included."""
    # uint8 frames travel as uint8 (4x less than float32); the model casts on the device.
    return {
        k: to_device(v, device) if isinstance(v, Mapping) else v.to(device, non_blocking=True)
        for k, v in batch.items()
    }
