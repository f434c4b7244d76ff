"""Reading image and mask files with errors that name the file and what was expected."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageFileError(ValueError):
    """An image or mask file that cannot be used, with the reason."""


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Sorted image files of ``folder``; a clear error when it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(
            f"{what} {str(folder)!r} holds no images (expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageFileError(f"{path}: not a readable image file ({error})") from error
    return image


def _fit(image: Image.Image, size: int, path: Path, resize: bool, resample: int) -> Image.Image:
    if image.size == (size, size):
        return image
    if not resize:
        raise ImageFileError(
            f"{path}: image is {image.size[0]}x{image.size[1]}, expected {size}x{size}"
        )
    # Resize the short side, then center-crop: keeps the aspect ratio of non-square photos.
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: str | Path, size: int, resize: bool = True) -> Tensor:
    """RGB image file -> float tensor [3,size,size] in [0,1].

    Grayscale and palette images are converted (safe); RGBA is composited on white with a
    warning; other sizes are resized and center-cropped (``resize=False``: an error).
    """
    path = Path(path)
    image = _open(path)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        warnings.warn(f"{path}: has an alpha channel; compositing it on white", stacklevel=2)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = _fit(image.convert("RGB"), size, path, resize, Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def load_mask(path: str | Path, size: int, invert: bool = False) -> Tensor:
    """Mask file (white/255 = known, black/0 = missing) -> float [1,size,size], 1 = known.

    A mask must already have the image's size: resizing would move the hole's border.
    """
    path = Path(path)
    image = _open(path).convert("L")
    if image.size != (size, size):
        raise ImageFileError(
            f"{path}: mask is {image.size[0]}x{image.size[1]}, expected {size}x{size} "
            "(the size of its image)"
        )
    known = torch.from_numpy(np.asarray(image, dtype=np.uint8) >= 128).float().unsqueeze(0)
    return 1.0 - known if invert else known


def save_image(tensor: Tensor, path: str | Path) -> None:
    """[3,H,W] in [0,1] -> PNG, written atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = tensor.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
