"""Validation-time reconstruction FID (rFID) of a tokenizer: what its decoder can reach."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from maskgit.callbacks.validation_fid import ValidationFIDCallback


class ReconstructionFIDCallback(ValidationFIDCallback):
    """Logs ``val/rfid``: the FID of the tokenizer's reconstructions of the validation images
    against those images. The real images' Inception features are computed once and kept.

    PSNR rewards blur; rFID is what a decoder trained with an adversarial loss aims to
    improve, and it is the reference for anything decoded through that decoder
    (``method=vqgan_recon`` in evaluation scores the same reconstructions pasted in the hole).
    Without Inception weights (and no network) it is skipped with a warning, unless
    ``fid_required``; the checkpoint callback then monitors ``val/psnr``.
    """

    metric = "val/rfid"
    fallback_metric = "val/psnr"
    fallback_mode = "max"
    keep_real_features = True  # the validation images do not change

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._real_done = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self._active = self._active and self.fid is not None

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
        self.fid.update(self.generated(pl_module, batch).clamp(0.0, 1.0).float(), real=False)

    def generated(self, pl_module: L.LightningModule, batch: dict[str, Tensor]) -> Tensor:
        """The images scored against the validation photos: the reconstructions."""
        return pl_module(batch["image"])[0]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        self._real_done = True
        pl_module.log(self.metric, self.fid.compute().float(), prog_bar=True, sync_dist=False)


class MaskAwareFIDCallback(ReconstructionFIDCallback):
    """Logs ``val/fid``: the FID of the mask-aware head's fills of the validation pairs (the
    photo with its hole decoded from its own tokens through the head, every known pixel the
    photo's) against the photos; checkpoints of an adversarially trained head monitor it.
    Without Inception weights they monitor ``val/l1_hole``."""

    metric = "val/fid"
    fallback_metric = "val/l1_hole"
    fallback_mode = "min"

    def generated(self, pl_module: L.LightningModule, batch: dict[str, Tensor]) -> Tensor:
        return pl_module(batch["image"], batch["mask"])[0]
