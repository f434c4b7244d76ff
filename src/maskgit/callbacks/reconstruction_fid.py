"""Validation-time reconstruction FID (rFID) of a tokenizer: what its decoder can reach."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from maskgit.callbacks.monitoring import monitor_instead
from maskgit.metrics.fid import BucketedFID, build_fid


class ReconstructionFIDCallback(Callback):
    """Logs ``val/rfid``: the FID of the tokenizer's reconstructions of the validation images
    against those images. The real images' Inception features are computed once and kept.

    PSNR rewards blur; rFID is what a decoder trained with an adversarial loss aims to
    improve, and it is the reference for anything decoded through that decoder
    (``method=vqgan_recon`` in evaluation scores the same reconstructions pasted in the hole).
    Without Inception weights (and no network) it is skipped with a warning, unless
    ``fid_required``; the checkpoint callback then monitors ``val/psnr``.
    """

    def __init__(
        self,
        fid_weights_path: str | None = None,
        fid_required: bool = False,
        feature: int | nn.Module = 2048,
        fid_enabled: bool = True,
    ) -> None:
        self.fid_enabled = fid_enabled
        self.fid_weights_path = fid_weights_path
        self.fid_required = fid_required
        self.feature = feature
        self.fid: BucketedFID | None = None
        self._real_done = False
        self._active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.fid is None and self.fid_enabled:
            self.fid = build_fid(self.fid_weights_path, self.feature, required=self.fid_required)
            if self.fid is not None:
                # The validation images do not change: their features are kept across resets.
                self.fid.reset_real_features = False
        if self.fid is None:
            checkpoint = trainer.checkpoint_callback
            monitor_instead(checkpoint, "val/rfid", "val/psnr", "max", "val/rfid unavailable")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active = self.fid is not None and not trainer.sanity_checking
        if self._active:
            self.fid.reset()
            self.fid.to(pl_module.device)

    @torch.no_grad()
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
        images = batch["image"]
        if not self._real_done:
            self.fid.update(images, real=True)
        recon = pl_module(images)[0].clamp(0.0, 1.0).float()
        self.fid.update(recon, real=False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        self._real_done = True
        pl_module.log("val/rfid", self.fid.compute().float(), prog_bar=True, sync_dist=False)
