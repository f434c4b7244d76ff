"""Validation-time inpainting: FID and masked-region quality of the fixed val pairs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from maskgit.callbacks.validation_fid import ValidationFIDCallback
from maskgit.image_logging import log_image_grid
from maskgit.inpainting import masked_input
from maskgit.metrics.inpainting import InpaintingQuality


class InpaintingFIDCallback(ValidationFIDCallback):
    """At each validation, inpaints every (image, mask) pair of the validation loader with the
    module's decoder (fixed masks, fixed seed, images keyed by dataset index) and logs
    ``val/fid`` (torchmetrics, states synced across DDP ranks), ``val/psnr_masked``,
    ``val/ssim_masked`` and a grid of masked / inpainted / real images.

    Without Inception weights (and no network) FID is skipped with a warning and the
    checkpoint callback monitors ``val/loss`` instead, unless ``fid_required``;
    ``fid_enabled=False`` (``metrics.fid.enabled=false``) skips it the same way.
    """

    def __init__(
        self,
        fid_weights_path: str | None = None,
        fid_required: bool = False,
        feature: int | nn.Module = 2048,
        seed: int = 0,
        num_log_images: int = 8,
        fid_enabled: bool = True,
    ) -> None:
        super().__init__(fid_weights_path, fid_required, feature, fid_enabled)
        self.seed = seed
        self.num_log_images = num_log_images
        self.quality = InpaintingQuality()
        self._grid: list[Tensor] | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        if self._active:
            self.quality.reset()
            self.quality.to(pl_module.device)
            self._grid = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active:
            return
        images, pixel_mask = batch["image"], batch["mask"]
        result = pl_module.inpaint(images, pixel_mask, keys=batch["index"], seed=self.seed)
        inpainted = result.images.float()
        self.quality.update(inpainted, images, pixel_mask)
        if self.fid is not None:
            self.fid.update(images, real=True)
            self.fid.update(inpainted, real=False)
        if self._grid is None:
            n = self.num_log_images
            self._grid = [masked_input(images[:n], pixel_mask[:n]), inpainted[:n], images[:n]]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        # compute() gathers the states of every rank: the same value everywhere.
        scores = self.quality.compute()
        metrics = {f"val/{name}_masked": torch.tensor(value) for name, value in scores.items()}
        if self.fid is not None:
            metrics["val/fid"] = self.fid.compute().float()
        pl_module.log_dict(metrics, prog_bar=True, sync_dist=False)
        if self._grid is not None:
            log_image_grid(trainer, "val/inpainting", self._grid)
