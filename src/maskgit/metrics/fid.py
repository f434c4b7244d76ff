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
from torchmetrics.image.kid import poly_mmd
from torchmetrics.utilities import dim_zero_cat

from maskgit.checkpoints import read_checkpoint

log = logging.getLogger(__name__)

# A hole-area bucket gets an FID only from this many inpainted images on. A bucket FID is
# only comparable with the same bucket of another run (same masks, same image count): FID's
# small-sample bias grows as 1/n and depends on the images, so it does not cancel between
# runs, and under 50 images (a fake covariance of rank <= 49 out of 2048 dimensions) it is
# expected to exceed the few FID points that separate decoding settings. Below it a bucket
# reports "n/a" for FID, its image count and the KID instead (an unbiased estimate at any
# size: torchmetrics' estimator, its subset size fitted to the bucket). A judgement call,
# not a measured cut-off.
MIN_GROUP_FID_IMAGES = 50
# KID subsets (torchmetrics' default, 100), drawn with a fixed seed: the same on every rank.
KID_SUBSETS = 100
NOT_AVAILABLE = "n/a"

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
    bucket) against all the real ones, and of each sample (noise seed) of the same images.
    Fake features are kept per image with the image's key and sample (gathered across DDP
    ranks), which also makes compute() exact and fast through :func:`frechet_distance`;
    compute() is the mean over samples."""

    def __init__(self, feature: int | nn.Module = 2048, **kwargs) -> None:
        super().__init__(feature=feature, normalize=True, **kwargs)
        if not self.used_custom_model:
            # Same fp32 features (to ~1e-6), and on a CPU the convolutions' fast path:
            # 1.4x the images/s of NCHW (benchmarks/speed.py, "FID features" row).
            self.inception.to(memory_format=torch.channels_last)
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.add_state("fake_groups", [], dist_reduce_fx="cat")
        self.add_state("fake_keys", [], dist_reduce_fx="cat")
        self.add_state("fake_samples", [], dist_reduce_fx="cat")
        # Per image too (the FID needs only their sums), for the KID of small groups.
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("real_keys", [], dist_reduce_fx="cat")
        self._warned_small_sample = False

    def reset(self) -> None:
        """torchmetrics' reset, which keeps the real statistics when
        ``reset_real_features`` is False; the real features per image are kept with them."""
        kept = (
            (list(self.real_features), list(self.real_keys))
            if not self.reset_real_features
            else None
        )
        super().reset()
        if kept is not None:
            self.real_features, self.real_keys = kept

    def update(
        self,
        imgs: Tensor,
        real: bool,
        groups: Tensor | None = None,
        keys: Tensor | None = None,
        sample: int = 0,
    ) -> None:
        """imgs [B,3,H,W] float in [0,1]; groups [B] int ids of the fake images' groups;
        keys [B] the images' ids (dataset indices), pairing real and fake features; sample:
        which noise seed of the same images the fake ones are."""
        if not self.used_custom_model:
            imgs = (imgs * 255).byte()
        # fp32 whatever the caller's autocast (a bf16-mixed Trainer): FID compares features
        # across runs, which must not depend on the run's precision.
        with torch.autocast(device_type=imgs.device.type, enabled=False):
            features = self.inception(imgs).double()
        if features.dim() == 1:
            features = features.unsqueeze(0)
        self.orig_dtype = features.dtype
        if keys is None:
            keys = torch.full((features.shape[0],), -1)
        keys = keys.to(features.device).long()
        if real:
            self.real_keys.append(keys)
            self.real_features_sum += features.sum(0)
            self.real_features_cov_sum += features.t().mm(features)
            self.real_features_num_samples += imgs.shape[0]
            self.real_features.append(features.float())
            return
        self.fake_features_sum += features.sum(0)
        self.fake_features_cov_sum += features.t().mm(features)
        self.fake_features_num_samples += imgs.shape[0]
        if groups is None:
            groups = torch.full((features.shape[0],), -1)
        self.fake_features.append(features)
        self.fake_groups.append(groups.to(features.device).long())
        self.fake_keys.append(keys)
        self.fake_samples.append(torch.full_like(keys, sample))

    def _real_statistics(self) -> tuple[Tensor, Tensor]:
        n_real = self.real_features_num_samples
        if n_real < 2:
            raise ValueError("FID needs at least two real images")
        mean = self.real_features_sum / n_real
        cov = (self.real_features_cov_sum - n_real * torch.outer(mean, mean)) / (n_real - 1)
        return mean, cov

    def small_sample_note(self) -> str | None:
        """Why the overall FID means little, or None: fewer real or fake images than the
        features have dimensions (2048 for Inception), the threshold below which the
        covariances are rank-deficient and the FID's upward bias is large."""
        dims = int(self.real_features_sum.numel())
        # A list of tensors before a DDP sync, one tensor after it.
        samples = self.fake_samples
        present = isinstance(samples, Tensor) or len(samples) > 0
        n_samples = max(1, len(dim_zero_cat(samples).unique())) if present else 1
        n_fake = int(self.fake_features_num_samples) // n_samples
        n_real = int(self.real_features_num_samples)
        if min(n_fake, n_real) >= dims:
            return None
        return (
            f"FID over {n_fake} inpainted and {n_real} real images, fewer than {dims} (the "
            f"dimension of its features, below which their covariance is rank-deficient): "
            f"biased upward, compare it only with FIDs over the same number of images"
        )

    def compute(self) -> Tensor:
        """The mean over samples of each sample's FID."""
        # torchmetrics syncs the states across ranks before this runs.
        per_sample = self._per_sample_fid(
            dim_zero_cat(self.fake_features), dim_zero_cat(self.fake_samples)
        )
        return torch.tensor(sum(per_sample.values()) / len(per_sample))

    def compute_per_sample(self) -> dict[int, float]:
        """Each sample's (noise seed's) FID over all its images."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            features, samples = dim_zero_cat(self.fake_features), dim_zero_cat(self.fake_samples)
            return self._per_sample_fid(features, samples)

    def _per_sample_fid(self, features: Tensor, samples: Tensor) -> dict[int, float]:
        mean_real, cov_real = self._real_statistics()
        note = self.small_sample_note()
        if note is not None and not self._warned_small_sample:
            self._warned_small_sample = True  # once per metric (not at every validation)
            log.warning(note)
        return {
            int(s): float(frechet_distance(mean_real, cov_real, features[samples == s].double()))
            for s in samples.unique().tolist()
        }

    def per_image_features(self) -> tuple[Tensor, Tensor, dict[int, tuple[Tensor, Tensor]]]:
        """(real keys [n], real features [n,d], {sample: (keys, features)}) gathered from
        every rank, each sorted by key: the rows that pair images across runs."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            real = dim_zero_cat(self.real_features).float()
            real_keys = dim_zero_cat(self.real_keys)
            fake = dim_zero_cat(self.fake_features).float()
            fake_keys, samples = dim_zero_cat(self.fake_keys), dim_zero_cat(self.fake_samples)
        order = real_keys.argsort(stable=True)
        per_sample = {}
        for sample in samples.unique().tolist():
            rows = (samples == sample).nonzero().flatten()
            rows = rows[fake_keys[rows].argsort(stable=True)]
            per_sample[int(sample)] = (fake_keys[rows].cpu(), fake[rows].cpu())
        return real_keys[order].cpu(), real[order].cpu(), per_sample

    def compute_group_scores(
        self, min_images: int = MIN_GROUP_FID_IMAGES, sample: int | None = None
    ) -> dict[int, dict[str, float | int | str | None]]:
        """Per group (e.g. hole-area bucket) of fake images, against all real images: the
        number of images (``fid_images``), the FID where the group has ``min_images`` or more
        (else "n/a") and, below that, the KID (``kid``, ``kid_std``; None under 2 images).
        ``sample``: of that sample's (noise seed's) images only (None: all)."""
        # Unlike compute(), not synced by torchmetrics: gather every rank's features here.
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            features = dim_zero_cat(self.fake_features) if len(self.fake_features) else None
            groups = dim_zero_cat(self.fake_groups) if len(self.fake_groups) else None
            samples = dim_zero_cat(self.fake_samples) if len(self.fake_samples) else None
            real = dim_zero_cat(self.real_features) if len(self.real_features) else None
            mean_real, cov_real = self._real_statistics()
        if features is None:
            return {}
        if sample is not None:
            features, groups = features[samples == sample], groups[samples == sample]
        result: dict[int, dict[str, float | int | str | None]] = {}
        for group in groups.unique().tolist():
            selected = features[groups == group].double()
            if group < 0:
                continue
            scores: dict[str, float | int | str | None] = {"fid_images": selected.shape[0]}
            if selected.shape[0] >= max(min_images, 2):
                scores["fid"] = float(frechet_distance(mean_real, cov_real, selected))
            else:
                scores["fid"] = NOT_AVAILABLE
                scores["kid"], scores["kid_std"] = kernel_inception_distance(real, selected)
            result[group] = scores
        return result

    def compute_groups(self, min_images: int = MIN_GROUP_FID_IMAGES) -> dict[int, float | str]:
        """FID of each group's fake images against all real images; "n/a" for a group of
        fewer than ``min_images`` (see :data:`MIN_GROUP_FID_IMAGES`)."""
        scores = self.compute_group_scores(min_images)
        return {group: row["fid"] for group, row in scores.items()}


def kernel_inception_distance(
    real: Tensor | None, fake: Tensor, subsets: int = KID_SUBSETS, seed: int = 0
) -> tuple[float | None, float | None]:
    """KID (mean, std over ``subsets``) as torchmetrics' KernelInceptionDistance computes it
    (cubic polynomial kernel, unbiased MMD^2 over equal-size subsets of real and fake
    features), with the subset size fitted to the smaller set; (None, None) under 2 images."""
    if real is None:
        return None, None
    size = min(real.shape[0], fake.shape[0])
    if size < 2:
        return None, None
    if size == real.shape[0] == fake.shape[0]:
        subsets = 1  # every "subset" is the whole of both sets: one estimate, std 0
    generator = torch.Generator().manual_seed(seed)
    real, fake = real.double(), fake.double()
    values = []
    for _ in range(subsets):
        pick_real = torch.randperm(real.shape[0], generator=generator)[:size]
        pick_fake = torch.randperm(fake.shape[0], generator=generator)[:size]
        values.append(poly_mmd(real[pick_real.to(real.device)], fake[pick_fake.to(fake.device)]))
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


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
    if path is not None:
        # torch-fidelity unpickles the file in full: read it weights-only first, so a file
        # that would run code is refused (CheckpointError naming the type) before that.
        read_checkpoint(path)
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
