"""The patch-GAN discriminator of stage-1 (tokenizer) training."""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): a grid of real/fake logits over image patches."""

    def __init__(self, image_channels: int = 3, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(image_channels, channels, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
