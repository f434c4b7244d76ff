"""Sources of inpainting masks: files paired by stem, seeded generators, the lab's layout.

Every source returns float [1,H,W] masks with 1 = known pixel, 0 = missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from maskgit.data.images import list_images, load_mask, require_unique_stems

MaskKind = Literal["boxes", "strokes", "mixed", "half", "center"]


class MaskSource:
    """A mask per image index (and file stem)."""

    def mask(self, index: int, stem: str, size: int, draw_seed: int | None = None) -> Tensor:
        """``draw_seed`` seeds a fresh draw of an unseeded generator (training samplers)."""
        raise NotImplementedError

    def check_pairs(self, stems: list[str]) -> None:
        """Raise when images and masks do not pair up (nothing to check for generators)."""


class FolderMasks(MaskSource):
    """Mask files paired with images by file stem (``val/00010.jpg`` <-> ``val_masks/00010.png``)."""

    def __init__(self, root: str | Path, invert: bool = False) -> None:
        self.root = Path(root)
        self.invert = invert
        files = list_images(self.root, "mask folder")
        require_unique_stems(files, f"mask folder {str(self.root)!r}")
        self.by_stem = {p.stem: p for p in files}

    def check_pairs(self, stems: list[str]) -> None:
        images = set(stems)
        no_mask = sorted(images - self.by_stem.keys())
        no_image = sorted(self.by_stem.keys() - images)
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(f"{len(no_mask)} image(s) without a mask, e.g. {no_mask[:5]}")
            if no_image:
                parts.append(f"{len(no_image)} mask(s) without an image, e.g. {no_image[:5]}")
            raise FileNotFoundError(
                f"images and masks in {str(self.root)!r} do not pair up by file stem: "
                + "; ".join(parts)
            )

    def mask(self, index: int, stem: str, size: int, draw_seed: int | None = None) -> Tensor:
        return load_mask(self.by_stem[stem], size, self.invert)


class GeneratedMasks(MaskSource):
    """Random holes: boxes, free-form brush strokes, a mixture, or half-image outpainting.

    With a ``seed`` each index always gets the same mask (fixed validation masks); with
    ``seed=None`` every call draws a new one (training).
    """

    def __init__(
        self,
        kind: MaskKind = "mixed",
        hole_range: tuple[float, float] = (0.08, 0.6),
        box_share: float = 0.3,
        seed: int | None = 0,
    ) -> None:
        if kind not in ("boxes", "strokes", "mixed", "half", "center"):
            raise ValueError(
                f"mask kind must be boxes, strokes, mixed, half or center, got {kind!r}"
            )
        low, high = hole_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"hole_range must satisfy 0 <= low <= high <= 1, got {hole_range}")
        self.kind = kind
        self.hole_range = (float(low), float(high))
        self.box_share = box_share
        self.seed = seed

    def _rng(self, index: int, draw_seed: int | None) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng([self.seed, index])
        return np.random.default_rng(draw_seed)  # None: fresh OS entropy

    def mask(self, index: int, stem: str, size: int, draw_seed: int | None = None) -> Tensor:
        rng = self._rng(index, draw_seed)
        kind = self.kind
        if kind == "mixed":
            kind = "boxes" if rng.random() < self.box_share else "strokes"
        target = rng.uniform(*self.hole_range)
        missing = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(missing)
        if kind == "half":
            side = rng.integers(4)
            half = size // 2
            last = size - 1
            halves = [
                (0, 0, half - 1, last),
                (half, 0, last, last),
                (0, 0, last, half - 1),
                (0, half, last, last),
            ]
            draw.rectangle(halves[side], fill=255)
        elif kind == "center":
            side = round(size * math.sqrt(target))
            start = (size - side) // 2
            draw.rectangle((start, start, start + side - 1, start + side - 1), fill=255)
        elif kind == "boxes":
            n_boxes = int(rng.integers(1, 3))
            for _ in range(n_boxes):
                area = target / n_boxes * size * size
                aspect = rng.uniform(0.5, 2.0)
                w = int(np.clip(round(math.sqrt(area * aspect)), 2, size))
                h = int(np.clip(round(math.sqrt(area / aspect)), 2, size))
                x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
                draw.rectangle((x, y, x + w - 1, y + h - 1), fill=255)
        else:
            self._strokes(draw, missing, rng, size, target)
        known = 1.0 - torch.from_numpy(np.asarray(missing, dtype=np.uint8) > 0).float()
        return known.unsqueeze(0)

    @staticmethod
    def _strokes(
        draw: ImageDraw.ImageDraw, canvas: Image.Image, rng: np.random.Generator, size: int,
        target: float,
    ) -> None:  # fmt: skip
        # Brush strokes: random walks of thick line segments until the hole reaches the target.
        for _ in range(64):
            width = int(rng.integers(4, 11))
            x, y = rng.uniform(0, size, 2)
            angle = rng.uniform(0, 2 * math.pi)
            points = [(x, y)]
            for _ in range(int(rng.integers(3, 8))):
                angle += rng.uniform(-1.2, 1.2)
                length = rng.uniform(size / 10, size / 4)
                x = float(np.clip(x + length * math.cos(angle), 0, size - 1))
                y = float(np.clip(y + length * math.sin(angle), 0, size - 1))
                points.append((x, y))
            draw.line(points, fill=255, width=width, joint="curve")
            if np.asarray(canvas).mean() / 255.0 >= target:
                break


class MaskMixture(MaskSource):
    """A weighted mixture of mask sources: each mask comes from one of them, drawn per index
    (with a ``seed``: the same source and mask for an index every time) or per draw
    (``seed=None``, training). ``large_holes()`` is the mixture of the large-hole failures."""

    def __init__(self, sources: dict[str, MaskSource], weights: dict[str, float],
                 seed: int | None = 0) -> None:  # fmt: skip
        if set(sources) != set(weights) or not sources:
            raise ValueError(
                f"mask mixture: sources {sorted(sources)} and weights {sorted(weights)} must "
                "name the same non-empty set"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(
                f"mask mixture weights must be >= 0 with a positive sum, got {weights}"
            )
        self.names = sorted(sources)
        self.sources = sources
        total = sum(weights.values())
        self.probabilities = np.array([weights[n] / total for n in self.names])
        self.seed = seed

    def mask(self, index: int, stem: str, size: int, draw_seed: int | None = None) -> Tensor:
        if self.seed is not None:
            rng = np.random.default_rng([self.seed, index, 7])
        else:
            rng = np.random.default_rng(draw_seed)
        name = self.names[int(rng.choice(len(self.names), p=self.probabilities))]
        sub_seed = None if self.seed is not None else int(rng.integers(2**31))
        return self.sources[name].mask(index, stem, size, draw_seed=sub_seed)


def large_holes(
    seed: int | None = 0,
    current_weight: float = 0.0,
    kind: MaskKind = "mixed",
    hole_range: tuple[float, float] = (0.08, 0.6),
) -> MaskMixture:
    """The failure case as masks: large free-form holes (40-70 % of the photo), half faces
    and large centre squares (40-60 %), in equal parts; with ``current_weight`` > 0 the usual
    masks (``kind`` and ``hole_range``, by default free-form and boxes of 8-60 %) join with
    that weight against 1 for each large kind. Seeded: a fixed val set; ``seed=None``: fresh
    draws for training."""
    sources: dict[str, MaskSource] = {
        "free_form": GeneratedMasks("strokes", (0.4, 0.7), seed=seed),
        "half": GeneratedMasks("half", (0.5, 0.5), seed=seed),
        "center": GeneratedMasks("center", (0.4, 0.6), seed=seed),
    }
    weights = {"free_form": 1.0, "half": 1.0, "center": 1.0}
    if current_weight > 0:
        sources["current"] = GeneratedMasks(kind, tuple(hole_range), seed=seed)
        weights["current"] = current_weight
    return MaskMixture(sources, weights, seed=seed)


def make_mask_source(
    folder: str | None = None,
    kind: MaskKind = "mixed",
    hole_range: tuple[float, float] = (0.08, 0.6),
    seed: int | None = 0,
    invert: bool = False,
) -> MaskSource:
    """Hydra entry point: masks from ``folder`` when given, else generated."""
    if folder:
        return FolderMasks(folder, invert=invert)
    return GeneratedMasks(kind=kind, hole_range=tuple(hole_range), seed=seed)
