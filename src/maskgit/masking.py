"""Token masks for training and pixel masks -> token masks for inpainting.

Conventions: a *pixel mask* is float [B,1,H,W] with 1 = known pixel, 0 = missing (the
``val_masks`` PNGs: 255 known, 0 missing). A *token mask* is bool [B,h,w] or [B,N] with
True = missing (to be predicted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maskgit.schedules import Schedule


def random_token_mask(
    batch_size: int,
    num_tokens: int,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """MVTM mask: per sample r ~ U(0,1), ceil(gamma(r) * N) tokens chosen uniformly -> [B,N]."""
    r = torch.rand(batch_size, generator=generator, device=device)
    n_masked = torch.ceil(schedule(r).to(torch.float64) * num_tokens).long().clamp(1, num_tokens)
    # Rank i.i.d. noise: the n_masked lowest ranks of each row are masked.
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < n_masked.to(ranks.device).unsqueeze(1)


def pixel_to_token_mask(pixel_mask: Tensor, token_grid: int, threshold: float = 0.0) -> Tensor:
    """Pixel mask [B,1,H,W] (1 known) -> token mask [B,g,g] (True missing).

    Average-pools the missing indicator over each token's pixels; a token is missing where
    that share exceeds ``threshold`` (0.0, the lab's rule: any missing pixel).
    """
    if pixel_mask.dim() == 3:
        pixel_mask = pixel_mask.unsqueeze(1)
    missing = 1.0 - pixel_mask.float()
    if missing.shape[-1] % token_grid or missing.shape[-2] % token_grid:
        raise ValueError(
            f"pixel mask of size {tuple(missing.shape[-2:])} does not divide into a "
            f"{token_grid}x{token_grid} token grid"
        )
    share = F.adaptive_avg_pool2d(missing, token_grid).squeeze(1)
    return share > threshold


def missing_fraction(pixel_mask: Tensor) -> Tensor:
    """Share of missing pixels per image: [B,1,H,W] -> [B]."""
    return 1.0 - pixel_mask.float().flatten(1).mean(1)
