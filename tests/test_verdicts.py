"""Verdicts users can trust: seeds and intervals in metrics.json, paired comparisons of runs,
sweep summaries that pool seeds and mark ties, the same compositing (hard paste by default)
for every method, PatchMatch, and sweeps that decode once."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FID_WEIGHTS, ROOT, SAMPLE, compose_config
from PIL import Image
from test_evaluate import LIMIT, TEST_FILES, ckpt, pixels, read_png, run_evaluate

from maskgit.compare import compare_runs
from maskgit.data.images import load_image, load_mask
from maskgit.metrics.fid import frechet_distance
from maskgit.metrics.intervals import resample_counts, t_interval, weighted_fid
from maskgit.metrics.per_image import read_per_image

pytestmark = pytest.mark.slow
SIZE = 64


def fid_options(tmp_path: Path) -> list[str]:
    if not FID_WEIGHTS.is_file():
        pytest.skip(f"{FID_WEIGHTS} (the TF-FID Inception weights, ../shared) is absent")
    return [
        "metrics.fid.enabled=true",
        f"metrics.fid.weights_path={FID_WEIGHTS}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "metrics.bootstrap=10",
    ]


# --- the interval arithmetic ------------------------------------------------------------------


def test_t_interval_is_students():
    low, high = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3)
    assert (low, high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    assert t_interval([5.0]) is None
    assert t_interval([2.0, 2.0]) == [2.0, 2.0]


def test_weighted_fid_is_the_fid_of_the_drawn_images():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(40, 64, generator=generator, dtype=torch.float64)
    fake = 1.2 * torch.randn(40, 64, generator=generator, dtype=torch.float64) + 0.1
    mean, centred = real.mean(0), real - real.mean(0)
    assert weighted_fid(real, fake) == pytest.approx(
        float(frechet_distance(mean, centred.t() @ centred / 39, fake)), rel=1e-9
    )
    counts = resample_counts(40, 1, seed=3)[0]
    rows = torch.repeat_interleave(torch.arange(40), counts.long())
    drawn_real, drawn_fake = real[rows], fake[rows]
    drawn_mean = drawn_real.mean(0)
    cov = (drawn_real - drawn_mean).t() @ (drawn_real - drawn_mean) / (len(rows) - 1)
    assert weighted_fid(real, fake, counts) == pytest.approx(
        float(frechet_distance(drawn_mean, cov, drawn_fake)), rel=1e-7
    )


# --- seeds in metrics.json ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_seed_run(ckpt, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seeds")
    run_dir = root / "run"
    run_evaluate(
        ckpt, root / "logs", "total_iter=2", "num_seeds=2", f"hydra.run.dir={run_dir}",
        *fid_options(root),
    )  # fmt: skip
    return run_dir


def test_metrics_hold_per_seed_values_and_intervals(two_seed_run, ckpt, tmp_path):
    results = json.loads((two_seed_run / "metrics.json").read_text())
    metrics = results["metrics"]
    assert metrics["seeds"] == [0, 1]
    for name in ("fid", "kid", "psnr", "ssim", "l1"):
        values = metrics[f"{name}_per_seed"]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name
        assert metrics[name] == pytest.approx(sum(values) / 2)
        low, high = metrics[f"{name}_ci95"]
        assert low <= metrics[name] <= high, name
    assert metrics["fid_per_seed"][0] != metrics["fid_per_seed"][1]  # the noise moved it
    assert metrics["fid_ci95_images"] is None  # 6 images: too few for a resampled FID
    for bucket in results["buckets"].values():
        assert len(bucket["psnr_per_seed"]) == 2 and "psnr_ci95" in bucket
    # Both seeds' images are written; the first seed's are a one-seed run's, pixel for pixel.
    names = sorted(p.name for p in (two_seed_run / "inpainted").iterdir())
    assert names == sorted(
        [f"{s.stem}.png" for s in TEST_FILES] + [f"{s.stem}_s1.png" for s in TEST_FILES]
    )
    single = tmp_path / "single"
    run_evaluate(ckpt, tmp_path / "logs", "total_iter=2", f"hydra.run.dir={single}")
    first_seed = {k: v for k, v in pixels(two_seed_run).items() if "_s1" not in k}
    assert first_seed == pixels(single)
    per_image = read_per_image(two_seed_run)
    assert per_image.seeds == [0, 1] and per_image.real_features.shape == (LIMIT, 2048)
    assert set(per_image.fake) == {0, 1} and per_image.quality[1]["psnr"].shape == (LIMIT,)


# --- paired comparisons ---------------------------------------------------------------------------


def sample_runs(ckpt: Path, tmp_path: Path) -> dict[tuple[str, int], Path]:
    """The tiny model and the grey floor on all 64 sample pairs (enough images for an FID
    verdict), seeds 0 and 5: one multirun, {(method, seed): folder}."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "evaluate.py", "-m", f"ckpt={ckpt}", "total_iter=2",
         "method=maskgit,masked_input", "seed=0,5", "data.num_workers=0",
         "data.eval_batch_size=64", "num_step_grids=0", f"hydra.sweep.dir={sweep}",
         *fid_options(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for metrics in sweep.glob("*/metrics.json"):
        results = json.loads(metrics.read_text())
        runs[(results["method"], results["config"]["seed"])] = metrics.parent
    return runs


def test_compare_finds_a_real_difference_and_calls_reruns_indistinguishable(ckpt, tmp_path):
    runs = sample_runs(ckpt, tmp_path)
    first = runs[("maskgit", 0)]
    # The same settings with other seeds: only noise differs.
    rows, notes = compare_runs(first, runs[("maskgit", 5)], num=30)
    assert {row.metric: row.verdict for row in rows} == {
        "fid": "indistinguishable", "psnr": "indistinguishable",
        "ssim": "indistinguishable", "l1": "indistinguishable",
    }  # fmt: skip
    assert any("seeds differ" in note for note in notes)
    # The untrained tiny model against the grey-hole floor: a real difference, found in
    # every metric (its random tokens are far worse by FID, PSNR and L1; a flat grey has the
    # lower masked SSIM).
    grey = runs[("masked_input", 0)]
    rows, _ = compare_runs(first, grey, num=30)
    by_metric = {row.metric: row for row in rows}
    assert all(row.verdict != "indistinguishable" for row in rows), by_metric
    assert [by_metric[m].verdict for m in ("fid", "psnr", "l1")] == ["B better"] * 3
    assert by_metric["fid"].ci95[0] > 0 and by_metric["psnr"].ci95[1] < 0
    # The command line prints the table and a verdict.
    result = subprocess.run(
        [sys.executable, "-m", "maskgit.compare", str(first), str(grey), "--bootstrap", "20"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| psnr (higher is better) |" in result.stdout
    assert "verdict (fid): B better" in result.stdout


def test_compare_refuses_runs_on_other_images(two_seed_run, ckpt, tmp_path):
    fewer = tmp_path / "fewer"
    run_evaluate(ckpt, tmp_path / "logs", "data.test_limit=4", f"hydra.run.dir={fewer}")
    result = subprocess.run(
        [sys.executable, "-m", "maskgit.compare", str(two_seed_run), str(fewer)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "other images" in result.stderr
    assert "Traceback" not in result.stderr


# --- sweeps: seeds pooled, ties marked, one decoding ---------------------------------------------


def test_sweep_pools_seeds_and_marks_ties(ckpt, tmp_path):
    sweep = tmp_path / "sweep"
    run_evaluate(
        ckpt, tmp_path / "logs", "sweet_spot=1,2", "seed=0,1", "total_iter=2",
        f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}", multirun=True,
    )  # fmt: skip
    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Four jobs, two settings: each pools its two seeds (no zigzag through the jobs).
    assert [(row["sweet_spot"], row["seeds"]) for row in rows] == [("1", "2"), ("2", "2")]
    for row in rows:
        per_job = [
            json.loads((sweep / job / "metrics.json").read_text())["metrics"]["psnr"]
            for job in row["jobs"].split(",")
        ]
        assert float(row["psnr"]) == pytest.approx(sum(per_job) / 2)
        low, high = json.loads(row["psnr_ci95"])
        assert low <= float(row["psnr"]) <= high
    assert sorted(row["verdict"].split(" (")[0] for row in rows)[0] == "best"
    assert "mean over the setting's seeds" in (sweep / "summary.md").read_text()


def test_a_sweet_spot_sweep_decodes_once_with_the_outputs_of_separate_runs(ckpt, tmp_path):
    sweep = tmp_path / "sweep"
    cache = tmp_path / "cache"
    run_evaluate(
        ckpt, tmp_path / "logs", "sweet_spot=1,2,3", "total_iter=3",
        f"hydra.sweep.dir={sweep}", f"paths.cache_dir={cache}", multirun=True,
    )  # fmt: skip
    trajectories = list((cache / "trajectories").rglob("*.safetensors"))
    assert len(trajectories) == LIMIT  # one decoding per image, shared by the three jobs
    # The same sweep without the cache: every job decodes on its own.
    separate = tmp_path / "separate"
    run_evaluate(
        ckpt, tmp_path / "logs", "sweet_spot=1,2,3", "total_iter=3", "sweep_cache=false",
        f"hydra.sweep.dir={separate}", multirun=True,
    )  # fmt: skip
    for job in ("0", "1", "2"):
        assert pixels(sweep / job) == pixels(separate / job), job
        steps = sorted((separate / job / "steps").iterdir())
        assert [p.read_bytes() for p in steps] == [
            (sweep / job / "steps" / p.name).read_bytes() for p in steps
        ]


# --- the same compositing for every method --------------------------------------------------------


def photo_folder(folder: Path) -> Path:
    """Three sample photos as JPEG and two re-saved as PNG, with their masks."""
    (folder / "val").mkdir(parents=True)
    (folder / "val_masks").mkdir()
    for index, source in enumerate(TEST_FILES[:5]):
        target = folder / "val" / (source.name if index < 3 else f"{source.stem}.png")
        if index < 3:
            shutil.copy(source, target)
        else:
            Image.open(source).convert("RGB").save(target)
        shutil.copy(SAMPLE / "val_masks" / f"{source.stem}.png", folder / "val_masks")
    return folder


METHODS = ("maskgit", "vqgan_recon", "opencv_telea", "opencv_ns", "patchmatch")


def test_every_method_keeps_every_known_pixel_by_default(ckpt, tmp_path):
    data = photo_folder(tmp_path / "data")
    sweep = tmp_path / "methods"
    run_evaluate(
        ckpt, tmp_path / "logs", "method=" + ",".join(METHODS), f"data_root={data}",
        "total_iter=2", f"hydra.sweep.dir={sweep}", multirun=True,
    )  # fmt: skip
    for job, method in enumerate(METHODS):
        run_dir = sweep / str(job)
        for source in sorted((data / "val").iterdir()):
            image = load_image(source, SIZE)
            mask_file = data / "val_masks" / f"{source.stem}.png"
            known = load_mask(mask_file, SIZE).bool().expand_as(image)
            output = read_png(run_dir / "inpainted" / f"{source.stem}.png")
            assert torch.equal(output[known], image[known]), f"{method}: {source.name}"
            assert not torch.equal(output[~known], image[~known])
        settings = json.loads((run_dir / "run.json").read_text())["settings"]
        assert settings["method"] == method
        if method == "patchmatch":  # its settings are recorded with the run
            assert settings["method_config"]["patch_size"] == 5
        assert settings["method_config"].get("paste_feather", 0) == 0


def test_paste_feather_is_one_option_for_every_method_and_the_old_name_moves():
    cfg = compose_config("evaluate", ["paste_feather=2", "method=opencv_telea"])
    assert cfg.method.paste_feather == 2 and cfg.decoding.paste_feather == 2
    for method in ("vqgan_recon", "patchmatch", "opencv_ns"):
        assert compose_config("evaluate", [f"method={method}"]).method.paste_feather == 0

    from maskgit.hydra_setup import single_decoding_names

    old = compose_config("evaluate", ["decoding.paste_feather=3"])
    with pytest.warns(FutureWarning, match="decoding.paste_feather is an old name"):
        single_decoding_names(old)
    assert old.paste_feather == 3 and old.decoding.paste_feather == 3


def test_patchmatch_fills_a_tiny_hole_from_its_surroundings():
    from maskgit.baselines import PatchMatchInpainter

    halves = torch.zeros(2, 3, 32, 32)
    halves[:, :, :, 16:] = 1.0  # black left half, white right half
    mask = torch.ones(2, 1, 32, 32)
    mask[0, :, 12:20, 3:11] = 0  # a hole inside the black half
    mask[1, :, 12:20, 21:29] = 0  # one inside the white half
    method = PatchMatchInpainter()
    output = method(halves, mask, torch.tensor([0, 1]), seed=0, return_steps=False).images
    known = mask.bool().expand_as(output)
    assert torch.equal(output[known], halves[known])
    assert float(output[0][~known[0]].mean()) < 0.1  # filled from its black surroundings
    assert float(output[1][~known[1]].mean()) > 0.9
    again = method(halves, mask, torch.tensor([0, 1]), seed=0, return_steps=False).images
    assert torch.equal(again, output)


def test_known_pixels_stay_exact_on_the_shared_photos(ckpt, tmp_path):
    shared = ROOT.parent / "shared" / "data" / "cat_faces"
    if not (shared / "val").is_dir():
        pytest.skip(f"{shared} (the shared cat photos) is absent")
    data = tmp_path / "data"
    (data / "val").mkdir(parents=True)
    (data / "val_masks").mkdir()
    for source in sorted((shared / "val").iterdir())[:4]:
        shutil.copy(source, data / "val" / source.name)
        shutil.copy(shared / "val_masks" / f"{source.stem}.png", data / "val_masks")
    run_dir = tmp_path / "run"
    run_evaluate(
        ROOT / "checkpoints" / "maskgit_cats_local.safetensors", tmp_path / "logs",
        f"data_root={data}", f"hydra.run.dir={run_dir}", "total_iter=2",
    )  # fmt: skip
    for source in sorted((data / "val").iterdir()):
        original = np.asarray(Image.open(source).convert("RGB"))
        known = np.asarray(Image.open(data / "val_masks" / f"{source.stem}.png").convert("L")) > 127
        output = np.asarray(Image.open(run_dir / "inpainted" / f"{source.stem}.png").convert("RGB"))
        assert np.array_equal(output[known], original[known]), source.name


def test_one_image_skips_fid_with_a_note_and_writes_the_rest(ckpt, tmp_path):
    run_dir = tmp_path / "one"
    run_evaluate(
        ckpt, tmp_path / "logs", "data.test_limit=1", "total_iter=2",
        f"hydra.run.dir={run_dir}", *fid_options(tmp_path),
    )  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["fid"] is None and "needs at least two" in metrics["fid_note"]
    assert math.isfinite(metrics["psnr"]) and metrics["num_inpainted"] == 1
