"""Pictures of an inpainting: labelled step grids, input | masked | output strips, and the
frames of a decoding animation. 8-bit PIL images, scaled up with nearest neighbours so that
64x64 tiles stay readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from maskgit.atomic import atomic_write
from maskgit.inpainting import masked_input

PAD = 4
LABEL_HEIGHT = 14
WHITE = (255, 255, 255)


def to_pil(image: Tensor | np.ndarray, scale: int = 1) -> Image.Image:
    """[3,H,W] in [0,1] or [H,W,3] uint8 -> RGB image, scaled ``scale`` times (nearest)."""
    if isinstance(image, Tensor):
        array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
        image = array.cpu().numpy()
    picture = Image.fromarray(image)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return picture


def latent_mask_picture(token_mask: Tensor, size: int) -> Tensor:
    """A token mask [h,w] (True = masked) as an image [3,size,size]: black = masked."""
    mask = token_mask.float()[None, None]
    return 1.0 - F.interpolate(mask, size=size, mode="nearest")[0].expand(3, -1, -1)


def _font(size: int = 11) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled_row(tiles: list[Image.Image], labels: list[str]) -> Image.Image:
    """Tiles side by side, each with its label above it, on white."""
    width = sum(tile.width for tile in tiles) + PAD * (len(tiles) + 1)
    height = max(tile.height for tile in tiles) + LABEL_HEIGHT + 2 * PAD
    row = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(row)
    x = PAD
    for tile, label in zip(tiles, labels):
        draw.text((x, PAD // 2), label, fill=(0, 0, 0), font=_font())
        row.paste(tile, (x, PAD + LABEL_HEIGHT))
        x += tile.width + PAD
    return row


def stack_rows(rows: list[Image.Image]) -> Image.Image:
    width = max(row.width for row in rows)
    out = Image.new("RGB", (width, sum(row.height for row in rows)), WHITE)
    y = 0
    for row in rows:
        out.paste(row, (0, y))
        y += row.height
    return out


def step_grid(
    image: Tensor, pixel_mask: Tensor, step_masks: list[Tensor], step_images: list[Tensor],
    scale: int = 2,
) -> Image.Image:  # fmt: skip
    """Top row: the latent mask (black = masked) of the input and after each step; bottom
    row: the masked input, then the predicted image of each step; every tile labelled."""
    size = image.shape[-1]
    masks = [to_pil(latent_mask_picture(m, size), scale) for m in step_masks]
    predictions = [to_pil(masked_input(image, pixel_mask), scale)]
    predictions += [to_pil(p, scale) for p in step_images]
    names = ["input"] + [f"step {t}" for t in range(1, len(step_images) + 1)]
    return stack_rows(
        [
            labelled_row(masks, [f"{n}: tokens" for n in names]),
            labelled_row(predictions, [f"{n}: image" for n in names]),
        ]
    )


def strip(photo: Tensor | np.ndarray, masked: Tensor | np.ndarray, outputs: list, scale: int = 2):
    """photo | masked | output(s), labelled."""
    tiles = [to_pil(photo, scale), to_pil(masked, scale)] + [to_pil(o, scale) for o in outputs]
    labels = ["photo", "masked"] + (
        ["fill"] if len(outputs) == 1 else [f"fill {k}" for k in range(len(outputs))]
    )
    return labelled_row(tiles, labels)


def decoding_frames(
    image: Tensor, pixel_mask: Tensor, step_masks: list[Tensor], step_images: list[Tensor],
    scale: int = 4,
) -> list[Image.Image]:  # fmt: skip
    """One frame per state of the decoding: the latent mask beside the predicted image (the
    masked input for the first frame), labelled with the step."""
    size = image.shape[-1]
    pictures = [masked_input(image, pixel_mask), *step_images]
    total = len(step_images)
    return [
        labelled_row(
            [to_pil(latent_mask_picture(mask, size), scale), to_pil(picture, scale)],
            [f"tokens, step {t}/{total}", "image"],
        )
        for t, (mask, picture) in enumerate(zip(step_masks, pictures))
    ]


def save_picture(picture: Image.Image, path: str | Path) -> None:
    """A PNG, written atomically (``maskgit.atomic``)."""
    atomic_write(path, lambda file: picture.save(file, format="PNG"))


def save_animation(frames: list[Image.Image], path: str | Path, milliseconds: int = 500) -> None:
    """An animated GIF (WebP for a ``.webp`` name), looping, the last frame held 3x longer;
    written atomically."""
    durations = [milliseconds] * (len(frames) - 1) + [milliseconds * 3]
    kind = "WEBP" if Path(path).suffix.lower() == ".webp" else "GIF"
    atomic_write(
        path,
        lambda file: frames[0].save(
            file, format=kind, save_all=True, append_images=frames[1:], duration=durations, loop=0
        ),
    )
