"""FID set-up (torchmetrics' FrechetInceptionDistance) that works offline.

torchmetrics downloads the TF-FID Inception weights on first use; machines without network
pass the file instead (``feature_extractor_weights_path``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

log = logging.getLogger(__name__)

WEIGHTS_HINT = (
    "FID needs the TF-FID Inception weights: set metrics.fid.weights_path=<path to "
    "weights-inception-2015-12-05-6726825d.pth> (the project's ../shared/models/inception/ has "
    "it), or allow torchmetrics to download it"
)


class FIDUnavailableError(RuntimeError):
    """No Inception weights and no way to get them."""


def frechet_distance(mean_real: Tensor, cov_real: Tensor, fake: Tensor) -> Tensor:
    """FID between N(mean_real, cov_real) and the Gaussian fitted to the rows of ``fake`` [n,d].

    tr sqrt(C_r C_f) is taken from the eigenvalues of X C_r X^T (X: the centred fake features
    over sqrt(n-1)), which are the non-zero eigenvalues of C_r C_f: exact, symmetric, and
    n x n instead of d x d — seconds instead of minutes for 2048-d Inception features on a
    CPU. With n > d the d x d form sqrt(C_r) C_f sqrt(C_r) is used instead.
    """
    n, d = fake.shape
    if n < 2:
        raise ValueError("FID needs at least two fake images")
    mean_fake = fake.mean(0)
    centred = (fake - mean_fake) / math.sqrt(n - 1)
    if n <= d:
        eigenvalues = torch.linalg.eigvalsh(centred @ cov_real @ centred.t())
    else:
        values, vectors = torch.linalg.eigh(cov_real)
        root = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.t()
        eigenvalues = torch.linalg.eigvalsh(root @ (centred.t() @ centred) @ root)
    trace_sqrt = eigenvalues.clamp_min(0).sqrt().sum()
    distance = (mean_real - mean_fake).square().sum()
    return distance + cov_real.trace() + centred.square().sum() - 2 * trace_sqrt


class BucketedFID(FrechetInceptionDistance):
    """torchmetrics' FID that also gives the FID of each group of fake images (e.g. hole-area
    bucket) against all the real ones. Fake features are kept per image (gathered across DDP
    ranks), which also makes compute() exact and fast through :func:`frechet_distance`."""

    def __init__(self, feature: int | nn.Module = 2048, **kwargs) -> None:
        super().__init__(feature=feature, normalize=True, **kwargs)
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.add_state("fake_groups", [], dist_reduce_fx="cat")

    def update(self, imgs: Tensor, real: bool, groups: Tensor | None = None) -> None:
        """imgs [B,3,H,W] float in [0,1]; groups [B] int ids of the fake images' groups."""
        if not self.used_custom_model:
            imgs = (imgs * 255).byte()
        features = self.inception(imgs).double()
        if features.dim() == 1:
            features = features.unsqueeze(0)
        self.orig_dtype = features.dtype
        if real:
            self.real_features_sum += features.sum(0)
            self.real_features_cov_sum += features.t().mm(features)
            self.real_features_num_samples += imgs.shape[0]
            return
        self.fake_features_sum += features.sum(0)
        self.fake_features_cov_sum += features.t().mm(features)
        self.fake_features_num_samples += imgs.shape[0]
        if groups is None:
            groups = torch.full((features.shape[0],), -1)
        self.fake_features.append(features)
        self.fake_groups.append(groups.to(features.device).long())

    def _real_statistics(self) -> tuple[Tensor, Tensor]:
        n_real = self.real_features_num_samples
        if n_real < 2:
            raise ValueError("FID needs at least two real images")
        mean = self.real_features_sum / n_real
        cov = (self.real_features_cov_sum - n_real * torch.outer(mean, mean)) / (n_real - 1)
        return mean, cov

    def compute(self) -> Tensor:
        # torchmetrics syncs the states across ranks before this runs.
        features = dim_zero_cat(self.fake_features)
        mean_real, cov_real = self._real_statistics()
        return frechet_distance(mean_real, cov_real, features.double()).float()

    def compute_groups(self, min_images: int = 2) -> dict[int, float]:
        """FID of each group's fake images against all real images (groups with enough images)."""
        # Unlike compute(), not synced by torchmetrics: gather every rank's features here.
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            features = dim_zero_cat(self.fake_features) if len(self.fake_features) else None
            groups = dim_zero_cat(self.fake_groups) if len(self.fake_groups) else None
            mean_real, cov_real = self._real_statistics()
        if features is None:
            return {}
        result = {}
        for group in groups.unique().tolist():
            selected = features[groups == group].double()
            if group < 0 or selected.shape[0] < min_images:
                continue
            result[group] = float(frechet_distance(mean_real, cov_real, selected))
        return result


def build_fid(
    weights_path: str | None = None,
    feature: int | nn.Module = 2048,
    antialias: bool = False,
    required: bool = True,
) -> BucketedFID | None:
    """FID with the TF-FID weights from ``weights_path`` when it exists.

    ``antialias=False`` resizes to 299 like the TF reference implementation. Without weights
    and network: an error naming the option (``required``), else a warning and None.
    """
    if isinstance(feature, nn.Module):
        return BucketedFID(feature=feature)
    path = Path(weights_path) if weights_path else None
    if path is not None and not path.is_file():
        log.warning("FID weights %s not found; trying torchmetrics' download", path)
        path = None
    try:
        return BucketedFID(
            feature=feature,
            feature_extractor_weights_path=str(path) if path else None,
            antialias=antialias,
        )
    except Exception as error:  # download failures surface as many exception types
        message = f"{WEIGHTS_HINT} ({type(error).__name__}: {error})"
        if required:
            raise FIDUnavailableError(message) from error
        log.warning("FID skipped: %s", message)
        return None
