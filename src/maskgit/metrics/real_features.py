"""A cache of the real images' Inception statistics, so FID's real side is computed once.

Every job of a sweep scores against the same real images; their features depend only on the
images' contents, the image size and the feature extractor's weights, which together key
the cache file. The cached statistics are exactly the ones a fresh pass would accumulate
(fp64 sums and the per-image features), so the FID is the same to the last digit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torchmetrics.utilities import dim_zero_cat

from maskgit.checkpoints import read_checkpoint, save_atomic
from maskgit.metrics.fid import BucketedFID

# v2: per-image keys, in key order; v3: features always fp32 (v2 files may hold bf16 ones)
FORMAT = "maskgit.fid_real_features.v3"


def _file_digest(path: Path, digest: hashlib._Hash) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def real_set_key(files: list[Path], image_size: int, weights_path: str | None, feature: int) -> str:
    """sha256 of the real images' bytes (in order), the size they are scored at, and the
    Inception weights' bytes and feature layer."""
    digest = hashlib.sha256(f"{FORMAT}:{image_size}:{feature}".encode())
    weights = Path(weights_path) if weights_path else None
    if weights is not None and weights.is_file():
        _file_digest(weights, digest)
    else:
        digest.update(b"torchmetrics-default-weights")
    for path in files:
        digest.update(f":{Path(path).name}:".encode())
        _file_digest(Path(path), digest)
    return digest.hexdigest()


def cache_file(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"real-{key[:32]}.pt"


def load_real_statistics(fid: BucketedFID, path: Path) -> None:
    """Put the cached real statistics into ``fid`` (call on one process only: DDP sums them)."""
    data = read_checkpoint(path)
    device = fid.real_features_sum.device
    fid.real_features_sum = data["sum"].to(device)
    fid.real_features_cov_sum = data["cov_sum"].to(device)
    fid.real_features_num_samples = data["num_samples"].to(device)
    fid.real_features = [data["features"].to(device)]
    fid.real_keys = [data["keys"].to(device)]


def save_real_statistics(fid: BucketedFID, path: Path) -> None:
    """The real statistics of every process (synced), written atomically."""
    with fid.sync_context(dist_sync_fn=fid.dist_sync_fn, should_sync=fid._to_sync):
        keys = dim_zero_cat(fid.real_keys).detach().cpu()
        order = keys.argsort(stable=True)
        data = {
            "format": FORMAT,
            "sum": fid.real_features_sum.detach().cpu(),
            "cov_sum": fid.real_features_cov_sum.detach().cpu(),
            "num_samples": torch.as_tensor(fid.real_features_num_samples).detach().cpu(),
            "features": dim_zero_cat(fid.real_features).detach().cpu()[order],
            "keys": keys[order],
        }
    save_atomic(data, path)
