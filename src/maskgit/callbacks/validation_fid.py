"""What the validation FID callbacks share: building the FID offline, the checkpoint fallback
when it cannot be built, and the per-validation activation and reset."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from maskgit.callbacks.monitoring import monitor_instead
from maskgit.metrics.fid import BucketedFID, build_fid


class ValidationFIDCallback(Callback):
    """Base of the callbacks that log an FID at each validation (not at the sanity check).

    Subclasses name the ``metric`` they log and what checkpoints monitor without it
    (``fallback_metric``, ``fallback_mode``): without Inception weights and network the FID
    is skipped with a warning (an error when ``fid_required``), and so with
    ``fid_enabled=False``. ``keep_real_features`` keeps the real images' features across
    validations (the same images each time: computed once).
    """

    metric = "val/fid"
    fallback_metric = "val/loss"
    fallback_mode = "min"
    keep_real_features = False

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
        self._active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.fid is None and self.fid_enabled:
            self.fid = build_fid(self.fid_weights_path, self.feature, required=self.fid_required)
            if self.fid is not None and self.keep_real_features:
                self.fid.reset_real_features = False
        if self.fid is None:
            monitor_instead(
                trainer.checkpoint_callback, self.metric, self.fallback_metric,
                self.fallback_mode, f"{self.metric} unavailable",
            )  # fmt: skip

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active = not trainer.sanity_checking
        if self._active and self.fid is not None:
            self.fid.reset()
            self.fid.to(pl_module.device)
