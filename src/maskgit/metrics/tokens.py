"""Known-token agreement: does hiding the hole change the tokens of the known pixels?

Inpainting tokenizes the image with its hole hidden (``maskgit.inpainting.hide_missing``).
The transformer conditions on the known tokens, so they should be the whole photo's
tokens. ``ring`` tokens touch a missing token (a local encoder may see the fill there);
``far`` tokens are farther away and should never change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from maskgit.masking import pixel_to_token_mask


def token_regions(pixel_mask: Tensor, grid: int, ring: int = 1) -> tuple[Tensor, Tensor]:
    """(ring, far) bool [B,g,g]: known tokens within ``ring`` tokens of a missing one, and
    the known tokens beyond."""
    missing = pixel_to_token_mask(pixel_mask, grid).float().unsqueeze(1)
    near = F.max_pool2d(missing, 2 * ring + 1, stride=1, padding=ring).squeeze(1) > 0
    missing = missing.squeeze(1) > 0
    return near & ~missing, ~near


class KnownTokenAgreement(Metric):
    """Share of known tokens equal with the hole hidden and with the whole photo, next to
    the hole (``ring``) and away from it (``far``); counts summed across processes."""

    full_state_update = False

    def __init__(self, ring: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ring = ring
        for name in ("ring_equal", "ring_total", "far_equal", "far_total"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, hidden_tokens: Tensor, full_tokens: Tensor, pixel_mask: Tensor) -> None:
        """Token grids [B,g,g] of the hidden-hole and the whole images; pixel_mask [B,1,H,W]."""
        ring, far = token_regions(pixel_mask, full_tokens.shape[-1], self.ring)
        equal = hidden_tokens == full_tokens
        self.ring_equal += (equal & ring).sum()
        self.ring_total += ring.sum()
        self.far_equal += (equal & far).sum()
        self.far_total += far.sum()

    def compute(self) -> dict[str, Tensor]:
        return {
            "ring": self.ring_equal.double() / self.ring_total.clamp_min(1),
            "far": self.far_equal.double() / self.far_total.clamp_min(1),
        }
