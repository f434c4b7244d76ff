"""Reading image and mask files with errors that name the file and what was expected."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from maskgit.atomic import atomic_write

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


def require_unique_stems(files: list[Path], what: str) -> None:
    """Files named by stem (outputs ``<stem>.png``, masks paired by stem) need one file per
    stem: ``cat.jpg`` beside ``cat.png`` would silently share one output or one mask."""
    by_stem: dict[str, list[str]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path.name)
    clashes = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if clashes:
        shown = "; ".join(" and ".join(names) for names in list(clashes.values())[:5])
        raise ValueError(
            f"{what}: {len(clashes)} file name(s) shared by several files ({shown}): images "
            "and masks pair up, and outputs are named, by the name without its extension. "
            "Rename or remove one of each"
        )


def open_image(path: Path) -> Image.Image:
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


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _scale_16bit(image: Image.Image, path: Path) -> Image.Image:
    """16-bit (or 32-bit integer) grayscale -> 8-bit: PIL's own convert would clip at 255."""
    array = np.asarray(image).astype(np.int64)
    if array.min() < 0 or array.max() > 65535:
        raise ImageFileError(
            f"{path}: mode {image.mode} with values in [{array.min()}, {array.max()}]; "
            "expected 16-bit values in [0, 65535]"
        )
    return Image.fromarray(((array * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """Any mode PIL opens -> RGB, or an ImageFileError naming the file and its mode.

    EXIF orientation is applied; 16-bit grayscale is scaled to 8 bits; images with an alpha
    channel (or a palette with transparency) are composited on white with a warning.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _16BIT_MODES:
        image = _scale_16bit(image, path)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        warnings.warn(f"{path}: has an alpha channel; compositing it on white", stacklevel=3)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode == "F":
        raise ImageFileError(
            f"{path}: mode F (32-bit floating point) has no fixed value range; save it as an "
            "8- or 16-bit image"
        )
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageFileError(
            f"{path}: image mode {image.mode} cannot be converted to RGB ({error})"
        ) from error


def load_image(path: str | Path, size: int, resize: bool = True) -> Tensor:
    """Image file -> float tensor [3,size,size] in [0,1] (see ``to_rgb`` for the modes);
    other sizes are resized and center-cropped (``resize=False``: an error)."""
    path = Path(path)
    image = _fit(to_rgb(open_image(path), path), size, path, resize, Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def read_known(path: Path) -> np.ndarray:
    """A mask file's known pixels, bool [H,W] (white/255 = known). Other values than 0 and
    255 are binarised, >= 128 known, with a warning naming the file and their count."""
    values = np.asarray(to_rgb(open_image(path), path).convert("L"), dtype=np.uint8)
    grey = int(np.count_nonzero((values != 0) & (values != 255)))
    if grey:
        warnings.warn(
            f"{path}: {grey} mask pixel(s) are neither 0 nor 255; binarised: >= 128 known, "
            "< 128 missing",
            stacklevel=3,
        )
    return values >= 128


def load_mask(path: str | Path, size: int, invert: bool = False) -> Tensor:
    """Mask file (white/255 = known, black/0 = missing) -> float [1,size,size], 1 = known.

    A mask must already have the image's size: resizing would move the hole's border. Other
    values than 0 and 255 (anti-aliased or JPEG-compressed masks) are binarised to the
    nearer of the two, >= 128 known, with a warning naming the file and how many such
    pixels it has; a mask with no missing pixel gets a warning too.
    """
    path = Path(path)
    known_pixels = read_known(path)
    height, width = known_pixels.shape
    if (width, height) != (size, size):
        raise ImageFileError(
            f"{path}: mask is {width}x{height}, expected {size}x{size} (the size of its image)"
        )
    known = torch.from_numpy(known_pixels).float().unsqueeze(0)
    known = 1.0 - known if invert else known
    if bool((known == 1).all()):
        warnings.warn(f"{path}: mask has no missing pixel; nothing to inpaint", stacklevel=2)
    return known


def save_image(tensor: Tensor, path: str | Path, text: dict[str, str] | None = None) -> None:
    """[3,H,W] in [0,1] -> 8-bit PNG, written atomically (``maskgit.atomic``); ``text``
    becomes PNG text chunks (``read_png_text`` reads them back)."""
    array = tensor.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    atomic_write(path, lambda file: Image.fromarray(array).save(file, format="PNG", pnginfo=info))


def read_png_text(path: str | Path) -> dict[str, str]:
    """The text chunks of a PNG ({} when the file is missing or unreadable)."""
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}))
    except (OSError, UnidentifiedImageError, SyntaxError):
        return {}
