"""FID set-up (torchmetrics' FrechetInceptionDistance) that works offline.

torchmetrics downloads the TF-FID Inception weights on first use; machines without network
pass the file instead (``feature_extractor_weights_path``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

log = logging.getLogger(__name__)

WEIGHTS_HINT = (
    "FID needs the TF-FID Inception weights: set metrics.fid.weights_path=<path to "
    "weights-inception-2015-12-05-6726825d.pth> (the project's ../shared/models/inception/ has "
    "it), or allow torchmetrics to download it"
)


class FIDUnavailableError(RuntimeError):
    """No Inception weights and no way to get them."""


class BucketedFID(FrechetInceptionDistance):
    """FID over all images, plus FID of the fake images of each group (e.g. hole-area bucket)
    against all the real ones. Features are extracted once per image."""

    def __init__(self, feature: int | nn.Module = 2048, **kwargs) -> None:
        super().__init__(feature=feature, normalize=True, **kwargs)
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.add_state("fake_groups", [], dist_reduce_fx="cat")

    def update(self, imgs: Tensor, real: bool, groups: Tensor | None = None) -> None:
        """imgs [B,3,H,W] float in [0,1]."""
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
        if groups is not None:
            self.fake_features.append(features.float())
            self.fake_groups.append(groups.to(features.device).long())

    def compute_groups(self, min_images: int = 2) -> dict[int, float]:
        """FID of each group's fake images against all real images (groups with enough images)."""
        # Unlike compute(), not synced by torchmetrics: gather every rank's features here.
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            features, groups = self.fake_features, self.fake_groups
            n_real = self.real_features_num_samples
            real_sum, real_cov_sum = self.real_features_sum, self.real_features_cov_sum
        if isinstance(features, list):
            if not features:
                return {}
            features, groups = torch.cat(features), torch.cat(groups)
        mean_real = (real_sum / n_real).unsqueeze(0)
        cov_real = (real_cov_sum - n_real * mean_real.t().mm(mean_real)) / (n_real - 1)
        result = {}
        for group in groups.unique().tolist():
            group_features = features[groups == group].double()
            if group_features.shape[0] < min_images:
                continue
            mean = group_features.mean(0)
            cov = torch.cov(group_features.t())
            result[group] = float(_compute_fid(mean_real.squeeze(0), cov_real, mean, cov))
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
