"""The Python API: inpaint one image (a file or a tensor) with one mask using a trained MaskGIT.

    from maskgit import inpaint, load_maskgit, save_image

    model = load_maskgit("checkpoints/maskgit_cats_local.safetensors")
    image = inpaint(model, "cat.jpg", "cat_mask.png", total_iter=12)  # [3,64,64] in [0,1]
    save_image(image, "cat_inpainted.png")

``maskgit`` re-exports these names lazily (importing ``maskgit`` stays light).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maskgit.data.images import load_image, load_mask
from maskgit.decoding import IterativeDecoder
from maskgit.modules.maskgit import MaskGitModule
from maskgit.samplers import make_sampler
from maskgit.schedules import get_schedule

_DECODER_OPTIONS = [
    name for name in inspect.signature(IterativeDecoder).parameters if name != "schedule"
]


def image_size(model: MaskGitModule) -> int:
    """The side of the square images ``model`` inpaints (64 for the shipped model)."""
    return model.token_grid * model.tokenizer.downsample_factor


def decoder_for(model: MaskGitModule, **options: Any) -> IterativeDecoder:
    """The model's own decoding settings (those it was trained with, or the defaults with the
    cosine schedule) with ``options`` overriding them, e.g. ``total_iter=12``,
    ``schedule="square"`` (a name or a gamma function), ``sweet_spot=4``, ``noise="lab"``."""
    unknown = sorted(set(options) - set(_DECODER_OPTIONS) - {"schedule"})
    if unknown:
        raise TypeError(
            f"unknown decoding option(s) {unknown}; expected some of "
            f"{['schedule', *_DECODER_OPTIONS]}"
        )
    base = model.decoder
    settings: dict[str, Any] = (
        {"schedule": base.schedule, **{name: getattr(base, name) for name in _DECODER_OPTIONS}}
        if base is not None
        else {"schedule": get_schedule("cosine")}
    )
    settings.update(options)
    if isinstance(settings["schedule"], str):
        settings["schedule"] = get_schedule(settings["schedule"])
    if isinstance(settings.get("sampler"), str):
        settings["sampler"] = make_sampler(settings["sampler"])
    elif "sampler" not in options and {"choice_temperature", "noise"} & set(options):
        settings["sampler"] = None  # the default sampler, built from those options
    return IterativeDecoder(**settings)


def _as_image(image: str | Path | Tensor, size: int) -> Tensor:
    """A file, or a tensor [3,H,W]: float in [0,1], or uint8 in [0,255] (scaled). A float
    tensor outside [0,1] (e.g. [0,255]) is an error: the output would be on its scale."""
    if not isinstance(image, Tensor):
        return load_image(image, size)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a tensor [3,H,W] in [0,1], got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise ValueError(f"image: expected a float tensor in [0,1] or uint8, got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"image: float values must lie in [0, 1], got [{low:g}, {high:g}] (an image in "
            "[0, 255] must be divided by 255, or passed as uint8)"
        )
    return image.float()


def _as_mask(mask: str | Path | Tensor, size: int) -> Tensor:
    """A PNG (white = known), or a tensor [H,W] / [1,H,W], 1 / True = known: bool, float in
    [0,1], or uint8 0/1 or 0/255."""
    if not isinstance(mask, Tensor):
        return load_mask(mask, size)
    mask = mask.unsqueeze(0) if mask.dim() == 2 else mask
    if mask.dtype == torch.bool:
        return mask.float()
    if mask.dtype == torch.uint8:
        return mask.float() / (255.0 if int(mask.max()) > 1 else 1.0)
    return mask.float()


def inpaint(
    model: MaskGitModule,
    image: str | Path | Tensor,
    mask: str | Path | Tensor,
    *,
    seed: int = 0,
    decoder: IterativeDecoder | None = None,
    **decoding: Any,
) -> Tensor:
    """Inpaint ``image`` where ``mask`` is missing; returns [3,H,W] in [0,1] (on the CPU).

    ``image``: a file (any format the evaluation reads; another size is resized and
    center-cropped to the model's, see :func:`image_size`) or a tensor [3,H,W] in [0,1].
    ``mask``: a PNG of the image's size (white = known, black = missing) or a tensor
    [H,W] / [1,H,W] (1 = known, 0 = missing). Known pixels are kept exactly (the default
    decoding pastes them back). ``decoder``, or ``decoding`` options overriding the model's
    settings (:func:`decoder_for`), choose how; ``seed`` fixes the decoding noise.
    """
    size = image_size(model)
    pixels = _as_image(image, size)
    pixel_mask = _as_mask(mask, size)
    if tuple(pixels.shape[-2:]) != (size, size):
        raise ValueError(
            f"image: the model inpaints {size}x{size} images, got {tuple(pixels.shape)}"
        )
    if decoder is not None and decoding:
        raise TypeError(f"pass decoder= or decoding options ({sorted(decoding)}), not both")
    decoder = decoder or decoder_for(model, **decoding)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            result = model.inpaint(
                pixels.unsqueeze(0).to(device), pixel_mask.unsqueeze(0).to(device),
                decoder=decoder, seed=seed,
            )  # fmt: skip
    finally:
        model.train(was_training)
    return result.images[0].float().cpu()
