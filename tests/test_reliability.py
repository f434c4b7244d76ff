"""Nothing silently wrong: image modes, mask values, user paths, atomic writes under
concurrency, resume fallbacks, option ranges and CPU oversubscription."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE, compose_config
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from maskgit.checkpoints import CheckpointError
from maskgit.data.images import ImageFileError, load_image, load_mask
from maskgit.decoding import IterativeDecoder
from maskgit.hardware import warn_if_cpu_oversubscribed
from maskgit.schedules import cosine
from maskgit.training import resume_checkpoint

PHOTO = sorted((SAMPLE / "val").iterdir())[0]


def photo_array() -> np.ndarray:
    with Image.open(PHOTO) as image:
        return np.asarray(image.convert("RGB"))


# --- image modes ------------------------------------------------------------------------------


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    grey = photo_array().mean(axis=2)
    sixteen = (grey * 257).round().astype(np.uint16)  # 8-bit values on the 16-bit scale
    path = tmp_path / "deep.png"
    Image.fromarray(sixteen).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    loaded = load_image(path, 64)
    expected = torch.from_numpy(grey.round() / 255).float()
    torch.testing.assert_close(loaded[0], expected, atol=1 / 255 + 1e-6, rtol=0)
    assert 0.1 < float(loaded.mean()) < 0.9  # not the all-white image of a plain convert


def test_cmyk_exif_orientation_and_transparent_palette_are_converted(tmp_path):
    rgb = Image.fromarray(photo_array())
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    cmyk = load_image(tmp_path / "cmyk.jpg", 64)
    reference = load_image(PHOTO, 64)
    assert (cmyk - reference).abs().mean() < 0.03

    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    rgb.rotate(180).save(tmp_path / "rotated.png", exif=exif)
    upright = load_image(tmp_path / "rotated.png", 64)
    torch.testing.assert_close(upright, reference)

    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    with pytest.warns(UserWarning, match=r"palette\.png: has an alpha channel"):
        load_image(tmp_path / "palette.png", 64)


def test_a_float_image_is_refused_naming_the_file_and_mode(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.random.rand(64, 64).astype(np.float32), mode="F").save(path)
    with pytest.raises(ImageFileError, match=r"float\.tif: mode F"):
        load_image(path, 64)


# --- mask values ------------------------------------------------------------------------------


def test_grey_mask_values_are_binarised_with_a_warning_naming_the_file(tmp_path):
    values = np.full((64, 64), 255, dtype=np.uint8)
    values[10:20, 10:20] = 128  # a hole painted grey: known by the rule, but said
    values[30:40, 30:40] = 0
    values[50:52, 0:5] = 40
    path = tmp_path / "grey.png"
    Image.fromarray(values).save(path)
    with pytest.warns(UserWarning, match=r"grey\.png: 110 mask pixel\(s\) are neither 0 nor 255"):
        mask = load_mask(path, 64)
    assert mask[0, 15, 15] == 1 and mask[0, 35, 35] == 0 and mask[0, 51, 2] == 0


def test_an_all_known_mask_is_warned_about(tmp_path):
    path = tmp_path / "full.png"
    Image.fromarray(np.full((64, 64), 255, dtype=np.uint8)).save(path)
    with pytest.warns(UserWarning, match=r"full\.png: mask has no missing pixel"):
        load_mask(path, 64)


# --- user paths are used as given ---------------------------------------------------------------


def test_a_missing_user_tokenizer_path_is_an_error_not_the_shipped_file(tmp_path):
    from maskgit.loading import TokenizerNotFoundError, load_maskgit

    shipped = ROOT / "checkpoints" / "vqgan_cats_local.safetensors"
    assert shipped.is_file()  # a file of the same name exists in the shipped folder
    missing = tmp_path / "no" / "such" / "dir" / shipped.name
    with pytest.raises(TokenizerNotFoundError, match=r"no/such/dir/vqgan_cats_local\.safetensors"):
        load_maskgit(ROOT / "checkpoints" / "maskgit_cats_local.safetensors", str(missing))


# --- one atomic writer, two real processes --------------------------------------------------------

WRITER = """
import sys, torch
from maskgit.checkpoints import save_atomic
path, value, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    save_atomic({"value": value, "step": i, "weight": torch.full((250_000,), value)}, path)
"""


def test_concurrent_writers_never_publish_a_torn_file(tmp_path):
    target = tmp_path / "shared.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(target), value, "30"], env=env)
        for value in ("1", "2")
    ]
    loads, torn = 0, []
    while any(w.poll() is None for w in writers):
        if target.exists():
            try:
                data = torch.load(target, weights_only=True)
            except Exception as error:  # a torn file is exactly what must not happen
                torn.append(repr(error))
                continue
            assert bool((data["weight"] == data["value"]).all())
            loads += 1
        time.sleep(0.005)
    assert [w.returncode for w in writers] == [0, 0]
    assert not torn, torn[:3]
    assert loads > 0
    final = torch.load(target, weights_only=True)
    assert final["step"] == 29 and final["value"] in (1.0, 2.0)  # the last complete one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.ckpt"]  # no temp files


# --- resume ------------------------------------------------------------------------------------


def checkpoint_folders(tmp_path: Path) -> tuple[list[ModelCheckpoint], Path, Path]:
    top, periodic = tmp_path / "ckpts", tmp_path / "ckpts" / "periodic"
    periodic.mkdir(parents=True)
    callbacks = [ModelCheckpoint(dirpath=top), ModelCheckpoint(dirpath=periodic)]
    return callbacks, top, periodic


def test_resume_from_last_falls_back_to_the_newest_readable_checkpoint(tmp_path):
    callbacks, top, periodic = checkpoint_folders(tmp_path)
    torch.save({"global_step": 4}, top / "epoch000-step000004.ckpt")
    time.sleep(0.01)
    torch.save({"global_step": 6}, periodic / "last.ckpt")
    time.sleep(0.01)
    torch.save({"global_step": 7, "weights": torch.ones(10_000)}, top / "last.ckpt")
    data = (top / "last.ckpt").read_bytes()
    (top / "last.ckpt").write_bytes(data[: len(data) // 2])  # a save cut short
    with pytest.warns(UserWarning, match=r"ckpt_path=last: skipping .*ckpts/last\.ckpt"):
        chosen = resume_checkpoint("last", callbacks)
    assert chosen == str((periodic / "last.ckpt").resolve())


def test_resume_names_an_unreadable_checkpoint(tmp_path):
    callbacks, top, _ = checkpoint_folders(tmp_path)
    bad = top / "random.ckpt"
    # Random bytes fail inside the unpickler in many ways (EOFError, IndexError, ...): each
    # must become the same one-line error naming the file.
    generator = random.Random(0)
    for _ in range(200):
        bad.write_bytes(generator.randbytes(generator.choice([10, 100, 1000])))
        with pytest.raises(CheckpointError, match=r"random\.ckpt: cannot be read"):
            resume_checkpoint(str(bad), callbacks)
    with (
        pytest.warns(UserWarning, match=r"skipping .*random\.ckpt"),
        pytest.raises(CheckpointError, match="ckpt_path=last: no readable checkpoint"),
    ):
        resume_checkpoint("last", callbacks)


def test_resume_from_last_without_checkpoints_starts_a_new_run(tmp_path):
    callbacks, _, _ = checkpoint_folders(tmp_path)
    assert resume_checkpoint("last", callbacks) is None
    assert resume_checkpoint(None, callbacks) is None


# --- option ranges and CPU processes ------------------------------------------------------------


def test_evaluation_options_are_checked_before_anything_is_written(tmp_path):
    from maskgit.evaluation import evaluate

    for override, message in (("num_seeds=0", r"num_seeds must be an integer >= 1, got 0"),
                              ("metrics.bootstrap=-1", r"metrics\.bootstrap must be")):  # fmt: skip
        cfg = compose_config("evaluate", [override, f"output_dir={tmp_path / 'out'}"])
        with pytest.raises(ValueError, match=message):
            evaluate(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("choice_temperature=-1", r"choice_temperature must be >= 0"),
        ("total_iter=0", r"total_iter must be >= 1"),
        ("sweet_spot=9", r"sweet_spot must be in \[1, total_iter=8\]"),
        ("decoding.temperature=0", r"temperature must be > 0"),
        ("decoding.token_threshold=1.5", r"decoding\.token_threshold must be in \[0, 1\)"),
    ],
)
def test_decoding_options_are_range_checked_at_start_up(override, message):
    import hydra

    cfg = compose_config("evaluate", [override])
    with pytest.raises(Exception, match=message):
        hydra.utils.instantiate(cfg.decoding)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("inpaint_mask_fraction", 1.5, r"model\.inpaint_mask_fraction must be \[0, 1\]"),
        ("label_smoothing", 1.0, r"model\.label_smoothing must be \[0, 1\)"),
        ("lr", 0.0, r"model\.lr must be > 0"),
        ("min_lr_ratio", -0.1, r"model\.min_lr_ratio must be \[0, 1\]"),
    ],
)
def test_training_options_are_range_checked(tiny_tokenizer_path, option, value, message):
    from conftest import tiny_transformer_config

    from maskgit.modules.maskgit import MaskGitModule

    with pytest.raises(ValueError, match=message):
        MaskGitModule(
            tokenizer_ckpt=str(tiny_tokenizer_path),
            transformer=tiny_transformer_config(),
            **{option: value},
        )


def test_the_decoder_accepts_the_edges_of_its_ranges():
    decoder = IterativeDecoder(cosine, total_iter=1, sweet_spot=1, choice_temperature=0.0)
    assert decoder.num_steps == 1


def test_more_cpu_processes_than_cores_are_warned_about():
    cores = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=rf"trainer\.devices={cores + 2} starts .* {cores} CPU"):
        warn_if_cpu_oversubscribed(cores + 2, "cpu", 2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_cpu_oversubscribed(1, "cpu", 2)
        warn_if_cpu_oversubscribed(cores + 2, "gpu", 2)


def test_two_images_with_one_stem_are_refused_not_silently_overwritten(tmp_path):
    from maskgit.data.datasets import InpaintingDataset
    from maskgit.data.masks import FolderMasks

    (tmp_path / "val").mkdir()
    (tmp_path / "val_masks").mkdir()
    source = sorted((SAMPLE / "val").iterdir())[:2]
    for path in source:
        Image.open(path).save(tmp_path / "val" / path.name)
        (tmp_path / "val_masks" / f"{path.stem}.png").write_bytes(
            (SAMPLE / "val_masks" / f"{path.stem}.png").read_bytes()
        )
    InpaintingDataset(tmp_path / "val", FolderMasks(tmp_path / "val_masks"), 64)  # pairs up
    Image.open(source[0]).save(tmp_path / "val" / f"{source[0].stem}.png")  # cat.jpg + cat.png
    with pytest.raises(ValueError, match=rf"{source[0].stem}\.jpg and {source[0].stem}\.png"):
        InpaintingDataset(tmp_path / "val", FolderMasks(tmp_path / "val_masks"), 64)
