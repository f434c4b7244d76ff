"""Encode a training set once with the frozen tokenizer and reuse the token grids.

The cache file name holds a fingerprint of the tokenizer's encoding weights and of the
images' names and bytes, so retraining the tokenizer or changing the data builds a new cache
instead of reusing a stale one, while copying the data elsewhere (new paths, new mtimes)
keeps the cache valid.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from rich.progress import track
from torch import Tensor
from torch.utils.data import DataLoader

from maskgit.checkpoints import save_atomic
from maskgit.data.datasets import ImageFolderDataset
from maskgit.fingerprint import tokenizer_fingerprint
from maskgit.models.vqgan import VQGAN

log = logging.getLogger(__name__)


def dataset_fingerprint(dataset: ImageFolderDataset) -> str:
    # File contents, not mtimes: a re-copied dataset keeps its cache. Hashing is far
    # cheaper than encoding (about a second for 8k small images).
    digest = hashlib.sha1(f"{dataset.image_size}".encode())
    for path in dataset.files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha1(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | Path, tokenizer: VQGAN, dataset: ImageFolderDataset) -> Path:
    name = f"tokens-{tokenizer_fingerprint(tokenizer)}-{dataset_fingerprint(dataset)}.pt"
    return Path(cache_dir) / name


@torch.inference_mode()
def encode_dataset(
    tokenizer: VQGAN,
    dataset: ImageFolderDataset,
    batch_size: int = 64,
    num_workers: int = 0,
    with_flips: bool = True,
) -> Tensor:
    """Token grids [M, V, h, w] (int16); V = 2 (image, horizontal flip) with flips.

    The dataset must serve the stored images: a randomly flipped view would make the
    cache depend on the RNG (the training views are drawn from V later).
    """
    if dataset.flip or dataset.masks is not None:
        raise ValueError(
            "token cache: encode the stored images (ImageFolderDataset without flip or "
            f"masks), got flip={dataset.flip}, masks={dataset.masks!r} for {dataset.root}"
        )
    was_training = tokenizer.training
    tokenizer.eval()
    device = tokenizer.pixel_mean.device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    grids = []
    for batch in track(loader, description="Encoding tokens", transient=True):
        images = batch["image"].to(device)
        views = [images, images.flip(-1)] if with_flips else [images]
        grids.append(torch.stack([tokenizer.tokenize(v) for v in views], 1).short().cpu())
    tokenizer.train(was_training)
    return torch.cat(grids)


def load_or_build(
    tokenizer: VQGAN,
    dataset: ImageFolderDataset,
    cache_dir: str | Path,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Tensor:
    path = cache_path(cache_dir, tokenizer, dataset)
    if path.exists():
        log.info("token cache: using %s", path)
        return torch.load(path, weights_only=True)
    log.info("token cache: encoding %d images into %s", len(dataset), path)
    tokens = encode_dataset(tokenizer, dataset, batch_size, num_workers)
    save_atomic(tokens, path)
    return tokens
