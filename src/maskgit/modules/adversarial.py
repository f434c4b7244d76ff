"""The adversarial side of decoder training, shared by the tokenizer's decoder
(:class:`~maskgit.modules.tokenizer.VQGANModule`) and its mask-aware head
(:class:`~maskgit.modules.mask_aware.MaskAwareHeadModule`): a hinge patch-GAN, the adaptive
weight of Esser et al. (2021), LeCam regularisation and discriminator feature matching.

Keeping the discriminator from winning: ``disc_norm="spectral"`` (no BatchNorm),
``lecam_weight`` (LeCam regularisation, Tseng et al., 2021: the discriminator's outputs are
pulled towards the moving averages of its outputs on the other side) and
``feature_matching_weight`` (L1 between the discriminator's features of the photo and of the
generated image: a perceptual term that needs no downloaded network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maskgit.models.discriminator import DiscriminatorNorm, PatchDiscriminator


class AdversarialTraining:
    """Mixin for a LightningModule whose ``hparams`` hold ``gan_weight``,
    ``adaptive_gan_weight``, ``lecam_weight``, ``lecam_decay`` and ``feature_matching_weight``.

    ``init_adversarial`` (in ``__init__``, after ``save_hyperparameters``) checks them, builds
    the discriminator when ``gan_weight > 0`` and switches to manual optimization (generator
    and discriminator optimizers); ``generator_adversarial_loss`` is the generator's extra
    loss, ``discriminator_step`` one discriminator update.
    """

    discriminator: PatchDiscriminator | None

    def init_adversarial(
        self,
        gan_weight: float,
        disc_channels: int,
        disc_layers: int,
        disc_norm: DiscriminatorNorm,
        lecam_weight: float,
        lecam_decay: float,
        feature_matching_weight: float,
    ) -> None:
        for name, value, valid in (
            ("lecam_weight", lecam_weight, lecam_weight >= 0),
            ("lecam_decay", lecam_decay, 0 <= lecam_decay < 1),
            ("feature_matching_weight", feature_matching_weight, feature_matching_weight >= 0),
        ):
            if not valid:
                raise ValueError(f"model.{name}: out of range, got {value}")
            if name != "lecam_decay" and value > 0 and gan_weight <= 0:
                raise ValueError(f"model.{name}={value} needs the GAN: set model.gan_weight > 0")
        self.use_gan = gan_weight > 0
        self.discriminator = (
            PatchDiscriminator(channels=disc_channels, n_layers=disc_layers, norm=disc_norm)
            if self.use_gan
            else None
        )
        # LeCam's moving averages of the discriminator's mean output on photos / generated
        # images, and the number of updates (their bias correction: they start from zero).
        self.register_buffer("lecam_ema", torch.zeros(2))
        self.register_buffer("lecam_updates", torch.zeros((), dtype=torch.long))
        # Two optimizers (generator, discriminator) need manual optimization.
        self.automatic_optimization = not self.use_gan

    def adversarial_weight(self, rec_loss: Tensor, g_adv: Tensor, last_layer: Tensor) -> Tensor:
        """``gan_weight``, or with ``adaptive_gan_weight`` that times the ratio of the
        reconstruction gradient to the adversarial one at the generator's last layer."""
        if not self.hparams.adaptive_gan_weight:
            return torch.tensor(self.hparams.gan_weight, device=g_adv.device)
        rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
        adv_grad = torch.autograd.grad(g_adv, last_layer, retain_graph=True)[0]
        ratio = rec_grad.norm() / (adv_grad.norm() + 1e-4)
        return self.hparams.gan_weight * ratio.clamp(0.0, 1e4).detach()

    def generator_adversarial_loss(
        self, rec_loss: Tensor, fake: Tensor, real: Tensor, last_layer: Tensor
    ) -> Tensor:
        """The weighted adversarial term plus feature matching (both logged)."""
        logits_fake, features_fake = self.discriminator.features(fake)
        g_adv = -logits_fake.mean()
        weight = self.adversarial_weight(rec_loss, g_adv, last_layer)
        loss = weight * g_adv
        logged = {"train/g_adv": g_adv, "train/gan_weight": weight}
        fm_weight = self.hparams.feature_matching_weight
        if fm_weight > 0:
            with torch.no_grad():
                _, features_real = self.discriminator.features(real)
            matching = sum(F.l1_loss(f, r) for f, r in zip(features_fake, features_real)) / len(
                features_real
            )
            loss = loss + fm_weight * matching
            logged["train/feature_matching"] = matching
        self.log_dict(logged, on_step=True)
        return loss

    def discriminator_step(self, opt_d: torch.optim.Optimizer, real: Tensor, fake: Tensor) -> None:
        """One hinge-loss update of the discriminator (plus LeCam) on detached images."""
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        d_loss = 0.5 * (F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean())
        logged = {"train/d_loss": d_loss, "train/d_real": d_real.mean().detach(),
                  "train/d_fake": d_fake.mean().detach()}  # fmt: skip
        if self.hparams.lecam_weight > 0:
            decay = self.hparams.lecam_decay
            means = torch.stack([d_real.mean(), d_fake.mean()]).detach().float()
            means = self.trainer.strategy.reduce(means, reduce_op="mean")
            self.lecam_ema.mul_(decay).add_((1 - decay) * means)
            self.lecam_updates += 1
            ema_real, ema_fake = self.lecam_ema / (1 - decay ** self.lecam_updates.item())
            lecam = (
                F.relu(d_real - ema_fake).square().mean()
                + F.relu(ema_real - d_fake).square().mean()
            )
            d_loss = d_loss + self.hparams.lecam_weight * lecam
            logged["train/lecam"] = lecam
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.log_dict(logged, on_step=True)

    def discriminator_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.discriminator.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas)
        )

    def fill_lecam_state(self, state_dict: dict[str, Tensor]) -> None:
        """Runs from before LeCam have no moving averages: start them from zero."""
        for name in ("lecam_ema", "lecam_updates"):
            state_dict.setdefault(name, torch.zeros_like(getattr(self, name)))
