"""Compare two finished evaluation folders pairwise: the difference of each metric with its
95 % interval over image resamples (the same images drawn for both runs), and a verdict.

    python -m maskgit.compare outputs/A outputs/B

Both runs must have scored the same images with the same masks (checked). Their seeds should
match too (``seed=``, ``num_seeds=``); where they do not, the comparison still runs and says
so. Each run's score is its mean over its seeds; the interval resamples images, so it covers
both which images were drawn and the decoding noise of each image's fills.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from maskgit.metrics.fid import MIN_GROUP_FID_IMAGES
from maskgit.metrics.intervals import (
    Resampled,
    paired_difference,
    seed_mean,
    seed_mean_fid,
    verdict,
)
from maskgit.metrics.per_image import PerImage, PerImageError, read_per_image

# Each compared metric and whether lower is better.
METRICS = {"fid": True, "psnr": False, "ssim": False, "l1": True}
DEFAULT_BOOTSTRAP = 100


class ComparisonError(ValueError):
    """Two runs that cannot be compared pairwise."""


@dataclass
class MetricComparison:
    metric: str
    a: float
    b: float
    difference: float  # a - b
    ci95: list[float]
    verdict: str  # "A better", "B better", "indistinguishable"
    lower_is_better: bool


def _common(keys_a: Tensor, keys_b: Tensor, what: str) -> Tensor:
    if not torch.equal(keys_a, keys_b):
        raise ComparisonError(
            f"the runs scored other images ({what}: {len(keys_a)} vs {len(keys_b)} keys, or "
            "other ones): a paired comparison needs the same test set"
        )
    return keys_a


def check_pairable(a: PerImage, b: PerImage) -> list[str]:
    """A ComparisonError where the runs scored other images or masks; notes otherwise."""
    notes = []
    if a.quality and b.quality:
        first_a, first_b = a.quality[0], b.quality[0]
        _common(first_a["keys"], first_b["keys"], "images with a hole")
        if not torch.equal(first_a["missing"], first_b["missing"]):
            raise ComparisonError("the runs used other masks: a paired comparison needs the same")
    if a.real_features is not None and b.real_features is not None:
        _common(a.real_keys, b.real_keys, "real images")
        if not torch.allclose(a.real_features, b.real_features, atol=1e-3):
            raise ComparisonError("the runs scored FID against other real images")
    if a.seeds != b.seeds:
        notes.append(f"seeds differ (A {a.seeds}, B {b.seeds}): their noise is not paired")
    return notes


def resampled(run: PerImage, metric: str, num: int) -> Resampled | None:
    """The run's score (mean over its seeds) on all images and on ``num`` image resamples;
    None where the run lacks the metric."""
    if metric == "fid":
        # Under MIN_GROUP_FID_IMAGES a resample holds too few distinct images for its FID
        # to mean anything (rank-deficient covariances): no FID verdict.
        if run.real_features is None or not run.fake:
            return None
        if run.real_features.shape[0] < MIN_GROUP_FID_IMAGES:
            return None
        score = seed_mean_fid(run.real_features, [f for _, f in run.fake.values()])
        return Resampled.of(score, run.real_features.shape[0], num)
    if not run.quality:
        return None
    score = seed_mean([rows[metric] for rows in run.quality.values()])
    return Resampled.of(score, run.quality[0]["keys"].shape[0], num)


def compare_scores(metric: str, a: Resampled, b: Resampled) -> MetricComparison:
    lower = METRICS[metric]
    difference, interval = paired_difference(a, b)
    return MetricComparison(
        metric=metric,
        a=a.value,
        b=b.value,
        difference=difference,
        ci95=interval,
        verdict=verdict(difference, interval, lower),
        lower_is_better=lower,
    )


def compare_runs(
    run_a: str | Path, run_b: str | Path, num: int = DEFAULT_BOOTSTRAP, metrics=tuple(METRICS)
) -> tuple[list[MetricComparison], list[str]]:
    a, b = read_per_image(run_a), read_per_image(run_b)
    notes = check_pairable(a, b)
    few = a.real_features is not None and a.real_features.shape[0] < MIN_GROUP_FID_IMAGES
    if "fid" in metrics and few:
        notes.append(
            f"no FID verdict: {a.real_features.shape[0]} images, fewer than "
            f"{MIN_GROUP_FID_IMAGES} (a resample's FID would mean little)"
        )
    rows = []
    for metric in metrics:
        score_a, score_b = resampled(a, metric, num), resampled(b, metric, num)
        if score_a is not None and score_b is not None:
            rows.append(compare_scores(metric, score_a, score_b))
    return rows, notes


def format_comparison(
    rows: list[MetricComparison], notes: list[str], run_a: str | Path, run_b: str | Path
) -> str:
    lines = [f"A: {run_a}", f"B: {run_b}", ""]
    lines += [
        "| metric | A | B | A - B | 95 % interval (images resampled, paired) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        better = "lower" if row.lower_is_better else "higher"
        lines.append(
            f"| {row.metric} ({better} is better) | {row.a:.4f} | {row.b:.4f} | "
            f"{row.difference:+.4f} | [{row.ci95[0]:+.4f}, {row.ci95[1]:+.4f}] | {row.verdict} |"
        )
    lines += ["", *[f"note: {note}" for note in notes]]
    headline = next((row for row in rows if row.metric == "fid"), rows[0] if rows else None)
    if headline is not None:
        lines.append(
            f"verdict ({headline.metric}): {headline.verdict}"
            + ("" if headline.verdict == "indistinguishable" else " (the interval excludes 0)")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskgit.compare", description=__doc__)
    parser.add_argument("run_a", type=Path, help="an evaluate.py output folder")
    parser.add_argument("run_b", type=Path, help="another one, on the same images and masks")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="image resamples")
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    try:
        rows, notes = compare_runs(args.run_a, args.run_b, args.bootstrap)
    except (PerImageError, ComparisonError) as error:
        parser.exit(2, f"error: {error}\n")
    print(format_comparison(rows, notes, args.run_a, args.run_b))
    if args.json:
        args.json.write_text(
            json.dumps({"rows": [asdict(r) for r in rows], "notes": notes}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
