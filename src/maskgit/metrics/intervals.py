"""Uncertainty of a score: over noise seeds (a t-interval) and over which images were drawn
(a bootstrap that resamples images), and paired differences between two runs.

Two sources of uncertainty, two intervals:

- **Seeds** (``<name>_ci95``): the same images decoded with N noise seeds give N scores; the
  95 % Student-t interval of their mean says how much the decoding noise alone moves it.
  It covers re-running the evaluation with other seeds on *these* images.
- **Images** (``fid_ci95_images``): the test set is a sample of the photos one cares about.
  Resampling its images (real and inpainted together, with replacement) and recomputing
  the score from the cached Inception features gives a percentile interval (shifted by the
  bootstrap's own bias: repeated images inflate a resample's FID) that covers drawing
  another test set of the same size; no second Inception pass.

A paired comparison resamples the *same* image indices in both runs (same images, masks and
seeds), so what both runs share cancels and the interval of the difference is far narrower
than two independent intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor

LEVEL = 0.95
BOOTSTRAP_SEED = 0


def t_interval(values: Sequence[float], level: float = LEVEL) -> list[float] | None:
    """The Student-t interval of the mean of ``values`` (None under two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * spread / math.sqrt(n)
    return [mean - half, mean + half]


def percentile_interval(
    samples: Tensor, estimate: float | None = None, level: float = LEVEL
) -> list[float]:
    """The 2.5 / 97.5 percentiles of bootstrap ``samples``; with ``estimate`` (the score on
    all images) shifted by the bootstrap's bias, mean(samples) - estimate. FID needs that
    shift: a resample repeats images (about 63 % distinct), which inflates its FID by
    several points, so the raw percentiles can miss the estimate altogether."""
    levels = torch.tensor([0.5 - level / 2, 0.5 + level / 2], dtype=torch.float64)
    low, high = torch.quantile(samples.double(), levels)
    shift = 0.0 if estimate is None else float(samples.double().mean()) - estimate
    return [float(low) - shift, float(high) - shift]


def resample_counts(num_images: int, num: int, seed: int = BOOTSTRAP_SEED) -> Tensor:
    """[num, num_images] counts: how often each image is drawn in each bootstrap replicate."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(num_images, (num, num_images), generator=generator)
    counts = torch.zeros(num, num_images, dtype=torch.float64)
    return counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))


def weighted_fid(real: Tensor, fake: Tensor, counts: Tensor | None = None) -> float:
    """FID between the Gaussians fitted to the rows of ``real`` and ``fake`` [n,d], each row
    counted ``counts`` [n] times (the same rows of both: paired images; None: once).

    tr sqrt(C_r C_f) is the nuclear norm of W^1/2 A B^T W^1/2 / (n-1) (A, B: the centred
    features of the images drawn, W their counts): an eigen-decomposition of the drawn
    images' m x m matrix (m <= n distinct images), not of 2048 x 2048.
    """
    real, fake = real.double(), fake.double()
    if counts is None:
        counts = torch.ones(real.shape[0], dtype=torch.float64)
    drawn = counts > 0
    real, fake, weight = real[drawn], fake[drawn], counts[drawn].double()
    n = float(weight.sum())
    if n < 2:
        raise ValueError("FID needs at least two images")
    centred = []
    for features in (real, fake):
        mean = (weight[:, None] * features).sum(0) / n
        centred.append((features - mean, mean))
    (a, mean_real), (b, mean_fake) = centred
    root = weight.sqrt()[:, None]
    cross = (root * a) @ (root * b).t() / (n - 1)
    trace_sqrt = torch.linalg.eigvalsh(cross @ cross.t()).clamp_min(0).sqrt().sum()
    trace_real = (weight * a.square().sum(1)).sum() / (n - 1)
    trace_fake = (weight * b.square().sum(1)).sum() / (n - 1)
    distance = (mean_real - mean_fake).square().sum()
    return float(distance + trace_real + trace_fake - 2 * trace_sqrt)


def bootstrap(
    score: Callable[[Tensor | None], float], num_images: int, num: int, seed: int = BOOTSTRAP_SEED
) -> Tensor:
    """``score(counts)`` for ``num`` image resamples (counts [num_images] per replicate)."""
    return torch.tensor(
        [score(counts) for counts in resample_counts(num_images, num, seed)], dtype=torch.float64
    )


def seed_mean_fid(real: Tensor, fakes: Sequence[Tensor]) -> Callable[[Tensor | None], float]:
    """The score of a run with one fake set per seed: the mean of the seeds' FIDs."""
    real, fakes = real.double(), [fake.double() for fake in fakes]  # once, not per replicate
    return lambda counts: sum(weighted_fid(real, fake, counts) for fake in fakes) / len(fakes)


def seed_mean(values: Sequence[Tensor]) -> Callable[[Tensor | None], float]:
    """The score of a per-image metric over seeds: the (count-weighted) mean over images and
    seeds."""

    def score(counts: Tensor | None) -> float:
        stacked = torch.stack([v.double() for v in values]).mean(0)
        if counts is None:
            return float(stacked.mean())
        return float((stacked * counts).sum() / counts.sum())

    return score


@dataclass
class Resampled:
    """A run's score on all images and on each of the image resamples of
    :func:`resample_counts` (``num``, ``seed``): the same draws for every run, so two runs'
    replicates pair up."""

    value: float
    replicates: Tensor

    @classmethod
    def of(cls, score: Callable[[Tensor | None], float], num_images: int, num: int) -> Resampled:
        return cls(score(None), bootstrap(score, num_images, num))


def paired_difference(a: Resampled, b: Resampled) -> tuple[float, list[float]]:
    """A - B on all images, and the bias-corrected percentile interval of A - B over the
    image resamples, the same images drawn for both."""
    difference = a.value - b.value
    return difference, percentile_interval(a.replicates - b.replicates, difference)


def verdict(difference: float, interval: Sequence[float], lower_is_better: bool) -> str:
    """'A better', 'B better' or 'indistinguishable' (the interval holds 0)."""
    low, high = interval
    if low <= 0.0 <= high:
        return "indistinguishable"
    a_lower = high < 0.0
    return "A better" if a_lower == lower_is_better else "B better"
