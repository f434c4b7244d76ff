"""Masked-region PSNR / SSIM / L1 per image, aggregated overall and per hole-area bucket."""

from __future__ import annotations

from typing import Any

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


SCORES = ("psnr", "ssim", "l1")
STATES = (*SCORES, "missing", "keys", "sample")


class InpaintingQuality(Metric):
    """PSNR, SSIM and L1 over each image's missing pixels, kept per image with its key and
    sample (noise seed) (``cat`` states, gathered under DDP), reported overall and per
    hole-area bucket: a mean over each sample's images, then over samples."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in STATES:
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        pixel_mask: Tensor,
        keys: Tensor | None = None,
        sample: int = 0,
    ) -> None:
        """preds, target [B,3,H,W] in [0,1]; pixel_mask [B,1,H,W], 1 = known; keys [B] the
        images' ids; sample: which noise seed of the same images these are."""
        # fp32 whatever the caller's autocast: SSIM's local variances (E[x^2] - E[x]^2) lose
        # every digit in bf16, which would halve the score.
        with torch.autocast(device_type=preds.device.type, enabled=False):
            self._score_batch(preds.float().clamp(0, 1), target.float(), pixel_mask, keys, sample)

    def _score_batch(
        self, preds: Tensor, target: Tensor, pixel_mask: Tensor, keys: Tensor | None, sample: int
    ) -> None:
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
        if keys is None:
            keys = torch.full((preds.shape[0],), -1)
        keys = keys.to(preds.device).long()[has_hole]
        self.keys.append(keys)
        self.sample.append(torch.full_like(keys, sample))

    def _values(self) -> dict[str, Tensor]:
        values = {}
        for name in STATES:
            state = getattr(self, name)
            values[name] = torch.cat(state) if isinstance(state, list) else state
        return values

    def per_image(self) -> dict[int, dict[str, Tensor]]:
        """{sample: {psnr, ssim, l1, missing, keys}} per image, sorted by key, gathered from
        every rank."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            return self._by_sample(self._values())

    @staticmethod
    def _by_sample(values: dict[str, Tensor]) -> dict[int, dict[str, Tensor]]:
        table = {}
        for sample in values["sample"].unique().tolist():
            rows = (values["sample"] == sample).nonzero().flatten()
            rows = rows[values["keys"][rows].argsort(stable=True)]
            table[int(sample)] = {
                name: values[name][rows].cpu() for name in (*SCORES, "missing", "keys")
            }
        return table

    @staticmethod
    def _means(per_image: dict[int, dict[str, Tensor]]) -> dict[int, dict[str, float]]:
        return {
            sample: {name: float(rows[name].mean()) for name in SCORES}
            for sample, rows in per_image.items()
            if rows["psnr"].numel()
        }

    def compute(self) -> dict[str, float]:
        """Each score's mean over images, averaged over samples."""
        # torchmetrics has synced the states across ranks before compute() runs.
        per_sample = self._means(self._by_sample(self._values()))
        if not per_sample:
            return {}
        return {
            name: sum(scores[name] for scores in per_sample.values()) / len(per_sample)
            for name in SCORES
        }

    def compute_per_sample(self) -> dict[int, dict[str, float]]:
        return self._means(self.per_image())

    def compute_buckets(self) -> dict[str, dict[str, Any]]:
        """Per hole-area bucket: its image count, and each score's mean over samples with
        the per-sample values (``<score>_per_sample``)."""
        table: dict[str, dict[str, Any]] = {}
        for rows in self.per_image().values():
            buckets = (rows["missing"] * NUM_BUCKETS).floor().long().clamp(0, NUM_BUCKETS - 1)
            for bucket in buckets.unique().tolist():
                select = buckets == bucket
                entry = table.setdefault(bucket_name(bucket), {"count": int(select.sum())})
                for name in SCORES:
                    entry.setdefault(f"{name}_per_sample", []).append(
                        float(rows[name][select].mean())
                    )
        for entry in table.values():
            for name in SCORES:
                values = entry[f"{name}_per_sample"]
                entry[name] = sum(values) / len(values)
        return table
