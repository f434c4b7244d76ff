"""Inpainting a photo of any size with a model that works at its own resolution (64x64).

The hole is inpainted in a square window around it, at the model's resolution: the window
is the largest square of the photo that is centred on the hole as far as the photo allows
(larger than the photo only when the hole is: the part outside the photo is treated as
missing). The fill is scaled back to the window's size and pasted into the original only
where the mask says, so the output keeps the photo's size and every known pixel of it.

Everything at the photo's resolution stays 8-bit (PIL / numpy): a 4096x4096 photo costs a
few of its own copies in memory, never a float tensor of its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from maskgit.data.images import ImageFileError, open_image, read_known, to_rgb
from maskgit.step_pictures import decoding_frames

PhotoInput = str | Path | Image.Image | np.ndarray | Tensor


@dataclass
class Window:
    """A square [left, left + side) x [top, top + side) of the photo (may reach outside)."""

    left: int
    top: int
    side: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.left + self.side, self.top + self.side)


@dataclass
class PhotoFill:
    """photo [H,W,3] uint8 and missing [H,W] bool (True = missing) as read; fills: K photos
    [H,W,3] uint8 at that size; window: where the model looked; model_input [3,s,s] and
    model_known [1,s,s]: the window at the model's resolution; step_masks [K,h,w] and
    step_images [K,3,s,s] per decoding state (when asked for)."""

    photo: np.ndarray
    missing: np.ndarray
    fills: list[np.ndarray]
    window: Window
    model_input: Tensor = field(repr=False)
    model_known: Tensor = field(repr=False)
    step_masks: list[Tensor] | None = None
    step_images: list[Tensor] | None = None

    def decoding_frames(self, sample: int = 0) -> list[Image.Image]:
        """The frames of fill ``sample``'s decoding at model resolution (latent mask and
        predicted image per step); needs ``return_steps=True``."""
        if self.step_masks is None or self.step_images is None:
            raise ValueError("no decoding steps: inpaint with return_steps=True")
        return decoding_frames(
            self.model_input, self.model_known, [m[sample] for m in self.step_masks],
            [s[sample].float() for s in self.step_images],
        )  # fmt: skip


def check_unit_range(low: float, high: float, what: str) -> None:
    """Float pixels must lie in [0, 1]: an image on the [0, 255] scale would come back on it."""
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{what}: float values must lie in [0, 1], got [{low:g}, {high:g}] (divide an "
            "image in [0, 255] by 255, or pass it as uint8)"
        )


def read_photo(photo: PhotoInput, what: str = "photo") -> np.ndarray:
    """A file, PIL image, array [H,W(,C)] (uint8, or float in [0,1]) or tensor [3,H,W] ->
    uint8 RGB array [H,W,3]. Grayscale, 16-bit and alpha images become 8-bit RGB as
    everywhere in the project (``maskgit.data.images.to_rgb``)."""
    if isinstance(photo, str | Path):
        path = Path(photo)
        if path.is_dir():
            raise ImageFileError(f"{path}: is a folder, expected an image file")
        if not path.exists():
            raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
        return np.asarray(to_rgb(open_image(path), path), dtype=np.uint8)
    if isinstance(photo, Image.Image):
        return np.asarray(to_rgb(photo, Path(f"<{what}: PIL image>")), dtype=np.uint8)
    if isinstance(photo, Tensor):
        if photo.dim() != 3 or photo.shape[0] != 3:
            raise ValueError(f"{what}: expected a tensor [3,H,W], got {tuple(photo.shape)}")
        photo = photo.detach().cpu().permute(1, 2, 0).numpy()
    if isinstance(photo, np.ndarray):
        array = photo[..., None].repeat(3, axis=-1) if photo.ndim == 2 else photo
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(
                f"{what}: expected an array [H,W], [H,W,3] or [H,W,4], got {photo.shape}"
            )
        array = array[..., :3]
        if array.dtype == np.uint8:
            return np.ascontiguousarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{what}: expected uint8 or float values in [0, 1], got {array.dtype}")
        check_unit_range(float(array.min()), float(array.max()), what)
        return np.round(array * 255.0).astype(np.uint8)
    raise TypeError(
        f"{what}: expected a file path, a PIL image, a numpy array or a tensor, got "
        f"{type(photo).__name__}"
    )


def read_missing(mask: PhotoInput, size: tuple[int, int], what: str = "mask") -> np.ndarray:
    """A mask of the photo's ``size`` (W, H) -> bool [H,W], True = missing. Files and PIL
    images: white (>= 128) = known, black = missing. Arrays and tensors: 1 / True / 255 =
    known, 0 = missing."""
    width, height = size
    if isinstance(mask, str | Path):
        path = Path(mask)
        if not path.exists():
            raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
        known = read_known(path)
        label = str(path)
    elif isinstance(mask, Image.Image):
        known = np.asarray(to_rgb(mask, Path(f"<{what}>")).convert("L")) >= 128
        label = what
    else:
        if isinstance(mask, Tensor):
            mask = mask.detach().cpu()
            mask = mask[0] if mask.dim() == 3 and mask.shape[0] == 1 else mask
            mask = mask.numpy()
        if not isinstance(mask, np.ndarray):
            raise TypeError(
                f"{what}: expected a file path, a PIL image, a numpy array or a tensor, got "
                f"{type(mask).__name__}"
            )
        if mask.ndim != 2:
            raise ValueError(f"{what}: expected [H,W] or [1,H,W] (1 = known), got {mask.shape}")
        if mask.dtype == np.bool_:
            known = mask
        elif mask.dtype == np.uint8 and mask.max() > 1:
            known = mask >= 128
        else:
            known = mask >= 0.5
        label = what
    if known.shape != (height, width):
        raise ValueError(
            f"{label}: mask is {known.shape[1]}x{known.shape[0]}, expected {width}x{height} "
            "(the photo's size)"
        )
    return ~known


def box_missing(size: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Missing pixels [H,W] of the boxes (x0, y0, x1, y1), pixel coordinates, x1 / y1
    exclusive; each must lie inside the photo and hold at least one pixel."""
    width, height = size
    missing = np.zeros((height, width), dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(
                f"box {x0},{y0},{x1},{y1}: expected 0 <= x0 < x1 <= {width} and "
                f"0 <= y0 < y1 <= {height} (the photo is {width}x{height})"
            )
        missing[y0:y1, x0:x1] = True
    return missing


def window_around(missing: np.ndarray) -> Window:
    """The largest square of the photo centred on the hole's bounding box as far as the photo
    allows; when the hole is larger than the photo's short side, a square of the hole's
    size that reaches outside the photo."""
    height, width = missing.shape
    rows, cols = np.nonzero(missing.any(axis=1))[0], np.nonzero(missing.any(axis=0))[0]
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(min(height, width), y1 - y0, x1 - x0)

    def start(low: int, high: int, extent: int) -> int:
        centred = round((low + high - side) / 2)
        if side <= extent:
            return min(max(centred, 0), extent - side)
        return min(max(centred, extent - side), 0)  # reaches out on both sides as needed

    return Window(start(x0, x1, width), start(y0, y1, height), side)


def to_model(photo: np.ndarray, missing: np.ndarray, window: Window, size: int):
    """The window at the model's resolution: image [3,s,s] in [0,1] and mask [1,s,s]
    (1 = known). A model pixel is missing when any photo pixel under it is, or when it lies
    outside the photo (PIL's crop fills the outside with 0: black, and "not inside")."""
    crop = Image.fromarray(photo).crop(window.box)
    hole = Image.fromarray(missing.astype(np.float32), mode="F").crop(window.box)
    inside = Image.fromarray(np.ones(missing.shape, np.float32), mode="F").crop(window.box)
    if window.side != size:
        crop = crop.resize((size, size), Image.BICUBIC)
        hole, inside = hole.resize((size, size), Image.BOX), inside.resize((size, size), Image.BOX)
    # BOX averages: > 0 = some missing pixel under it; < 1 inside = some pixel outside.
    known = (np.asarray(hole) <= 1e-6) & (np.asarray(inside) >= 1.0 - 1e-6)
    image = torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1)
    return image.float().div_(255.0), torch.from_numpy(known).float().unsqueeze(0)


def paste_fill(photo: np.ndarray, missing: np.ndarray, window: Window, fill: Tensor) -> np.ndarray:
    """The model's fill [3,s,s] in [0,1], scaled to the window and pasted where missing."""
    array = fill.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu()
    scaled = Image.fromarray(array.numpy())
    if window.side != fill.shape[-1]:
        scaled = scaled.resize((window.side, window.side), Image.BICUBIC)
    # The window's part inside the photo.
    height, width = missing.shape
    x0, y0 = max(window.left, 0), max(window.top, 0)
    x1, y1 = min(window.left + window.side, width), min(window.top + window.side, height)
    patch = np.asarray(scaled)[
        y0 - window.top : y1 - window.top, x0 - window.left : x1 - window.left
    ]
    out = photo.copy()
    region = out[y0:y1, x0:x1]
    hole = missing[y0:y1, x0:x1]
    region[hole] = patch[hole]
    return out
