"""Masked-region PSNR / SSIM / L1 per image, aggregated overall and per hole-area bucket."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

from maskgit.masking import missing_fraction

NUM_BUCKETS = 10  # 0-10 %, 10-20 %, ..., 90-100 % of the pixels missing


def area_bucket(pixel_mask: Tensor) -> Tensor:
    """Hole-area bucket per image [B]: floor(missing share * 10), 100 % in the last."""
    return (missing_fraction(pixel_mask) * NUM_BUCKETS).floor().long().clamp(0, NUM_BUCKETS - 1)


def bucket_name(bucket: int) -> str:
    low = bucket * 100 // NUM_BUCKETS
    return f"{low}-{low + 100 // NUM_BUCKETS}%"


class InpaintingQuality(Metric):
    """PSNR, SSIM and L1 over each image's missing pixels, kept per image (``cat`` states,
    gathered under DDP), reported overall and per hole-area bucket."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("psnr", "ssim", "l1", "missing"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, pixel_mask: Tensor) -> None:
        """preds, target [B,3,H,W] in [0,1]; pixel_mask [B,1,H,W], 1 = known."""
        preds, target = preds.float().clamp(0, 1), target.float()
        hole = (1.0 - pixel_mask.float()).expand_as(preds)
        n_hole = hole.flatten(1).sum(1)
        has_hole = n_hole > 0
        squared = ((preds - target) ** 2 * hole).flatten(1).sum(1) / n_hole.clamp_min(1)
        l1 = ((preds - target).abs() * hole).flatten(1).sum(1) / n_hole.clamp_min(1)
        psnr = 10 * torch.log10(1.0 / squared.clamp_min(1e-10))
        _, ssim_map = structural_similarity_index_measure(
            preds, target, data_range=1.0, reduction="none", return_full_image=True
        )
        ssim = (ssim_map * hole).flatten(1).sum(1) / n_hole.clamp_min(1)
        # Images with no hole have no masked-region score.
        self.psnr.append(psnr[has_hole])
        self.ssim.append(ssim[has_hole])
        self.l1.append(l1[has_hole])
        self.missing.append(missing_fraction(pixel_mask)[has_hole])

    def _values(self) -> dict[str, Tensor]:
        values = {}
        for name in ("psnr", "ssim", "l1", "missing"):
            state = getattr(self, name)
            values[name] = torch.cat(state) if isinstance(state, list) else state
        return values

    def compute(self) -> dict[str, float]:
        values = self._values()
        if values["psnr"].numel() == 0:
            return {}
        return {name: float(values[name].mean()) for name in ("psnr", "ssim", "l1")}

    def compute_buckets(self) -> dict[str, dict[str, float]]:
        # Unlike compute(), not synced by torchmetrics: gather every rank's images here.
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            values = self._values()
        if values["psnr"].numel() == 0:
            return {}
        buckets = (values["missing"] * NUM_BUCKETS).floor().long().clamp(0, NUM_BUCKETS - 1)
        table = {}
        for bucket in buckets.unique().tolist():
            select = buckets == bucket
            table[bucket_name(bucket)] = {
                "count": int(select.sum()),
                **{name: float(values[name][select].mean()) for name in ("psnr", "ssim", "l1")},
            }
        return table
