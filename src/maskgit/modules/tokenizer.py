"""Stage 1: training the VQGAN tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from maskgit.checkpoints import (
    CheckpointError,
    checkpoint_source,
    load_state_dict_strict,
    load_tokenizer,
    require_fit,
)
from maskgit.config import plain_config
from maskgit.image_logging import log_image_grid
from maskgit.metrics.codebook import CodebookUsage
from maskgit.models.discriminator import DiscriminatorNorm
from maskgit.models.vqgan import VQGAN
from maskgit.modules.adversarial import AdversarialTraining

log = logging.getLogger(__name__)


class VQGANModule(AdversarialTraining, L.LightningModule):
    """Reconstruction (L1 + L2) + codebook/commitment losses, optional hinge patch-GAN.

    Logs reconstruction PSNR/SSIM, codebook usage and perplexity, and image grids.
    Dead codes (unused for ``restart_every`` steps) are moved onto current encoder outputs.

    ``freeze_encoder`` trains the decoder side only (``post_quant_conv`` + decoder): the
    tokens of every image stay the same, so a MaskGIT trained over the tokenizer stays valid
    with the new decoder. ``adaptive_gan_weight`` scales the adversarial gradient at the last
    decoder layer to ``gan_weight`` times the reconstruction gradient (Esser et al., 2021);
    the GAN and its regularisers: :mod:`maskgit.modules.adversarial`.
    """

    def __init__(
        self,
        vqgan: dict,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        quant_weight: float = 1.0,
        restart_every: int = 200,
        gan_weight: float = 0.0,
        gan_start_step: int = 2000,
        adaptive_gan_weight: bool = False,
        disc_channels: int = 64,
        disc_layers: int = 3,
        disc_norm: DiscriminatorNorm = "batch",
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.999,
        feature_matching_weight: float = 0.0,
        freeze_encoder: bool = False,
        num_log_images: int = 8,
    ) -> None:
        super().__init__()
        vqgan = plain_config(vqgan)
        betas = plain_config(betas)
        self.save_hyperparameters()  # the plain-dict vqgan config too: checkpoints rebuild it
        self.vqgan = VQGAN(**vqgan)
        self.init_adversarial(
            gan_weight, disc_channels, disc_layers, disc_norm, lecam_weight, lecam_decay,
            feature_matching_weight,
        )  # fmt: skip
        if freeze_encoder:
            for part in self.encoding_side():
                part.requires_grad_(False)
        num_codes = self.vqgan.num_codebook_vectors
        self.register_buffer(
            "code_hits", torch.zeros(num_codes, dtype=torch.long), persistent=False
        )
        self.val_metrics = MetricCollection(
            {
                "psnr": PeakSignalNoiseRatio(data_range=1.0),
                "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            },
            prefix="val/",
        )
        self.val_usage = CodebookUsage(num_codes)
        self._val_images: Tensor | None = None

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Images in [0,1] -> (reconstruction in [0,1], indices, quant loss)."""
        recon, indices, quant_loss = self.vqgan(self.vqgan.normalize(images))
        return self.vqgan.denormalize(recon), indices, quant_loss

    def encoding_side(self) -> list[nn.Module]:
        """The parts that decide an image's tokens (frozen by ``freeze_encoder``)."""
        return [self.vqgan.encoder, self.vqgan.quant_conv, self.vqgan.codebook]

    def train(self, mode: bool = True) -> VQGANModule:
        super().train(mode)
        if self.hparams.freeze_encoder:
            for part in self.encoding_side():
                part.eval()
        return self

    def init_from(self, path: str | Path) -> None:
        """Start from a trained tokenizer (any format ``load_tokenizer`` reads) with a fresh
        optimizer: e.g. fine-tune the shipped tokenizer's decoder."""
        source = f"init_from={str(path)!r}"
        try:
            weights = load_tokenizer(path)  # with its own settings, compared below
        except CheckpointError as error:
            raise CheckpointError(f"{source}: {error}") from error
        load_state_dict_strict(self.vqgan, weights.state_dict(), source)
        # Settings without weights that decide the tokens must match the file's too.
        for name, theirs, ours in (
            ("pixel_mean", weights.pixel_mean.flatten().tolist(),
             self.vqgan.pixel_mean.flatten().tolist()),
            ("pixel_std", weights.pixel_std.flatten().tolist(),
             self.vqgan.pixel_std.flatten().tolist()),
            ("l2_normalize_codes", weights.codebook.l2_normalize,
             self.vqgan.codebook.l2_normalize),
        ):  # fmt: skip
            if theirs != ours:
                raise CheckpointError(
                    f"{source}: was trained with {name}={theirs}, but the tokenizer config has "
                    f"{name}={ours}; set tokenizer.{name} to match"
                )
        log.info("tokenizer initialised from %s", path)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.fill_lecam_state(checkpoint["state_dict"])
        require_fit(self, checkpoint["state_dict"], checkpoint_source(self))

    def _reconstruction_loss(self, recon: Tensor, target: Tensor) -> Tensor:
        loss = self.hparams.l1_weight * F.l1_loss(recon, target)
        return loss + self.hparams.l2_weight * F.mse_loss(recon, target)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        target = self.vqgan.normalize(batch["image"])
        frozen = self.hparams.freeze_encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            latents = self.vqgan.encode_latents(target)
            z_q, indices, quant_loss = self.vqgan.codebook(latents)
        recon = self.vqgan.decode(z_q)
        rec_loss = self._reconstruction_loss(recon, target)
        loss = rec_loss if frozen else rec_loss + self.hparams.quant_weight * quant_loss
        self.log_dict(
            {"train/rec_loss": rec_loss, "train/quant_loss": quant_loss},
            prog_bar=True, on_step=True, on_epoch=False,
        )  # fmt: skip
        if self.use_gan:
            self._gan_step(loss, rec_loss, recon, target)
        if not frozen:  # a frozen codebook keeps its codes where the tokens expect them
            self._track_codes(indices, latents)
        if self.use_gan:
            return None
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def _gan_step(self, vq_loss: Tensor, rec_loss: Tensor, recon: Tensor, target: Tensor) -> None:
        opt_g, opt_d = self.optimizers()
        active = self.global_step >= self.hparams.gan_start_step
        g_loss = vq_loss
        if active:
            last_layer = self.vqgan.decoder.model[-1].weight
            g_loss = g_loss + self.generator_adversarial_loss(rec_loss, recon, target, last_layer)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        opt_g.step()
        if active:
            self.discriminator_step(opt_d, target.detach(), recon.detach())

    @torch.no_grad()
    def _track_codes(self, indices: Tensor, latents: Tensor) -> None:
        every = self.hparams.restart_every
        if not every:
            return
        self.code_hits += torch.bincount(indices.flatten(), minlength=self.code_hits.numel())
        if (self.global_step + 1) % every:
            return
        hits = self.trainer.strategy.reduce(self.code_hits.clone(), reduce_op="sum")
        dead = hits == 0
        codebook = self.vqgan.codebook
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        if codebook.l2_normalize:
            flat = F.normalize(flat, dim=1)
        codebook.restart_codes(dead, flat)
        # Every process must hold the same codebook: take rank 0's.
        weight = self.trainer.strategy.broadcast(codebook.embedding.weight.data, src=0)
        codebook.embedding.weight.data.copy_(weight)
        self.log("train/dead_codes", dead.sum().float(), on_step=True)
        self.code_hits.zero_()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images = batch["image"]
        recon, indices, _ = self(images)
        recon = recon.clamp(0, 1)
        # fp32 under a bf16-mixed run: SSIM's local variances do not survive bf16.
        with torch.autocast(device_type=images.device.type, enabled=False):
            self.val_metrics.update(recon.float(), images.float())
        self.val_usage.update(indices)
        self.log("val/rec_l1", F.l1_loss(recon, images), on_epoch=True, sync_dist=True)
        if batch_idx == 0:
            n = self.hparams.num_log_images
            self._val_images = torch.stack([images[:n], recon[:n]])

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()
        usage = self.val_usage.compute()
        self.log_dict({"val/codebook_usage": usage["usage"], "val/perplexity": usage["perplexity"]})
        self.val_usage.reset()
        if self._val_images is not None:
            log_image_grid(self.trainer, "val/reconstructions", list(self._val_images))
            self._val_images = None

    def configure_optimizers(self):
        generator_params = [p for p in self.vqgan.parameters() if p.requires_grad]
        opt_g = torch.optim.AdamW(
            generator_params, lr=self.hparams.lr, betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )  # fmt: skip
        if not self.use_gan:
            return opt_g
        return [opt_g, self.discriminator_optimizer()]
