"""(image, pixel mask) -> inpainted image: tokenize, decode the missing tokens, detokenize.

The one path used by evaluate.py, the validation callback and the speed benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from maskgit.decoding import DecodingSteps, IterativeDecoder
from maskgit.masking import pixel_to_token_mask
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.models.vqgan import VQGAN


@dataclass
class InpaintResult:
    """images: [B,3,H,W] in [0,1]. When asked for: step_masks, the token masks [B,h,w]
    (True = masked) of the input and after each step; step_images, the decoded prediction
    [B,3,H,W] of each step."""

    images: Tensor
    tokens: Tensor
    token_mask: Tensor
    step_masks: list[Tensor] | None = None
    step_images: list[Tensor] | None = None


def feathered_weight(pixel_mask: Tensor, feather: int) -> Tensor:
    """The weight [B,1,H,W] of the generated pixels in a paste: 1 in the hole (mask 0), falling
    linearly to 0 over ``feather`` known pixels around it (Chebyshev distance), 0 beyond."""
    missing = 1.0 - pixel_mask
    total = missing.clone()
    grown = missing
    for _ in range(feather):
        grown = F.max_pool2d(grown, kernel_size=3, stride=1, padding=1)
        total = total + grown
    return total / (feather + 1)


def paste(known: Tensor, generated: Tensor, pixel_mask: Tensor, feather: int = 0) -> Tensor:
    """Known pixels from ``known``, missing ones (mask 0) from ``generated``; with ``feather``
    the two are blended over that many known pixels around the hole, so no seam shows."""
    weight = feathered_weight(pixel_mask, feather) if feather else 1.0 - pixel_mask
    return (1.0 - weight) * known + weight * generated


def masked_input(images: Tensor, pixel_mask: Tensor) -> Tensor:
    """The missing pixels in grey, as the lab shows masked images."""
    return images * pixel_mask + 0.5 * (1.0 - pixel_mask)


def check_pixel_mask(images: Tensor, pixel_mask: Tensor) -> None:
    """A clear error for a mask that is not [B,1,H,W] in [0,1] beside images [B,3,H,W]."""
    b, _, h, w = images.shape
    if pixel_mask.dim() != 4 or tuple(pixel_mask.shape) != (b, 1, h, w):
        raise ValueError(
            f"pixel_mask: expected shape [{b}, 1, {h}, {w}] (1 = known, 0 = missing) for images "
            f"{tuple(images.shape)}, got {tuple(pixel_mask.shape)}"
        )
    low, high = float(pixel_mask.min()), float(pixel_mask.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"pixel_mask: values must lie in [0, 1] (1 = known, 0 = missing), got [{low}, {high}]"
            " (a 0/255 PNG mask must be divided by 255)"
        )


def hide_missing(images: Tensor, pixel_mask: Tensor) -> Tensor:
    """Every pixel that is not wholly known replaced by its image's mean known colour.

    The encoder sees beyond a token's own pixels (convolutions, its non-local block), so
    tokenizing the whole image would let the hidden content leak into the known tokens.
    """
    known = (pixel_mask >= 1.0).expand_as(images)
    count = known.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    mean_colour = torch.where(known, images, 0.0).sum(dim=(2, 3), keepdim=True) / count
    return torch.where(known, images, mean_colour.to(images.dtype))


def tokenize_fp32(tokenizer: VQGAN, images: Tensor) -> Tensor:
    """Tokens in fp32, also inside a bf16-mixed Trainer: nearest-code lookups are sensitive
    to rounding, and training, the token cache and inference must agree."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        return tokenizer.tokenize(images.float())


def ideal_fill_tokens(tokenizer: VQGAN, images: Tensor, pixel_mask: Tensor) -> Tensor:
    """The token grid [B,h,w] a perfect transformer would leave: the known tokens as inference
    makes them (from the photo with its hole hidden), the hole's tokens the photo's own."""
    full = tokenize_fp32(tokenizer, images)
    hidden = tokenize_fp32(tokenizer, hide_missing(images, pixel_mask))
    return torch.where(pixel_to_token_mask(pixel_mask, full.shape[-1]), full, hidden)


@dataclass
class DecodedTokens:
    """What decoding decided, before any pixel: the token grid [B,h,w] with every missing
    token filled, the token mask [B,h,w] (True = was missing) and, when asked for, the
    per-step states."""

    tokens: Tensor
    token_mask: Tensor
    steps: DecodingSteps | None = None


@torch.inference_mode()
def decode_tokens(
    tokenizer: VQGAN,
    transformer: BidirectionalTransformer,
    decoder: IterativeDecoder,
    images: Tensor,
    pixel_mask: Tensor,
    keys: Tensor | None = None,
    seed: int = 0,
    return_steps: bool = False,
) -> DecodedTokens:
    """Tokenize ``images`` with their holes hidden and decode the missing tokens."""
    check_pixel_mask(images, pixel_mask)
    if decoder.compile:
        transformer.compile_blocks()
    tokens = tokenize_fp32(tokenizer, hide_missing(images.float(), pixel_mask.float()))
    grid = tokens.shape[-1]
    token_mask = pixel_to_token_mask(pixel_mask, grid, decoder.token_threshold)
    filled, steps = decoder(
        transformer.logits_at,
        tokens.flatten(1),
        token_mask.flatten(1),
        transformer.mask_token_id,
        keys=keys,
        seed=seed,
        return_steps=return_steps,
    )
    return DecodedTokens(filled.view_as(tokens), token_mask, steps)


@torch.inference_mode()
def render(
    tokenizer: VQGAN, decoder: IterativeDecoder, images: Tensor, pixel_mask: Tensor,
    decoded: DecodedTokens,
) -> InpaintResult:  # fmt: skip
    """Decoded tokens -> pixels, pasted into the photo as ``decoder.paste`` /
    ``paste_feather`` say; the per-step images where ``decoded`` has steps."""
    tokens = decoded.tokens
    autocast = decoder.autocast(images.device)
    # The tokenizer's mask-aware head, if any: the hole decoded with the known pixels in view.
    head = tokenizer.mask_aware if decoder.paste and decoder.mask_aware_head else None

    def decode(indices: Tensor) -> Tensor:
        with autocast:
            pixels = tokenizer.detokenize(indices)
            return (pixels if head is None else head(pixels, images, pixel_mask)).float()

    pixels = decode(tokens)
    feather = decoder.paste_feather
    output = paste(images, pixels, pixel_mask, feather) if decoder.paste else pixels
    result = InpaintResult(images=output, tokens=tokens, token_mask=decoded.token_mask)
    steps = decoded.steps
    if steps is not None:
        result.step_masks = [m.view_as(tokens) for m in steps.masks]
        predictions = [decode(t.view_as(tokens)) for t in steps.tokens]
        if decoder.paste:
            predictions = [paste(images, p, pixel_mask, feather) for p in predictions]
        result.step_images = predictions
    return result


def inpaint(
    tokenizer: VQGAN,
    transformer: BidirectionalTransformer,
    decoder: IterativeDecoder,
    images: Tensor,
    pixel_mask: Tensor,
    keys: Tensor | None = None,
    seed: int = 0,
    return_steps: bool = False,
) -> InpaintResult:
    """Inpaint ``images`` [B,3,H,W] in [0,1] where ``pixel_mask`` [B,1,H,W] is 0; the
    missing pixels of ``images`` are never looked at."""
    decoded = decode_tokens(
        tokenizer, transformer, decoder, images, pixel_mask, keys, seed, return_steps
    )
    return render(tokenizer, decoder, images, pixel_mask, decoded)
