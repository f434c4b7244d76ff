"""Diversity of several fills of one hole (``num_seeds`` / ``num_samples`` >= 2), with no
downloaded network: how far apart the fills are inside the hole.

``l1``: the mean absolute difference of two fills over the hole's pixels and channels (0-1
scale), averaged over every pair of fills and then over the images with a hole.
``changed``: the share of the hole's pixels whose 8-bit value differs in any channel
between two fills, averaged the same way. Both are 0 for identical fills.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor
from torchmetrics import Metric


class SampleDiversity(Metric):
    """Mean pairwise diversity of K fills per image inside its hole; sums across processes."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("l1_sum", "changed_sum", "images"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, fills: Tensor, pixel_mask: Tensor) -> None:
        """fills [K,B,3,H,W] in [0,1] (K >= 2); pixel_mask [B,1,H,W], 1 = known."""
        if fills.shape[0] < 2:
            raise ValueError(f"diversity needs >= 2 fills per image, got {fills.shape[0]}")
        hole = (pixel_mask < 0.5).squeeze(1)  # [B,H,W]
        area = hole.flatten(1).sum(1)  # [B]
        with_hole = area > 0
        if not with_hole.any():
            return
        fills8 = fills.float().mul(255).round()
        l1 = torch.zeros_like(area, dtype=torch.float64)
        changed = torch.zeros_like(l1)
        pairs = list(itertools.combinations(range(fills.shape[0]), 2))
        for a, b in pairs:
            diff = (fills8[a] - fills8[b]).abs()  # [B,3,H,W]
            l1 += (diff.mean(1) * hole).flatten(1).sum(1).double() / 255.0
            changed += ((diff.amax(1) > 0) & hole).flatten(1).sum(1).double()
        denominator = area.clamp_min(1).double() * len(pairs)
        self.l1_sum += (l1 / denominator)[with_hole].sum()
        self.changed_sum += (changed / denominator)[with_hole].sum()
        self.images += with_hole.sum().double()

    def compute(self) -> dict[str, float]:
        images = max(float(self.images), 1.0)
        return {"l1": float(self.l1_sum) / images, "changed": float(self.changed_sum) / images}
