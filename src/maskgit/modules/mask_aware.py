"""Training the tokenizer's mask-aware head (``maskgit.models.mask_aware``), everything else
frozen: the tokens, the decoder and every stage-2 checkpoint over the tokenizer stay as they
are.

Each photo gets an inpainting mask; its tokens are made as inference makes them (the known
tokens from the photo with its hole hidden) except inside the hole, where they are the
photo's own (the fill a perfect transformer would choose). The head sees the decoded image,
the known pixels and the mask, and learns to reproduce the photo inside the hole: the L1
loss counts the missing pixels only (the known ones are the photo's by construction).

With ``gan_weight > 0`` a patch discriminator also judges the head's output against the
photo (:mod:`maskgit.modules.adversarial`, as in the decoder's adversarial chunk): an L1 loss
alone is minimised by the mean of the plausible fills, a blur where the hole is large, and FID
scores that blur.

The checkpoint holds the whole tokenizer with its head under ``vqgan.`` and its config as
``hparams.vqgan``, so ``python -m maskgit.export tokenizer`` turns it into a tokenizer file
(the discriminator stays behind).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio

from maskgit.checkpoints import CheckpointError, load_tokenizer, read_checkpoint
from maskgit.config import plain_config
from maskgit.image_logging import log_image_grid
from maskgit.inpainting import ideal_fill_tokens, masked_input
from maskgit.models.discriminator import DiscriminatorNorm
from maskgit.models.vqgan import VQGAN
from maskgit.modules.adversarial import AdversarialTraining
from maskgit.modules.lr_schedule import warmup_cosine


def tokenizer_file_config(path: str) -> dict[str, Any]:
    """The architecture config a tokenizer file (compact, or a stage-1 Lightning checkpoint)
    records; the head's training needs it to build the tokenizer with a head."""
    data = read_checkpoint(path)
    config = data.get("config") or data.get("hyper_parameters", {}).get("vqgan")
    if not config:
        raise CheckpointError(
            f"{path}: records no tokenizer config (a compact tokenizer file or a stage-1 "
            "checkpoint of train.py is needed to train a mask-aware head)"
        )
    return dict(config)


def hole_l1(output: Tensor, target: Tensor, pixel_mask: Tensor) -> Tensor:
    """Mean absolute error over the missing pixels (mask 0) and channels."""
    missing = (1.0 - pixel_mask).expand_as(output)
    return ((output - target).abs() * missing).sum() / missing.sum().clamp_min(1.0)


class MaskAwareHeadModule(AdversarialTraining, L.LightningModule):
    def __init__(
        self,
        tokenizer_ckpt: str,
        head: dict,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        lr_decay_steps: int | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        gan_weight: float = 0.0,
        adaptive_gan_weight: bool = True,
        disc_channels: int = 64,
        disc_layers: int = 2,
        disc_norm: DiscriminatorNorm = "spectral",
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.999,
        feature_matching_weight: float = 0.0,
        num_log_images: int = 8,
    ) -> None:
        super().__init__()
        head = plain_config(head)
        betas = plain_config(betas)
        base = load_tokenizer(tokenizer_ckpt)
        config = {**tokenizer_file_config(tokenizer_ckpt), "mask_aware_head": head}
        self.save_hyperparameters()
        self.hparams["vqgan"] = config  # what export and load_tokenizer read
        self.vqgan = VQGAN(**config)
        missing, unexpected = self.vqgan.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any(not k.startswith("mask_aware.") for k in missing):
            raise CheckpointError(
                f"{tokenizer_ckpt}: does not fit its own config ({missing}, {unexpected})"
            )
        self.vqgan.requires_grad_(False).eval()
        self.vqgan.mask_aware.requires_grad_(True)
        self.init_adversarial(
            gan_weight, disc_channels, disc_layers, disc_norm, lecam_weight, lecam_decay,
            feature_matching_weight,
        )  # fmt: skip
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_psnr_paste = PeakSignalNoiseRatio(data_range=1.0)

    def train(self, mode: bool = True) -> MaskAwareHeadModule:
        super().train(mode)
        self.vqgan.eval()  # frozen: only the head trains, and it has no batch statistics
        self.vqgan.mask_aware.train(mode)
        return self

    @torch.no_grad()
    def decoded(self, images: Tensor, pixel_mask: Tensor) -> Tensor:
        """The image decoded from inference-like tokens: known tokens from the photo with its
        hole hidden, the hole's tokens the photo's own."""
        return self.vqgan.detokenize(ideal_fill_tokens(self.vqgan, images, pixel_mask)).float()

    def forward(self, images: Tensor, pixel_mask: Tensor) -> tuple[Tensor, Tensor]:
        decoded = self.decoded(images, pixel_mask)
        return self.vqgan.mask_aware(decoded, images, pixel_mask), decoded

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        images, pixel_mask = batch["image"], batch.get("mask")
        if pixel_mask is None:
            raise ValueError("the mask-aware head trains on inpainting masks: set data.train_masks")
        output, _ = self(images, pixel_mask)
        loss = hole_l1(output.float(), images, pixel_mask)
        self.log("train/l1_hole", loss, prog_bar=True, batch_size=images.shape[0])
        if not self.use_gan:
            return loss
        # The discriminator sees images in [-1, 1]; only the hole differs from the photo.
        real, fake = images * 2 - 1, output * 2 - 1
        last_layer = self.vqgan.mask_aware.out.weight
        g_loss = loss + self.generator_adversarial_loss(loss, fake, real, last_layer)
        opt_g, opt_d = self.optimizers()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.lr_schedulers().step()
        self.discriminator_step(opt_d, real.detach(), fake.detach())
        return None

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, pixel_mask = batch["image"], batch["mask"]
        output, decoded = self(images, pixel_mask)
        pasted = torch.where(pixel_mask.bool().expand_as(decoded), images, decoded)
        size = images.shape[0]
        self.log("val/l1_hole", hole_l1(output.float(), images, pixel_mask), batch_size=size,
                 sync_dist=True)  # fmt: skip
        self.log("val/l1_hole_paste", hole_l1(pasted, images, pixel_mask), batch_size=size,
                 sync_dist=True)  # fmt: skip
        self.val_psnr.update(output.float(), images)
        self.val_psnr_paste.update(pasted, images)
        if batch_idx == 0 and self.hparams.num_log_images:
            n = self.hparams.num_log_images
            rows = [images[:n], masked_input(images[:n], pixel_mask[:n]), pasted[:n], output[:n]]
            log_image_grid(self.trainer, "val/mask_aware", [r.float() for r in rows])

    def on_validation_epoch_end(self) -> None:
        # Whole-image PSNR of the photo with the hole decoded, with the head and without it.
        self.log_dict({"val/psnr": self.val_psnr.compute(), "val/psnr_paste": self.val_psnr_paste.compute()},
                      sync_dist=True)  # fmt: skip
        self.val_psnr.reset()
        self.val_psnr_paste.reset()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.fill_lecam_state(checkpoint["state_dict"])

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.vqgan.mask_aware.parameters(), lr=self.hparams.lr,
            betas=tuple(self.hparams.betas), weight_decay=self.hparams.weight_decay,
        )  # fmt: skip
        total = self.hparams.lr_decay_steps or int(self.trainer.estimated_stepping_batches)
        factor = warmup_cosine(self.hparams.warmup_steps, total, self.hparams.min_lr_ratio)
        scheduler = {
            "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
            "interval": "step",
        }
        if not self.use_gan:
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        # Manual optimization: training_step steps the head's schedule; the discriminator's
        # learning rate stays constant.
        return [optimizer, self.discriminator_optimizer()], [scheduler]
