"""A training sampler that makes each batch a function of (seed, epoch, position).

Resuming a run killed mid-epoch then replays exactly what the uninterrupted run would
have seen: the same order, the same flips, the same generated masks, on any number of
workers and DDP ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, DistributedSampler


class SampleKey(NamedTuple):
    """What the sampler hands to ``Dataset.__getitem__``: an index and that draw's own seed."""

    index: int
    seed: int


def split_key(key: int | SampleKey) -> tuple[int, int | None]:
    """(index, seed of the sample's random choices); no seed for a plain index."""
    if isinstance(key, SampleKey):
        return key.index, key.seed
    return int(key), None


def coin_flip(seed: int | None) -> bool:
    """A fair coin from the sample's seed, or from the global RNG without one."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return bool(torch.rand((), generator=generator) < 0.5)


class ResumableSampler(DistributedSampler):
    """Shuffled, sharded indices paired with per-sample seeds, resumable mid-epoch.

    Pass ``p`` over the data (the ``p``-th ``iter()``) draws its permutation and per-sample
    seeds from ``seed + p`` alone, never from the global RNG, so workers, ranks and restarts
    agree. Passes are counted here rather than taken from Lightning's ``set_epoch``, whose
    epoch number can jump by one on a resume. ``resume`` continues after a number of
    trained batches (per rank), mid-pass included.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = batch_size
        self.next_pass = 0
        self._skip_batches = 0

    def resume(self, batches_done: int, batches_per_pass: int) -> None:
        """Continue after ``batches_done`` batches of passes of ``batches_per_pass`` each."""
        self.next_pass, self._skip_batches = divmod(batches_done, batches_per_pass)

    def __iter__(self) -> Iterator[SampleKey]:
        pass_index, skip = self.next_pass, self._skip_batches * self.batch_size
        self.next_pass, self._skip_batches = pass_index + 1, 0
        generator = torch.Generator().manual_seed(self.seed + pass_index)
        order = torch.randperm(len(self.dataset), generator=generator)
        seeds = torch.randint(2**62, (len(self.dataset),), generator=generator)
        mine = order[: self.total_size][self.rank : self.total_size : self.num_replicas]
        for index in mine[skip:].tolist():
            yield SampleKey(index, int(seeds[index]))

    def __len__(self) -> int:
        # A whole pass: Lightning counts batches per epoch from this, resumed or not.
        return self.num_samples
