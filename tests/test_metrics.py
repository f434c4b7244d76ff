"""Masked-region quality, codebook statistics, bucketed FID (tiny extractor and real Inception)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import FID_WEIGHTS, SAMPLE
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from maskgit.data.images import load_image
from maskgit.metrics.codebook import CodebookUsage
from maskgit.metrics.fid import (
    MIN_GROUP_FID_IMAGES,
    BucketedFID,
    FIDUnavailableError,
    build_fid,
    kernel_inception_distance,
)
from maskgit.metrics.inpainting import InpaintingQuality, area_bucket, bucket_name

SIZE = 32


def sample_images(count: int, size: int = SIZE) -> Tensor:
    files = sorted((SAMPLE / "val").iterdir())[:count]
    return torch.stack([load_image(f, size) for f in files])


def square_hole(side: int, top: int = 0, left: int = 0, size: int = SIZE) -> Tensor:
    """[1,size,size] pixel mask (1 known) with a side x side hole."""
    mask = torch.ones(1, size, size)
    mask[:, top : top + side, left : left + side] = 0.0
    return mask


# --- InpaintingQuality ---------------------------------------------------------------------


def test_identical_images_score_perfectly():
    images = sample_images(3)
    masks = torch.stack([square_hole(8), square_hole(12, 4, 4), square_hole(32)])
    metric = InpaintingQuality()
    metric.update(images, images, masks)
    scores = metric.compute()
    assert scores["psnr"] == pytest.approx(100.0)  # the 1e-10 MSE floor
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert scores["l1"] == 0.0


def test_scores_only_see_the_hole():
    target = sample_images(2)
    masks = torch.stack([square_hole(8, 2, 2), square_hole(8, 2, 2)])
    hole = masks.expand_as(target) == 0
    noisy = target.clone()
    noisy[hole] = (noisy[hole] + 0.2).clamp(0, 1)
    base = InpaintingQuality()
    base.update(noisy, target, masks)
    # A known pixel far (> the 11-pixel SSIM window) from the hole changes nothing.
    changed = noisy.clone()
    changed[:, :, 28:, 28:] = 1.0 - changed[:, :, 28:, 28:]
    other = InpaintingQuality()
    other.update(changed, target, masks)
    assert other.compute() == pytest.approx(base.compute(), rel=1e-6, abs=1e-9)
    # The same error inside the hole does change them.
    worse = noisy.clone()
    worse[hole] = 1.0 - target[hole]
    third = InpaintingQuality()
    third.update(worse, target, masks)
    assert third.compute()["psnr"] < base.compute()["psnr"] - 1.0
    assert third.compute()["l1"] > base.compute()["l1"]


def test_masked_psnr_value():
    target = torch.full((1, 3, SIZE, SIZE), 0.5)
    preds = target.clone()
    preds[:, :, :16] += 0.1  # error 0.1 over the top half; the hole is that half exactly
    mask = torch.ones(1, 1, SIZE, SIZE)
    mask[:, :, :16] = 0.0
    metric = InpaintingQuality()
    metric.update(preds, target, mask)
    assert metric.compute()["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert metric.compute()["l1"] == pytest.approx(0.1, abs=1e-6)


def test_bucket_counts_match_hole_sizes():
    # 8x8 of 32x32 = 6.25 %, 12x12 = 14.1 %, 16x16 = 25 %, full = 100 %, none = skipped.
    sides = [8, 12, 12, 16, 32, 0]
    images = sample_images(len(sides))
    masks = torch.stack([square_hole(side) for side in sides])
    assert area_bucket(masks).tolist() == [0, 1, 1, 2, 9, 0]
    metric = InpaintingQuality()
    metric.update((images + 0.05).clamp(0, 1), images, masks)
    buckets = metric.compute_buckets()
    assert {name: row["count"] for name, row in buckets.items()} == {
        "0-10%": 1,
        "10-20%": 2,
        "20-30%": 1,
        "90-100%": 1,
    }
    assert all({"psnr", "ssim", "l1"} <= row.keys() for row in buckets.values())
    assert bucket_name(0) == "0-10%" and bucket_name(9) == "90-100%"


def test_no_hole_gives_no_scores():
    images = sample_images(2)
    metric = InpaintingQuality()
    metric.update(images, images, torch.ones(2, 1, SIZE, SIZE))
    assert metric.compute() == {}
    assert metric.compute_buckets() == {}


# --- CodebookUsage -------------------------------------------------------------------------


def test_codebook_usage_and_perplexity():
    metric = CodebookUsage(num_codes=8)
    metric.update(torch.tensor([0, 0, 1, 2]))
    metric.update(torch.tensor([[0, 0], [1, 2]]))  # counts: 4, 2, 2 of 8 codes
    result = metric.compute()
    assert float(result["usage"]) == pytest.approx(3 / 8)
    assert float(result["perplexity"]) == pytest.approx(2**1.5)  # entropy 1.5 bits
    uniform = CodebookUsage(num_codes=8)
    uniform.update(torch.arange(8).repeat(5))
    assert float(uniform.compute()["usage"]) == 1.0
    assert float(uniform.compute()["perplexity"]) == pytest.approx(8.0)
    single = CodebookUsage(num_codes=8)
    single.update(torch.full((10,), 3))
    assert float(single.compute()["perplexity"]) == pytest.approx(1.0)


# --- BucketedFID with a tiny real feature extractor ------------------------------------------


class TinyFeatures(nn.Module):
    """Conv + ReLU + global pooling: [B,3,H,W] -> [B,4]."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, self.num_features, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x)).mean((2, 3))


@pytest.fixture(scope="module")
def images() -> Tensor:
    return sample_images(12)


def test_scores_and_features_are_fp32_under_a_bf16_autocast(images):
    """evaluate.py's Trainer runs bf16-mixed on bf16 hardware: the metrics must not. (SSIM in
    bf16 loses its local variances and came out about half the fp32 value.)"""
    fills = (images + 0.1 * torch.randn_like(images)).clamp(0, 1)
    mask = torch.ones_like(images[:, :1])
    mask[:, :, 8:24, 8:24] = 0

    def scores(autocast: bool) -> tuple[dict, Tensor]:
        quality, fid = InpaintingQuality(), BucketedFID(feature=TinyFeatures())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            quality.update(fills, images, mask)
            fid.update(images, real=True)
        return quality.compute(), torch.cat(fid.real_features)

    (plain, plain_features), (mixed, mixed_features) = scores(False), scores(True)
    assert plain.keys() == mixed.keys()
    for name, value in plain.items():
        assert torch.equal(torch.as_tensor(mixed[name]), torch.as_tensor(value)), name
    assert torch.equal(mixed_features, plain_features)


def test_fid_of_a_set_with_itself_is_zero(images):
    fid = build_fid(feature=TinyFeatures())
    assert isinstance(fid, BucketedFID)
    fid.update(images, real=True)
    fid.update(images, real=False)
    assert abs(float(fid.compute())) < 1e-6
    shifted = BucketedFID(feature=TinyFeatures())
    shifted.update(images, real=True)
    shifted.update((images + 0.3).clamp(0, 1), real=False)
    assert float(shifted.compute()) > 1e-4


def test_fid_groups(images):
    fid = BucketedFID(feature=TinyFeatures())
    fid.update(images, real=True)
    fid.update(images, real=False, groups=torch.zeros(12, dtype=torch.long))
    fid.update((images + 0.3).clamp(0, 1), real=False, groups=torch.ones(12, dtype=torch.long))
    fid.update(images[:1], real=False, groups=torch.tensor([7]))  # too few to score
    groups = fid.compute_groups(min_images=2)
    assert set(groups) == {0, 1, 7}
    assert abs(groups[0]) < 1e-6
    assert groups[1] > 1e-4
    assert groups[7] == "n/a"
    assert math.isfinite(float(fid.compute()))
    assert fid.compute_groups(min_images=13) == {0: "n/a", 1: "n/a", 7: "n/a"}
    plain = BucketedFID(feature=TinyFeatures())
    plain.update(images, real=True)
    plain.update(images, real=False)
    assert plain.compute_groups() == {}


def test_small_groups_report_kid_instead_of_fid():
    """FID from MIN_GROUP_FID_IMAGES (50) images on; below it "n/a", the count and the KID."""
    assert MIN_GROUP_FID_IMAGES == 50
    images = sample_images(64)
    fid = BucketedFID(feature=TinyFeatures())
    fid.update(images, real=True)
    fid.update(images[:50], real=False, groups=torch.zeros(50, dtype=torch.long))
    fid.update(images[50:], real=False, groups=torch.ones(14, dtype=torch.long))
    darker = (images[:13] * 0.5).clamp(0, 1)
    fid.update(darker, real=False, groups=torch.full((13,), 2))
    fid.update(images[:1], real=False, groups=torch.tensor([3]))
    scores = fid.compute_group_scores()
    assert scores[0]["fid_images"] == 50 and isinstance(scores[0]["fid"], float)
    assert "kid" not in scores[0]
    for group, count in ((1, 14), (2, 13), (3, 1)):
        assert scores[group]["fid_images"] == count and scores[group]["fid"] == "n/a"
    # Real images against themselves: KID about 0; darkened ones: clearly above it.
    assert abs(scores[1]["kid"]) < 0.2 * scores[2]["kid"] and scores[2]["kid"] > 0
    assert scores[2]["kid_std"] >= 0
    assert scores[3]["kid"] is None  # one image: no unbiased estimate
    assert fid.compute_groups() == {g: s["fid"] for g, s in scores.items()}
    assert fid.compute_group_scores() == scores  # seeded subsets: the same every time


def test_group_kid_is_torchmetrics_kid():
    """Subsets as large as both sets: KID is the full unbiased MMD, whatever the draw."""
    images = sample_images(13)
    fake = (images * 0.7 + 0.2).clamp(0, 1)
    fid = BucketedFID(feature=TinyFeatures())
    fid.update(images, real=True)
    fid.update(fake, real=False, groups=torch.zeros(13, dtype=torch.long))
    reference = KernelInceptionDistance(feature=TinyFeatures(), subset_size=13, subsets=3)
    reference.update(images, real=True)
    reference.update(fake, real=False)
    mean, std = reference.compute()
    scores = fid.compute_group_scores()[0]
    assert scores["kid"] == pytest.approx(float(mean), rel=1e-3)  # torchmetrics: float32
    assert scores["kid_std"] == pytest.approx(0.0, abs=1e-9) and float(std) == pytest.approx(
        0.0, abs=1e-6
    )
    assert kernel_inception_distance(None, fake) == (None, None)


def test_overall_fid_over_few_images_warns_once_naming_the_threshold(caplog):
    images = sample_images(12)
    few = BucketedFID(feature=TinyFeatures())  # 4-d features: the threshold is 4 images
    few.update(images[:3], real=True)
    few.update(images[:3], real=False)
    with caplog.at_level(logging.WARNING, logger="maskgit.metrics.fid"):
        few.compute()
        few.compute()
    warnings = [r.getMessage() for r in caplog.records if "FID over" in r.getMessage()]
    assert len(warnings) == 1
    assert "3 inpainted and 3 real images, fewer than 4" in warnings[0]
    assert few.small_sample_note() == warnings[0]
    enough = BucketedFID(feature=TinyFeatures())
    enough.update(images, real=True)
    enough.update(images, real=False)
    assert enough.small_sample_note() is None


def test_reset_keeps_real_features_when_asked(images):
    fid = BucketedFID(feature=TinyFeatures())
    fid.reset_real_features = False  # as benchmarks/quality.py: real images once
    fid.update(images, real=True)
    fid.update(images, real=False, groups=torch.zeros(12, dtype=torch.long))
    before = fid.compute_group_scores(min_images=13)[0]["kid"]
    fid.reset()
    fid.update(images, real=False, groups=torch.zeros(12, dtype=torch.long))
    assert fid.compute_group_scores(min_images=13)[0]["kid"] == pytest.approx(before)
    fid.reset_real_features = True
    fid.reset()
    assert len(fid.real_features) == 0 and int(fid.real_features_num_samples) == 0


def metric_inputs() -> tuple[Tensor, Tensor, Tensor]:
    """12 images, hole masks of 3 sizes and their groups, for the single/DDP comparison."""
    images = sample_images(12)
    masks = torch.stack([square_hole(side) for side in [8, 12, 16] * 4])
    return images, masks, area_bucket(masks)


def update_metrics(rows: slice) -> tuple[BucketedFID, InpaintingQuality]:
    images, masks, groups = metric_inputs()
    fake = (images * 0.8 + 0.1)[rows]
    fid, quality = BucketedFID(feature=TinyFeatures()), InpaintingQuality()
    fid.update(images[rows], real=True)
    fid.update(fake, real=False, groups=groups[rows])
    quality.update(fake, images[rows], masks[rows])
    return fid, quality


def ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        fid, quality = update_metrics(slice(rank, None, world))  # 6 images per rank
        result = {"groups": fid.compute_groups(min_images=2), "buckets": quality.compute_buckets()}
        result["fid"] = float(fid.compute())
        torch.save(result, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_groups_and_buckets_gather_all_ranks(tmp_path):
    """compute_groups / compute_buckets are not synced by torchmetrics like compute() is."""
    fid, quality = update_metrics(slice(None))
    expected_groups = fid.compute_groups(min_images=2)
    expected_buckets = quality.compute_buckets()
    assert {name: row["count"] for name, row in expected_buckets.items()} == {
        "0-10%": 4,
        "10-20%": 4,
        "20-30%": 4,
    }
    out = tmp_path / "result"
    torch.multiprocessing.spawn(
        ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True
    )
    ranks = [torch.load(f"{out}.{rank}") for rank in range(2)]
    for result in ranks:
        assert result["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)
        assert set(result["groups"]) == set(expected_groups) == {0, 1, 2}
        for group, value in expected_groups.items():
            assert result["groups"][group] == pytest.approx(value, rel=1e-4, abs=1e-6)
        assert result["buckets"].keys() == expected_buckets.keys()
        for name, row in expected_buckets.items():
            assert result["buckets"][name]["count"] == row["count"]
            assert result["buckets"][name]["psnr"] == pytest.approx(row["psnr"], rel=1e-5)


# --- the real Inception weights (from ../shared) and the offline failure ---------------------


def test_inception_fid_of_samples_with_themselves(shared_dir):
    assert FID_WEIGHTS.is_file(), f"{FID_WEIGHTS} missing from {shared_dir}"
    images = sample_images(16, 64)
    # The default 2048-d pool features load from the file; their 2048x2048 FID takes minutes
    # on a busy CPU, so the FID values use the same network's 64-d features.
    default = build_fid(str(FID_WEIGHTS))
    features = default.inception((images[:2] * 255).byte())
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    fid = build_fid(str(FID_WEIGHTS), feature=64)
    fid.update(images, real=True)
    fid.update(images, real=False)
    n = fid.real_features_num_samples
    mean = fid.real_features_sum / n
    variance = fid.real_features_cov_sum.diagonal() / n - mean**2
    assert float(variance.sum()) > 0.1  # real, varied features (not a dead extractor)
    assert abs(float(fid.compute())) < 1e-2
    darker = build_fid(str(FID_WEIGHTS), feature=64)
    darker.update(images, real=True)
    darker.update(images * 0.5, real=False)
    assert float(darker.compute()) > 1.0


def test_channels_last_inception_gives_the_nchw_features(shared_dir):
    assert FID_WEIGHTS.is_file(), f"{FID_WEIGHTS} missing from {shared_dir}"
    images = (sample_images(8, 64) * 255).byte()
    fid = build_fid(str(FID_WEIGHTS))
    assert fid.inception.Conv2d_1a_3x3.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = fid.inception(images)
        fid.inception.to(memory_format=torch.contiguous_format)
        reference = fid.inception(images)
    assert torch.allclose(fast, reference, rtol=1e-4, atol=1e-5)


def test_missing_weights_offline_raise_naming_the_option(monkeypatch, tmp_path):
    # An empty torch hub cache and a proxy that refuses connections: the download fails fast.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(FIDUnavailableError, match=r"metrics\.fid\.weights_path"):
        build_fid("/nonexistent/weights.pth", required=True)
    assert build_fid("/nonexistent/weights.pth", required=False) is None
