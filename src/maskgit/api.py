"""The Python API: inpaint one image (a file or a tensor) with one mask using a trained MaskGIT.

    from maskgit import inpaint, load_maskgit, save_image

    model = load_maskgit("checkpoints/maskgit_cats_local.safetensors")
    image = inpaint(model, "cat.jpg", "cat_mask.png", total_iter=12)  # [3,64,64] in [0,1]
    save_image(image, "cat_inpainted.png")

``maskgit`` re-exports these names lazily (importing ``maskgit`` stays light).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from maskgit.decoding import IterativeDecoder
from maskgit.inpainting import InpaintResult
from maskgit.modules.maskgit import MaskGitModule
from maskgit.photo import (
    PhotoFill,
    PhotoInput,
    check_unit_range,
    paste_fill,
    read_missing,
    read_photo,
    to_model,
    window_around,
)
from maskgit.samplers import make_sampler
from maskgit.schedules import get_schedule

_NOISE_SAMPLERS = ("confidence", "lab", "margin", "entropy")
_DECODER_OPTIONS = [
    name for name in inspect.signature(IterativeDecoder).parameters if name != "schedule"
]


def image_size(model: MaskGitModule) -> int:
    """The side of the square images ``model`` inpaints (64 for the shipped model)."""
    return model.token_grid * model.tokenizer.downsample_factor


def decoder_for(model: MaskGitModule | None = None, **options: Any) -> IterativeDecoder:
    """The project's decoding defaults (``IterativeDecoder``'s, the same as evaluate.py's,
    with the cosine schedule and the confidence sampler) with ``options`` overriding them,
    e.g. ``total_iter=12``, ``schedule="square"`` (a name or a gamma function),
    ``sweet_spot=4``, ``sampler="halton"`` (a name or a ``Sampler``). ``model`` is accepted
    for symmetry; the settings do not depend on it."""
    unknown = sorted(set(options) - set(_DECODER_OPTIONS) - {"schedule"})
    if unknown:
        raise TypeError(
            f"unknown decoding option(s) {unknown}; expected some of "
            f"{['schedule', *_DECODER_OPTIONS]}"
        )
    settings: dict[str, Any] = {"schedule": "cosine", **options}
    if isinstance(settings["schedule"], str):
        settings["schedule"] = get_schedule(settings["schedule"])
    name = settings.get("sampler")
    if isinstance(name, str):  # the confidence family takes the noise options too
        noise = {k: settings[k] for k in ("choice_temperature", "noise") if k in settings}
        settings["sampler"] = make_sampler(name, **(noise if name in _NOISE_SAMPLERS else {}))
    return IterativeDecoder(**settings)


def _as_image(image: Tensor) -> Tensor:
    """A tensor [3,H,W]: float in [0,1], or uint8 in [0,255] (scaled). A float tensor outside
    [0,1] (e.g. [0,255]) is an error: the output would be on its scale."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a tensor [3,H,W] in [0,1], got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise ValueError(f"image: expected a float tensor in [0,1] or uint8, got {image.dtype}")
    check_unit_range(float(image.min()), float(image.max()), "image")
    return image.float()


def _from_uint8(pixels: np.ndarray) -> Tensor:
    """[H,W,3] uint8 -> [3,H,W] float in [0,1]."""
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)


def decode_window(
    model: MaskGitModule,
    image: Tensor,
    known: Tensor,
    decoder: IterativeDecoder,
    *,
    seed: int = 0,
    num_samples: int = 1,
    return_steps: bool = False,
) -> InpaintResult:
    """K = ``num_samples`` fills of one model-sized image [3,s,s] with mask [1,s,s] (1 =
    known), in one batch: fill k is the one ``seed + k`` gives alone."""
    device = next(model.parameters()).device
    images = image.unsqueeze(0).expand(num_samples, -1, -1, -1).to(device)
    masks = known.unsqueeze(0).expand(num_samples, -1, -1, -1).to(device)
    keys = torch.zeros(num_samples, dtype=torch.long)  # one image: one key
    seeds = torch.arange(seed, seed + num_samples)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model.inpaint(images, masks, keys, decoder, seeds, return_steps)
    finally:
        model.train(was_training)


def inpaint_photo(
    model: MaskGitModule,
    photo: PhotoInput,
    mask: PhotoInput | None = None,
    *,
    missing: np.ndarray | None = None,
    seed: int = 0,
    num_samples: int = 1,
    decoder: IterativeDecoder | None = None,
    return_steps: bool = False,
    **decoding: Any,
) -> PhotoFill:
    """Fill the hole of a photo of any size: ``mask`` of the photo's size (white / 1 =
    known) or ``missing`` (bool [H,W], True = missing). Returns 8-bit fills at the photo's
    size in which every known pixel equals the photo's (``maskgit.photo``)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if decoder is not None and decoding:
        raise TypeError(f"pass decoder= or decoding options ({sorted(decoding)}), not both")
    decoder = decoder or decoder_for(model, **decoding)
    pixels = read_photo(photo)
    size_wh = (pixels.shape[1], pixels.shape[0])
    if (mask is None) == (missing is None):
        raise TypeError("pass one of mask= (a mask of the photo's size) or missing=")
    if missing is None:
        missing = read_missing(mask, size_wh)
    elif missing.shape != pixels.shape[:2]:
        raise ValueError(
            f"missing: {missing.shape[1]}x{missing.shape[0]}, expected the photo's "
            f"{size_wh[0]}x{size_wh[1]}"
        )
    if not missing.any():
        raise ValueError("the mask has no missing pixel: nothing to inpaint")
    window = window_around(missing)
    image, known = to_model(pixels, missing, window, image_size(model))
    result = decode_window(
        model, image, known, decoder, seed=seed, num_samples=num_samples,
        return_steps=return_steps,
    )  # fmt: skip
    fills = [paste_fill(pixels, missing, window, fill) for fill in result.images]
    return PhotoFill(
        photo=pixels, missing=missing, fills=fills, window=window,
        model_input=image, model_known=known, step_masks=result.step_masks,
        step_images=result.step_images,
    )  # fmt: skip


def inpaint(
    model: MaskGitModule,
    image: PhotoInput,
    mask: PhotoInput,
    *,
    seed: int = 0,
    num_samples: int = 1,
    decoder: IterativeDecoder | None = None,
    **decoding: Any,
) -> Tensor:
    """Inpaint ``image`` where ``mask`` is missing; returns [3,H,W] in [0,1] at the image's
    own size (on the CPU), or [K,3,H,W] for ``num_samples=K`` (seeds seed..seed+K-1).

    ``image``: a file (any format the evaluation reads), a PIL image, a numpy array [H,W,3]
    (uint8, or float in [0,1]) or a tensor [3,H,W] (float in [0,1], or uint8). ``mask``: of
    the image's size, a file or PIL image (white = known, black = missing), or an array /
    tensor [H,W] / [1,H,W] (1 / True = known). Every known pixel of the output equals the
    input's. An image of the model's size (:func:`image_size`) is decoded as it is; any
    other size is inpainted in a square window around the hole at the model's resolution
    and the fill pasted back (:func:`inpaint_photo`). ``decoder``, or ``decoding`` options
    overriding the defaults (:func:`decoder_for`), choose how; ``seed`` fixes the noise.
    """
    if decoder is not None and decoding:
        raise TypeError(f"pass decoder= or decoding options ({sorted(decoding)}), not both")
    decoder = decoder or decoder_for(model, **decoding)
    size = image_size(model)
    # A tensor keeps its own values (float ones included); anything else is read once, 8-bit.
    image = _as_image(image) if isinstance(image, Tensor) else read_photo(image, "image")
    height, width = image.shape[-2:] if isinstance(image, Tensor) else image.shape[:2]
    if (height, width) == (size, size):  # decoded as it is
        pixels = image if isinstance(image, Tensor) else _from_uint8(image)
        known = torch.from_numpy(~read_missing(mask, (size, size))).float().unsqueeze(0)
        result = decode_window(model, pixels, known, decoder, seed=seed, num_samples=num_samples)
        images = result.images.float().cpu()
    else:
        missing = read_missing(mask, (width, height))
        original = image if isinstance(image, Tensor) else None
        if not missing.any():
            warnings.warn("mask: no missing pixel; the image is returned unchanged", stacklevel=2)
            same = original if original is not None else _from_uint8(image)
            return same if num_samples == 1 else same.expand(num_samples, -1, -1, -1).clone()
        fill = inpaint_photo(
            model, image, missing=missing, seed=seed, num_samples=num_samples, decoder=decoder
        )
        images = torch.stack([_from_uint8(f) for f in fill.fills])
        if original is not None:  # float input: its known values, not their 8-bit ones
            images = torch.where(torch.from_numpy(~missing), original, images)
    return images[0] if num_samples == 1 else images
