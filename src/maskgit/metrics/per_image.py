"""``per_image.safetensors``: what an evaluation run keeps per image, so that two runs can be
compared pairwise (``maskgit.compare``, the sweep summary) without decoding or an Inception
pass again.

Tensors, all in the images' key (dataset index) order: ``real_keys`` and ``real_features``
[n,d]; per seed index k: ``fake_keys/k``, ``fake_features/k`` [n,d] (float32 Inception
features), and ``quality_keys/k``, ``psnr/k``, ``ssim/k``, ``l1/k``, ``missing/k`` for the
images with a hole. The header records the seeds. About 8 MB per seed for 1,000 images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from maskgit.atomic import atomic_write
from maskgit.metrics.inpainting import SCORES

PER_IMAGE_FILE = "per_image.safetensors"
FORMAT = "maskgit.per_image.v1"


class PerImageError(RuntimeError):
    """A run folder without usable per-image results."""


@dataclass
class PerImage:
    """One run's per-image results (see the module doc)."""

    seeds: list[int]
    real_keys: Tensor | None
    real_features: Tensor | None
    fake: dict[int, tuple[Tensor, Tensor]]  # seed index -> (keys, features)
    quality: dict[int, dict[str, Tensor]]  # seed index -> {keys, psnr, ssim, l1, missing}


def write_per_image(
    path: Path,
    features: tuple[Tensor, Tensor, dict[int, tuple[Tensor, Tensor]]] | None,
    quality: dict[int, dict[str, Tensor]],
    seeds: list[int],
) -> Path:
    """``features``: (real keys, real features, {seed index: (keys, fake features)}) from
    ``BucketedFID.per_image_features`` (None without FID)."""
    tensors: dict[str, Tensor] = {}
    if features is not None:
        real_keys, real, fakes = features
        tensors.update(real_keys=real_keys, real_features=real)
        for index, (keys, fake) in fakes.items():
            tensors[f"fake_keys/{index}"] = keys
            tensors[f"fake_features/{index}"] = fake
    for index, rows in quality.items():
        tensors[f"quality_keys/{index}"] = rows["keys"]
        for name in (*SCORES, "missing"):
            tensors[f"{name}/{index}"] = rows[name]
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    payload = save(tensors, metadata={"format": FORMAT, "seeds": json.dumps(seeds)})
    return atomic_write(path, lambda file: file.write(payload))


def read_per_image(run_dir: str | Path) -> PerImage:
    """The per-image results of an evaluation folder; a PerImageError naming the folder and
    what is missing."""
    path = Path(run_dir) / PER_IMAGE_FILE
    if not path.is_file():
        raise PerImageError(
            f"{run_dir}: no {PER_IMAGE_FILE} (a finished evaluate.py folder has one)"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise PerImageError(f"{path}: cannot be read ({error})") from error
    if metadata.get("format") != FORMAT:
        raise PerImageError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT}")
    seeds = json.loads(metadata["seeds"])
    fake, quality = {}, {}
    for index in range(len(seeds)):
        if f"fake_keys/{index}" in tensors:
            fake[index] = (tensors[f"fake_keys/{index}"], tensors[f"fake_features/{index}"])
        if f"quality_keys/{index}" in tensors:
            quality[index] = {"keys": tensors[f"quality_keys/{index}"]}
            for name in (*SCORES, "missing"):
                quality[index][name] = tensors[f"{name}/{index}"]
    return PerImage(
        seeds=seeds,
        real_keys=tensors.get("real_keys"),
        real_features=tensors.get("real_features"),
        fake=fake,
        quality=quality,
    )
