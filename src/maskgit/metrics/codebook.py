"""Codebook usage and perplexity of a tokenizer's indices."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class CodebookUsage(Metric):
    """Share of codes used and perplexity (exp entropy) of the index histogram.

    Counts are summed across processes under DDP before the statistics are taken.
    """

    full_state_update = False

    def __init__(self, num_codes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_codes = num_codes
        self.add_state("counts", torch.zeros(num_codes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, indices: Tensor) -> None:
        self.counts += torch.bincount(indices.flatten(), minlength=self.num_codes)

    def compute(self) -> dict[str, Tensor]:
        total = self.counts.sum().clamp_min(1)
        probs = self.counts.double() / total
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
        return {
            "usage": (self.counts > 0).double().mean(),
            "perplexity": entropy.exp(),
        }
