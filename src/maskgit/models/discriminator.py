"""The patch-GAN discriminator of stage-1 (tokenizer) training."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

DiscriminatorNorm = Literal["batch", "spectral", "none"]


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): a grid of real/fake logits over image patches.

    ``norm="batch"`` is pix2pix's (and taming-transformers') BatchNorm; ``"spectral"``
    bounds every convolution's Lipschitz constant instead (no BatchNorm, whose batch
    statistics let a small discriminator win fast on small batches); ``"none"`` has neither.
    """

    def __init__(
        self,
        image_channels: int = 3,
        channels: int = 64,
        n_layers: int = 3,
        norm: DiscriminatorNorm = "batch",
    ) -> None:
        super().__init__()
        if norm not in ("batch", "spectral", "none"):
            raise ValueError(f"model.disc_norm must be batch, spectral or none, got {norm!r}")
        wrap = spectral_norm if norm == "spectral" else (lambda conv: conv)
        layers: list[nn.Module] = [
            wrap(nn.Conv2d(image_channels, channels, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            batch_norm = norm == "batch"
            layers.append(wrap(nn.Conv2d(channels * prev, channels * mult, 4, stride, 1,
                                         bias=not batch_norm)))  # fmt: skip
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels * mult))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(wrap(nn.Conv2d(channels * mult, 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The logits and the activation after every LeakyReLU (for feature matching)."""
        activations = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                activations.append(x)
        return x, activations
