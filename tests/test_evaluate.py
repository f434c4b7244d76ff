"""evaluate.py end to end on a tiny checkpoint: images, step grids, metrics, resume, sweeps."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONF, ROOT, SAMPLE, tiny_transformer_config
from PIL import Image

from maskgit.checkpoints import MASKGIT_FORMAT, read_checkpoint
from maskgit.data.images import list_images, load_image, load_mask
from maskgit.inpainting import feathered_weight
from maskgit.loading import export_maskgit, load_maskgit
from maskgit.metrics.inpainting import area_bucket, bucket_name
from maskgit.modules.maskgit import MaskGitModule
from maskgit.step_pictures import LABEL_HEIGHT, PAD

pytestmark = pytest.mark.slow

LIMIT = 6
SIZE = 64
TEST_FILES = list_images(SAMPLE / "val")[:LIMIT]  # test set = val pairs, first LIMIT sorted
COMMON = [
    f"data.test_limit={LIMIT}",
    "data.eval_batch_size=3",
    "data.num_workers=0",
    "metrics.fid.enabled=false",
    "num_step_grids=2",
]
# evaluate.py's compositing (the top-level paste_feather): the known pixels it leaves exactly
# as they are are those more than this many pixels from the hole (0, the default: all).
DEFAULT_FEATHER = yaml.safe_load((CONF / "evaluate.yaml").read_text())["paste_feather"]


def untouched(mask_file: Path, like: torch.Tensor) -> torch.Tensor:
    """The known pixels a paste with the default feather keeps exactly, as a mask like ``like``."""
    mask = load_mask(mask_file, SIZE)[None]
    return (feathered_weight(mask, DEFAULT_FEATHER)[0] == 0).expand_as(like)


@pytest.fixture(scope="module")
def ckpt(tiny_tokenizer_path, tmp_path_factory) -> Path:
    """A compact MaskGIT file exported from a Lightning-style checkpoint of a tiny module."""
    folder = tmp_path_factory.mktemp("ckpt")
    tokenizer = shutil.copy(tiny_tokenizer_path, folder / "tokenizer.pt")
    torch.manual_seed(0)
    module = MaskGitModule(
        tokenizer_ckpt=str(tokenizer), transformer=tiny_transformer_config(), warmup_steps=1
    )
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)  # drops the tokenizer, records its path
    assert not any(k.startswith("tokenizer.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, folder / "last.ckpt")
    out = export_maskgit(folder / "last.ckpt", folder / "maskgit.pt", tokenizer)
    data = read_checkpoint(out)
    assert data["format"] == MASKGIT_FORMAT
    assert data["tokenizer"]["path"] == "tokenizer.pt"  # relative: shipped side by side
    return out


def test_an_export_to_another_folder_records_a_relative_path_that_loads(ckpt, tmp_path):
    tokenizer = ckpt.parent / "tokenizer.pt"
    out = export_maskgit(
        ckpt.parent / "last.ckpt", tmp_path / "elsewhere" / "maskgit.pt", tokenizer
    )
    recorded = read_checkpoint(out)["tokenizer"]["path"]
    assert recorded.startswith("..") and (out.parent / recorded).resolve() == tokenizer.resolve()
    module = load_maskgit(out)
    assert Path(module.hparams.tokenizer_ckpt).resolve() == tokenizer.resolve()


def run_evaluate(
    ckpt: Path, log_dir: Path, *overrides: str, multirun: bool = False
) -> subprocess.CompletedProcess:
    command = [sys.executable, "evaluate.py", *(["-m"] if multirun else [])]
    command += [f"ckpt={ckpt}", f"paths.log_dir={log_dir}"]
    result = subprocess.run(
        command + COMMON + list(overrides),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def read_png(path: Path) -> torch.Tensor:
    return load_image(path, SIZE, resize=False)


def snapshot(run_dir: Path) -> dict:
    return {
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "images": {p.name: p.read_bytes() for p in sorted((run_dir / "inpainted").iterdir())},
    }


def pixels(run_dir: Path) -> dict[str, bytes]:
    return {
        p.name: read_png(p).mul(255).byte().numpy().tobytes()
        for p in sorted((run_dir / "inpainted").glob("*.png"))
    }


@pytest.fixture(scope="module")
def first_run(ckpt, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("evaluate")
    run_dir = root / "run"
    run_evaluate(ckpt, root / "logs", "total_iter=2", f"hydra.run.dir={run_dir}")
    return run_dir, snapshot(run_dir)


def test_writes_images_step_grids_and_metrics(first_run):
    run_dir, first = first_run
    names = [f"{source.stem}.png" for source in TEST_FILES]  # named after their inputs
    assert sorted(first["images"]) == names
    for name, source in zip(names, TEST_FILES):
        output, image = read_png(run_dir / "inpainted" / name), load_image(source, SIZE)
        known = untouched(SAMPLE / "val_masks" / f"{source.stem}.png", image)
        assert known.float().mean() > 0.3
        assert torch.equal(output[known], image[known]), f"{name}: known pixels changed"
        assert not torch.equal(output, image)
    # Step grids for the first num_step_grids images: 3 latent masks (input, 2 steps) on top,
    # the masked input and 2 predictions below, 128 px tiles (scale 2), each labelled; and a
    # photo | masked | fill strip for the same images.
    grids = sorted(p.name for p in (run_dir / "steps").iterdir())
    assert grids == names[:2]
    tile = 2 * SIZE
    with Image.open(run_dir / "steps" / names[0]) as grid:
        assert grid.size == (3 * tile + 4 * PAD, 2 * (tile + LABEL_HEIGHT + 2 * PAD))
    assert sorted(p.name for p in (run_dir / "strips").iterdir()) == names[:2]
    with Image.open(run_dir / "strips" / names[0]) as strip:
        assert strip.size == (3 * tile + 4 * PAD, tile + LABEL_HEIGHT + 2 * PAD)

    results = first["metrics"]
    metrics = results["metrics"]
    assert results["method"] == "maskgit"
    assert results["images"] == [source.stem for source in TEST_FILES]  # the index order
    assert metrics["num_inpainted"] == LIMIT and metrics["num_reused"] == 0
    assert metrics["num_replaced"] == 0 and metrics["num_without_hole"] == 0
    # FID switched off (COMMON): no FID, and no word of missing weights.
    assert metrics["fid"] is None and "fid_note" not in results
    assert 0 < metrics["psnr"] < 100 and -1 <= metrics["ssim"] <= 1
    masks = torch.stack(
        [load_mask(SAMPLE / "val_masks" / f"{f.stem}.png", SIZE) for f in TEST_FILES]
    )
    expected = {}
    for bucket in area_bucket(masks).tolist():
        expected[bucket_name(bucket)] = expected.get(bucket_name(bucket), 0) + 1
    assert {name: row["count"] for name, row in results["buckets"].items()} == expected
    config = results["config"]
    assert config["total_iter"] == 2 and config["data"]["test_limit"] == LIMIT
    assert config["output_dir"] == str(run_dir)
    assert "total_iter=2" in results["overrides"]


def test_rerun_reuses_every_image(ckpt, first_run, tmp_path):
    run_dir, first = first_run
    run_evaluate(ckpt, tmp_path / "logs", "total_iter=2", f"hydra.run.dir={run_dir}")
    again = snapshot(run_dir)
    metrics = again["metrics"]["metrics"]
    assert metrics["num_reused"] == LIMIT and metrics["num_inpainted"] == 0
    assert again["images"] == first["images"]
    # Reused images are scored as the first run scored them (8-bit, as written).
    for name in ("psnr", "ssim", "l1"):
        assert metrics[name] == pytest.approx(first["metrics"]["metrics"][name], rel=1e-6)


def test_rerun_of_an_interrupted_run_finishes_only_the_missing_images(ckpt, first_run, tmp_path):
    # As a run killed after its first batch leaves it: 3 images written, a partial temp
    # file of the 5th (images are written to a temp name, then renamed), no metrics yet.
    first_dir, first = first_run
    run_dir = tmp_path / "run"
    shutil.copytree(first_dir, run_dir)
    inpainted = run_dir / "inpainted"
    for source in TEST_FILES[3:]:
        (inpainted / f"{source.stem}.png").unlink()
    (inpainted / f".{TEST_FILES[4].stem}.png.x1y2z3.tmp").write_bytes(b"\x89PNG\r\n")
    (run_dir / "metrics.json").unlink()
    done = {p.name: p.stat().st_mtime_ns for p in inpainted.iterdir() if p.suffix == ".png"}

    run_evaluate(ckpt, tmp_path / "logs", "total_iter=2", f"hydra.run.dir={run_dir}")
    again = snapshot(run_dir)
    metrics = again["metrics"]["metrics"]
    assert metrics["num_reused"] == 3 and metrics["num_inpainted"] == 3
    assert again["images"] == first["images"]  # same seed: the redone images are identical
    for name, stamp in done.items():
        assert (inpainted / name).stat().st_mtime_ns == stamp, f"{name} was written again"
    for name in ("psnr", "ssim", "l1"):
        assert metrics[name] == pytest.approx(first["metrics"]["metrics"][name], rel=1e-6)


def test_rerun_under_ddp_counts_every_rank(ckpt, first_run, tmp_path):
    # Two CPU processes get 3 images each; the counts in metrics.json are of all 6.
    run_dir, first = first_run
    run_evaluate(
        ckpt, tmp_path / "logs", "total_iter=2", "trainer=ddp_cpu", f"hydra.run.dir={run_dir}"
    )
    again = snapshot(run_dir)
    metrics = again["metrics"]["metrics"]
    assert metrics["num_reused"] == LIMIT and metrics["num_inpainted"] == 0
    assert again["images"] == first["images"]
    assert metrics["psnr"] == pytest.approx(first["metrics"]["metrics"]["psnr"], rel=1e-6)
    buckets, before = again["metrics"]["buckets"], first["metrics"]["buckets"]
    assert {k: v["count"] for k, v in buckets.items()} == {k: v["count"] for k, v in before.items()}
    for name, row in buckets.items():
        assert row["psnr"] == pytest.approx(before[name]["psnr"], rel=1e-6)


def test_sweep_writes_summary_and_same_seed_repeats(ckpt, first_run, tmp_path):
    sweep = tmp_path / "sweep"
    run_evaluate(
        ckpt, tmp_path / "logs", "sweet_spot=1,2", "total_iter=2", f"hydra.sweep.dir={sweep}",
        multirun=True,
    )  # fmt: skip
    for job, sweet_spot in ((0, 1), (1, 2)):
        results = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert results["config"]["sweet_spot"] == sweet_spot
        assert len(list((sweep / str(job) / "inpainted").iterdir())) == LIMIT
    # Job 1 (sweet_spot=2 of total_iter=2) decodes as the first run, seed 0: same pixels
    # (the files differ in the key of their settings they carry).
    first_pixels = pixels(first_run[0])
    assert pixels(sweep / "1") == first_pixels
    assert pixels(sweep / "0") != first_pixels

    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sweet_spot"] for row in rows] == ["1", "2"]
    assert [row["jobs"] for row in rows] == ["0", "1"]
    assert all(row["method"] == "maskgit" and float(row["psnr"]) > 0 for row in rows)
    assert all(float(row["wall_seconds"]) > 0 for row in rows)  # each job's own end-to-end time
    # Without FID the verdict is by masked PSNR: one best, the other tied with it or worse.
    verdicts = sorted(row["verdict"] for row in rows)
    assert verdicts[0] == "best (psnr)" and verdicts[1] in ("tie with best", "worse")
    table = (sweep / "summary.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| jobs | method |"))
    assert "sweet_spot" in header and "verdict" in header
    assert sum(line.startswith("| 0 |") or line.startswith("| 1 |") for line in table) == 2
    with Image.open(sweep / "summary.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 100


def test_reference_methods_run(ckpt, tmp_path):
    sweep = tmp_path / "methods"
    run_evaluate(
        ckpt, tmp_path / "logs", "method=masked_input,vqgan_recon", f"hydra.sweep.dir={sweep}",
        multirun=True,
    )  # fmt: skip
    methods = {}
    for job in ("0", "1"):
        results = json.loads((sweep / job / "metrics.json").read_text())
        methods[results["method"]] = sweep / job
        assert results["metrics"]["num_inpainted"] == LIMIT
    assert set(methods) == {"masked_input", "vqgan_recon"}
    for source in TEST_FILES:
        image = load_image(source, SIZE)
        hole = load_mask(SAMPLE / "val_masks" / f"{source.stem}.png", SIZE).expand_as(image) == 0
        grey = read_png(methods["masked_input"] / "inpainted" / f"{source.stem}.png")
        assert torch.equal(grey[~hole], image[~hole])
        assert torch.allclose(grey[hole], torch.full_like(grey[hole], 128 / 255))
        recon = read_png(methods["vqgan_recon"] / "inpainted" / f"{source.stem}.png")
        known = untouched(SAMPLE / "val_masks" / f"{source.stem}.png", image)
        assert torch.equal(recon[known], image[known])  # pasted like maskgit
        assert not torch.equal(recon[hole], image[hole])
    # Neither method has decoding steps: no step grids.
    assert not (methods["masked_input"] / "steps").exists()


# --- resume checks what it reuses ------------------------------------------------------------


def small_data_root(folder: Path, files: list[Path] = TEST_FILES) -> Path:
    """A user's folder: val/ images and val_masks/ masks, paired by stem."""
    (folder / "val").mkdir(parents=True)
    (folder / "val_masks").mkdir()
    for source in files:
        shutil.copy(source, folder / "val" / source.name)
        shutil.copy(SAMPLE / "val_masks" / f"{source.stem}.png", folder / "val_masks")
    return folder


def run_evaluate_raw(ckpt: Path, log_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "evaluate.py", f"ckpt={ckpt}", f"paths.log_dir={log_dir}"]
    return subprocess.run(
        command + COMMON + list(overrides),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def test_rerun_with_other_settings_is_refused_and_keeps_the_first_results(
    ckpt, first_run, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(first_run[0], run_dir)
    before = snapshot(run_dir)
    result = run_evaluate_raw(
        ckpt, tmp_path / "logs", "total_iter=3", "schedule=linear", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "holds the results of a run with other settings" in message
    assert "decoder.total_iter: 2 -> 3" in message
    assert "maskgit.schedules.cosine' -> 'maskgit.schedules.linear" in message
    assert snapshot(run_dir) == before  # images and metrics.json untouched


def test_rerun_pairs_outputs_by_name_and_redoes_changed_inputs(ckpt, tmp_path):
    data_root = small_data_root(tmp_path / "data")
    run_dir = tmp_path / "run"
    args = [f"data_root={data_root}", "total_iter=2", f"hydra.run.dir={run_dir}"]
    run_evaluate(ckpt, tmp_path / "logs", *args)
    first = snapshot(run_dir)

    # One input removed, one changed in content (same name): the others are reused as they
    # are, paired by name; the changed one is inpainted again from its new content.
    removed, changed = TEST_FILES[1], TEST_FILES[4]
    (data_root / "val" / removed.name).unlink()
    (data_root / "val_masks" / f"{removed.stem}.png").unlink()
    with Image.open(data_root / "val" / changed.name) as image:
        image.transpose(Image.FLIP_LEFT_RIGHT).save(data_root / "val" / changed.name)
    run_evaluate(ckpt, tmp_path / "logs", *args)
    again = snapshot(run_dir)
    metrics = again["metrics"]["metrics"]
    assert metrics["num_reused"] == LIMIT - 2
    assert metrics["num_inpainted"] == 1 and metrics["num_replaced"] == 1
    kept = [s.stem for s in TEST_FILES if s not in (removed, changed)]
    assert again["metrics"]["images"] == [s.stem for s in TEST_FILES if s != removed]
    for stem in kept:
        assert again["images"][f"{stem}.png"] == first["images"][f"{stem}.png"]
    assert again["images"][f"{changed.stem}.png"] != first["images"][f"{changed.stem}.png"]
    # The changed input's output keeps its known pixels: it was made from the new content.
    new_image = load_image(data_root / "val" / changed.name, SIZE)
    known = untouched(data_root / "val_masks" / f"{changed.stem}.png", new_image)
    output = read_png(run_dir / "inpainted" / f"{changed.stem}.png")
    assert torch.equal(output[known], new_image[known])


# --- FID's real side from a cache --------------------------------------------------------------


def test_second_run_takes_the_real_features_from_the_cache_with_the_same_fid(
    ckpt, shared_dir, tmp_path
):
    from conftest import FID_WEIGHTS

    if not FID_WEIGHTS.is_file():
        pytest.skip(f"{FID_WEIGHTS} (the TF-FID Inception weights) is absent")
    cache = tmp_path / "cache"
    fid_on = ["metrics.fid.enabled=true", f"metrics.fid.weights_path={FID_WEIGHTS}",
              f"paths.cache_dir={cache}", "total_iter=2", "method=masked_input"]  # fmt: skip
    first = run_evaluate(ckpt, tmp_path / "logs", *fid_on, f"hydra.run.dir={tmp_path}/a")
    files = list((cache / "fid").glob("real-*.pt"))
    assert len(files) == 1 and "FID real features from" not in first.stdout + first.stderr
    second = run_evaluate(ckpt, tmp_path / "logs", *fid_on, f"hydra.run.dir={tmp_path}/b")
    assert "FID real features from" in second.stdout + second.stderr
    fids = [
        json.loads((tmp_path / run / "metrics.json").read_text())["metrics"]["fid"]
        for run in ("a", "b")
    ]
    assert fids[0] == pytest.approx(fids[1], abs=1e-3) and fids[0] > 0
    # Other real images (a changed file) get their own cache entry.
    third = run_evaluate(
        ckpt, tmp_path / "logs", *fid_on, "data.test_limit=5", f"hydra.run.dir={tmp_path}/c"
    )
    assert "FID real features from" not in third.stdout + third.stderr
    assert len(list((cache / "fid").glob("real-*.pt"))) == 2
