"""VQGAN tokenizer: conv encoder, vector quantizer, conv decoder.

Module names and ordering follow the lab's implementation (``encoder.model.N``,
``decoder.model.N``, ``codebook.embedding``, ``quant_conv``, ``post_quant_conv``) so a lab
checkpoint loads with ``load_state_dict(strict=True)`` and gives the lab's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskgit.models.mask_aware import MaskAwareHead


class GroupNorm(nn.Module):
    def __init__(self, channels: int, num_groups: int = 32) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(min(num_groups, channels), channels, eps=1e-6, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.gn(x)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1),
            GroupNorm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        )
        self.channel_up = (
            nn.Conv2d(in_channels, out_channels, 1, 1, 0) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.channel_up is None else self.channel_up(x)
        return skip + self.block(x)


class DownSampleBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        # Asymmetric padding keeps the output exactly half the input size with a 3x3/2 conv.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class UpSampleBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class NonLocalBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = GroupNorm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (
            proj(normed).reshape(b, 1, c, h * w).transpose(2, 3)
            for proj in (self.q, self.k, self.v)
        )
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(attended.transpose(2, 3).reshape(b, c, h, w))


class Encoder(nn.Module):
    def __init__(
        self,
        image_channels: int,
        channels: Sequence[int],
        latent_dim: int,
        num_res_blocks: int,
        downsample_stages: Sequence[int],
        attn_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(image_channels, channels[0], 3, 1, 1)]
        for stage in range(len(channels) - 1):
            in_ch, out_ch = channels[stage], channels[stage + 1]
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(in_ch, out_ch))
                in_ch = out_ch
                if stage in attn_stages:
                    layers.append(NonLocalBlock(in_ch))
            if stage in downsample_stages:
                layers.append(DownSampleBlock(out_ch))
        top = channels[-1]
        layers += [
            ResidualBlock(top, top),
            NonLocalBlock(top),
            ResidualBlock(top, top),
            GroupNorm(top),
            nn.SiLU(),
            nn.Conv2d(top, latent_dim, 3, 1, 1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each position: statistics of one position only."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LocalResidualBlock(nn.Module):
    """x + conv(silu(conv(silu(norm(x))))) whose norm, if any, is per position: a GroupNorm
    takes statistics over the whole image and would let every pixel reach every output."""

    def __init__(self, channels: int, kernel_size: int, channel_norm: bool) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.block = nn.Sequential(
            ChannelNorm(channels) if channel_norm else nn.Identity(),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size, 1, padding),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size, 1, padding),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class LocalEncoder(nn.Module):
    """An encoder whose tokens see their own patch plus a margin of ``margin`` pixels.

    Inpainting hides the missing pixels before tokenizing; with a global encoder (non-local
    attention, GroupNorm statistics, a wide receptive field) the hidden fill changes known
    tokens far from the hole. Here a 3x3 stem and ``num_res_blocks`` 3x3 residual blocks
    run at full resolution (margin 1 + 2 * num_res_blocks pixels), every downsampling is a
    2x2/2 patch merge (token-aligned: no margin added) and the token-resolution blocks are
    pointwise (1x1) with a per-position norm. No statistics cross positions.
    """

    def __init__(
        self,
        image_channels: int,
        channels: Sequence[int],
        latent_dim: int,
        num_res_blocks: int,
        token_res_blocks: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(image_channels, channels[0], 3, 1, 1)]
        layers += [LocalResidualBlock(channels[0], 3, False) for _ in range(num_res_blocks)]
        for in_ch, out_ch in pairwise(channels):
            layers.append(nn.Conv2d(in_ch, out_ch, 2, 2, 0))
        top = channels[-1]
        layers += [LocalResidualBlock(top, 1, True) for _ in range(token_res_blocks)]
        layers += [ChannelNorm(top), nn.SiLU(), nn.Conv2d(top, latent_dim, 1)]
        self.model = nn.Sequential(*layers)
        self.margin = 1 + 2 * num_res_blocks

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Decoder(nn.Module):
    def __init__(
        self,
        image_channels: int,
        channels: Sequence[int],
        latent_dim: int,
        num_res_blocks: int,
        upsample_stages: Sequence[int],
        attn_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        # The lab lists decoder channels from the image side; the decoder runs them reversed.
        channels = list(reversed(channels))
        in_ch = channels[0]
        layers: list[nn.Module] = [
            nn.Conv2d(latent_dim, in_ch, 3, 1, 1),
            ResidualBlock(in_ch, in_ch),
            NonLocalBlock(in_ch),
            ResidualBlock(in_ch, in_ch),
        ]
        for stage, out_ch in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(in_ch, out_ch))
                in_ch = out_ch
                if stage in attn_stages:
                    layers.append(NonLocalBlock(in_ch))
            if stage in upsample_stages:
                layers.append(UpSampleBlock(in_ch))
        # The lab's output head has no activation between the norm and the last conv
        # (its checkpoint indexes them as consecutive modules); keep that for compatibility.
        layers += [GroupNorm(in_ch), nn.Conv2d(in_ch, image_channels, 3, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z)


class Codebook(nn.Module):
    """Nearest-neighbour vector quantizer with a straight-through estimator.

    ``l2_normalize`` looks codes up by cosine similarity (codes and latents on the unit
    sphere), which keeps far more of the codebook in use than raw Euclidean lookup.
    """

    def __init__(
        self,
        num_codes: int,
        latent_dim: int,
        beta: float = 0.25,
        l2_normalize: bool = False,
    ) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.beta = beta
        self.l2_normalize = l2_normalize
        self.embedding = nn.Embedding(num_codes, latent_dim)
        self.embedding.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)

    def codes(self) -> Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.l2_normalize else weight

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z [B,C,H,W] -> (z_q [B,C,H,W], indices [B*H*W] in b,h,w order, loss).

        Always fp32, also under autocast: nearest-code lookups are sensitive to rounding."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._quantize(z.float())

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = z.permute(0, 2, 3, 1).contiguous()
        if self.l2_normalize:
            z = F.normalize(z, dim=-1)
        flat = z.view(-1, z.shape[-1])
        codes = self.codes()
        distances = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()
        indices = distances.argmin(dim=1)
        z_q = F.embedding(indices, codes).view(z.shape)
        # Codebook term pulls codes to the encoder outputs; commitment term (beta) the reverse.
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z_q.detach(), z)
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), indices, loss

    @torch.no_grad()
    def restart_codes(self, dead: Tensor, latents: Tensor) -> None:
        """Move unused codes onto randomly chosen encoder outputs ``latents`` [M,C]."""
        n_dead = int(dead.sum())
        if n_dead == 0 or latents.shape[0] == 0:
            return
        pick = torch.randint(latents.shape[0], (n_dead,), device=latents.device)
        self.embedding.weight.data[dead] = latents[pick].to(self.embedding.weight.dtype)

    def lookup(self, indices: Tensor) -> Tensor:
        """indices [B,H,W] -> z_q [B,C,H,W]."""
        return F.embedding(indices, self.codes()).permute(0, 3, 1, 2).contiguous()


def make_encoder(
    kind: str,
    image_channels: int,
    channels: Sequence[int],
    latent_dim: int,
    num_res_blocks: int,
    downsample_stages: Sequence[int],
    attn_stages: Sequence[int],
    token_res_blocks: int,
) -> nn.Module:
    """``encoder=conv``: the lab's VQGAN encoder; ``encoder=local``: a ``LocalEncoder``."""
    if kind == "conv":
        return Encoder(
            image_channels, channels, latent_dim, num_res_blocks, downsample_stages, attn_stages
        )
    if kind == "local":
        if len(channels) != len(downsample_stages) + 1:
            raise ValueError(
                f"encoder=local needs one enc_channels entry per resolution: "
                f"{len(downsample_stages) + 1} for {len(downsample_stages)} downsamplings, "
                f"got enc_channels={list(channels)}"
            )
        if attn_stages:
            raise ValueError("encoder=local has no attention: set enc_attn_stages=[]")
        return LocalEncoder(image_channels, channels, latent_dim, num_res_blocks, token_res_blocks)
    raise ValueError(f"tokenizer.encoder must be 'conv' or 'local', got {kind!r}")


class VQGAN(nn.Module):
    """64x64 images <-> 16x16 grids of codebook indices (sizes from the config)."""

    def __init__(
        self,
        image_channels: int = 3,
        enc_channels: Sequence[int] = (128, 128, 128, 256, 256, 512),
        dec_channels: Sequence[int] = (128, 128, 256, 256, 512),
        latent_dim: int = 256,
        num_codebook_vectors: int = 1024,
        beta: float = 0.25,
        enc_res_blocks: int = 2,
        dec_res_blocks: int = 3,
        downsample_stages: Sequence[int] = (2, 4),
        upsample_stages: Sequence[int] = (0, 2),
        enc_attn_stages: Sequence[int] = (),
        dec_attn_stages: Sequence[int] = (0,),
        l2_normalize_codes: bool = False,
        encoder: str = "conv",
        enc_token_res_blocks: int = 2,
        pixel_mean: Sequence[float] = (0.5, 0.5, 0.5),
        pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
        mask_aware_head: dict | None = None,
    ) -> None:
        super().__init__()
        if len(downsample_stages) != len(upsample_stages):
            raise ValueError(
                f"downsample_stages {list(downsample_stages)} and upsample_stages "
                f"{list(upsample_stages)} must have the same length (same resolution change)"
            )
        self.num_codebook_vectors = num_codebook_vectors
        self.downsample_factor = 2 ** len(downsample_stages)
        self.encoder = make_encoder(
            encoder, image_channels, enc_channels, latent_dim, enc_res_blocks,
            downsample_stages, enc_attn_stages, enc_token_res_blocks,
        )  # fmt: skip
        self.decoder = Decoder(
            image_channels, dec_channels, latent_dim, dec_res_blocks, upsample_stages,
            dec_attn_stages,
        )  # fmt: skip
        self.codebook = Codebook(num_codebook_vectors, latent_dim, beta, l2_normalize_codes)
        self.quant_conv = nn.Conv2d(latent_dim, latent_dim, 1)
        self.post_quant_conv = nn.Conv2d(latent_dim, latent_dim, 1)
        # The normalisation the tokenizer was trained with travels with it, outside the
        # state_dict (non-persistent) so lab checkpoints still load strictly.
        shape = (1, image_channels, 1, 1)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(shape), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(shape), persistent=False)
        # Optional: a head that decodes the hole with the known pixels in view
        # (maskgit.models.mask_aware); after the decoder, so the tokens do not depend on it.
        self.mask_aware = MaskAwareHead(**mask_aware_head) if mask_aware_head else None

    def normalize(self, images: Tensor) -> Tensor:
        """Images in [0,1] -> the tokenizer's input space."""
        return (images - self.pixel_mean) / self.pixel_std

    def denormalize(self, x: Tensor) -> Tensor:
        """The decoder's output space -> images in [0,1] (not clamped)."""
        return x * self.pixel_std + self.pixel_mean

    def encode_latents(self, images: Tensor) -> Tensor:
        """images [B,3,H,W] (normalised) -> continuous latents before quantization [B,C,h,w]."""
        return self.quant_conv(self.encoder(images))

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """images [B,3,H,W] (normalised) -> (z_q [B,C,h,w], indices [B,h,w], quant_loss)."""
        z = self.encode_latents(images)
        z_q, indices, loss = self.codebook(z)
        return z_q, indices.view(z.shape[0], z.shape[2], z.shape[3]), loss

    def decode(self, z_q: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """indices [B,h,w] -> images [B,3,H,W]."""
        return self.decode(self.codebook.lookup(indices))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z_q, indices, loss = self.encode(images)
        return self.decode(z_q), indices, loss

    @torch.no_grad()
    def tokenize(self, images: Tensor) -> Tensor:
        """Images in [0,1] [B,3,H,W] -> indices [B,h,w]."""
        return self.encode(self.normalize(images))[1]

    @torch.no_grad()
    def detokenize(self, indices: Tensor) -> Tensor:
        """indices [B,h,w] -> images in [0,1] [B,3,H,W]."""
        return self.denormalize(self.decode_indices(indices)).clamp(0.0, 1.0)
