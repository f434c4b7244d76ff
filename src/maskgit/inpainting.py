"""(image, pixel mask) -> inpainted image: tokenize, decode the missing tokens, detokenize.

The one path used by evaluate.py, the validation callback and the speed benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from maskgit.decoding import IterativeDecoder
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


def paste(known: Tensor, generated: Tensor, pixel_mask: Tensor) -> Tensor:
    """Known pixels from ``known``, missing ones (mask 0) from ``generated``."""
    return pixel_mask * known + (1.0 - pixel_mask) * generated


def hide_missing(images: Tensor, pixel_mask: Tensor) -> Tensor:
    """The missing pixels replaced by each image's mean known colour.

    The encoder sees beyond a token's own pixels (convolutions, its non-local block), so
    tokenizing the whole image would let the hidden content leak into the known tokens.
    """
    known = pixel_mask.expand_as(images)
    count = known.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    mean_colour = (images * known).sum(dim=(2, 3), keepdim=True) / count
    return paste(images, mean_colour.expand_as(images), pixel_mask)


@torch.inference_mode()
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
    if decoder.compile:
        transformer.compile_blocks()
    # fp32 tokenization, also inside a bf16-mixed Trainer: nearest-code lookups are
    # sensitive to rounding.
    with torch.autocast(device_type=images.device.type, enabled=False):
        tokens = tokenizer.tokenize(hide_missing(images.float(), pixel_mask.float()))
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
    filled = filled.view_as(tokens)
    autocast = decoder.autocast(images.device)
    with autocast:
        decoded = tokenizer.detokenize(filled).float()
    output = paste(images, decoded, pixel_mask) if decoder.paste else decoded
    result = InpaintResult(images=output, tokens=filled, token_mask=token_mask)
    if steps is not None:
        result.step_masks = [m.view_as(tokens) for m in steps.masks]
        with autocast:
            predictions = [tokenizer.detokenize(t.view_as(tokens)).float() for t in steps.tokens]
        if decoder.paste:
            predictions = [paste(images, p, pixel_mask) for p in predictions]
        result.step_images = predictions
    return result
