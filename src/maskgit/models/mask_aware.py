"""A mask-aware head on the tokenizer's decoder: pixels that continue their surroundings.

The VQGAN decoder sees tokens only, so a fill decoded from tokens meets the photo's known
pixels at a seam. This head sees the decoded image, the known pixels and the mask, and
rewrites the missing pixels only: every known pixel of its output is the photo's, exactly,
and the tokens are untouched (it sits after the decoder), so every stage-2 checkpoint over
the tokenizer stays valid. Its last convolution starts at zero: an untrained head is a hard
paste of the decoded image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DilatedBlock(nn.Module):
    """Residual 3x3 conv pair with a dilation, so a few blocks see far around the hole."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class MaskAwareHead(nn.Module):
    """(decoded image, photo, mask) -> the decoded image refined inside the hole, pasted into
    the photo. Images [B,3,H,W] in [0,1]; mask [B,1,H,W], 1 = known."""

    def __init__(self, channels: int = 48, dilations: tuple[int, ...] = (1, 2, 4, 8, 1)) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3 + 3 + 1, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[DilatedBlock(channels, d) for d in dilations])
        self.out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, decoded: Tensor, photo: Tensor, mask: Tensor) -> Tensor:
        known = mask.to(decoded.dtype)
        visible = photo.to(decoded.dtype) * known  # the missing pixels are never looked at
        features = self.inp(torch.cat([decoded * 2 - 1, visible * 2 - 1, known], dim=1))
        refined = (decoded + self.out(F.silu(self.blocks(features)))).clamp(0.0, 1.0)
        return torch.where(known.bool().expand_as(refined), photo.to(refined.dtype), refined)
