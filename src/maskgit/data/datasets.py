"""Datasets: image folders, (image, mask) pairs for inpainting, cached token grids."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from maskgit.data.images import list_images, load_image, require_unique_stems
from maskgit.data.masks import MaskSource
from maskgit.data.sampling import SampleKey, coin_flip, split_key


class ImageFolderDataset(Dataset):
    """Images of a folder as [3,S,S] tensors in [0,1]; optional random horizontal flips.

    With ``masks`` every image also gets a mask (freshly drawn when the source is unseeded:
    inpainting-shaped training masks).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        flip: bool = False,
        resize: bool = True,
        masks: MaskSource | None = None,
    ) -> None:
        self.root = Path(root)
        self.files = list_images(self.root)
        self.image_size = image_size
        self.flip = flip
        self.resize = resize
        self.masks = masks

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Tensor | int]:
        index, seed = split_key(key)
        image = load_image(self.files[index], self.image_size, self.resize)
        if self.flip and coin_flip(seed):
            image = image.flip(-1)
        item: dict[str, Tensor | int] = {"image": image, "index": index}
        if self.masks is not None:
            stem = self.files[index].stem
            item["mask"] = self.masks.mask(index, stem, self.image_size, draw_seed=seed)
        return item


class InpaintingDataset(Dataset):
    """(image, pixel mask) pairs; mask 1 = known pixel, 0 = missing."""

    def __init__(
        self,
        root: str | Path,
        masks: MaskSource,
        image_size: int,
        limit: int | None = None,
        resize: bool = True,
    ) -> None:
        self.root = Path(root)
        files = list_images(self.root)
        require_unique_stems(files, f"image folder {str(self.root)!r}")
        masks.check_pairs([p.stem for p in files])
        self.files = files[:limit] if limit else files
        self.masks = masks
        self.image_size = image_size
        self.resize = resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor | int | str]:
        path = self.files[index]
        image = load_image(path, self.image_size, self.resize)
        mask = self.masks.mask(index, path.stem, self.image_size)
        return {"image": image, "mask": mask, "index": index, "name": path.stem}


class TokenDataset(Dataset):
    """Cached token grids [M, V, h, w] (V views: image, flipped image), one view per draw.

    ``flip=False`` serves the stored image's view alone (as ``ImageFolderDataset`` would).
    ``images`` (the stored images the tokens were encoded from) adds the drawn view's image:
    with inpainting masks, training re-encodes it with the hole hidden, as inference does.
    """

    def __init__(
        self,
        tokens: Tensor,
        masks: MaskSource | None = None,
        image_size: int = 64,
        flip: bool = True,
        images: ImageFolderDataset | None = None,
    ) -> None:
        if images is not None and len(images) != tokens.shape[0]:
            raise ValueError(
                f"token cache has {tokens.shape[0]} grids but {images.root} has {len(images)} "
                "images"
            )
        self.tokens = tokens
        self.masks = masks
        self.image_size = image_size
        self.flip = flip
        self.images = images

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, key: int | SampleKey) -> dict[str, Tensor | int]:
        index, seed = split_key(key)
        views = self.tokens[index]
        # Views are (image, flipped image): a coin flip picks one, as image flips would.
        view = int(coin_flip(seed)) if self.flip and views.shape[0] == 2 else 0
        item: dict[str, Tensor | int] = {"tokens": views[view].long(), "index": index}
        if self.images is not None:
            image = self.images[index]["image"]
            item["image"] = image.flip(-1) if view else image
        if self.masks is not None:
            stem = self.images.files[index].stem if self.images is not None else str(index)
            item["mask"] = self.masks.mask(index, stem, self.image_size, draw_seed=seed)
        return item
