"""The second probe round: the API's photo inputs (modes, paths, sizes, memory), and
evaluate.py / train.py on awkward folders (empty, one image, unicode and space names, an
unwritable output folder, two runs into one folder at once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE
from PIL import Image

from maskgit import inpaint, load_maskgit
from maskgit.data.images import ImageFileError

pytestmark = pytest.mark.slow
SHIPPED = ROOT / "checkpoints" / "maskgit_cats_local.safetensors"
PHOTO = sorted((SAMPLE / "val").glob("*.jpg"))[0]
MASK = SAMPLE / "val_masks" / f"{PHOTO.stem}.png"
FAST = {"total_iter": 2}


@pytest.fixture(scope="module")
def shipped():
    return load_maskgit(SHIPPED)


def hole(size: tuple[int, int]) -> np.ndarray:
    """A known-pixel mask (True = known) of size (W, H) with a box hole in the middle."""
    width, height = size
    known = np.ones((height, width), dtype=bool)
    known[height // 3 : height // 2, width // 4 : width // 2] = False
    return known


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_photos_of_every_mode_keep_their_known_pixels_as_rgb(shipped, tmp_path, mode):
    rgb = Image.open(PHOTO).convert("RGB").resize((96, 80))
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        picture = Image.fromarray(grey, mode="I;16")
        expected = np.asarray(rgb.convert("L").convert("RGB"))  # 16 bits scaled to 8
    elif mode == "RGBA":
        picture = rgb.convert("RGBA")  # opaque: compositing on white changes nothing
        expected = np.asarray(rgb)
    else:
        picture = rgb.convert(mode)
        expected = np.asarray(picture.convert("RGB"))
    path = tmp_path / f"photo_{mode.replace(';', '')}.png"
    picture.save(path)
    known = hole((96, 80))
    out = inpaint(shipped, path, known, **FAST)
    assert out.shape == (3, 80, 96)
    got = out.permute(1, 2, 0).mul(255).round().byte().numpy()
    assert np.array_equal(got[known], expected[known]), mode


def test_a_folder_or_a_corrupt_file_as_the_photo_is_named(shipped, tmp_path):
    with pytest.raises(ImageFileError, match=f"{tmp_path}: is a folder, expected an image file"):
        inpaint(shipped, tmp_path, MASK)
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff" + os.urandom(64))
    with pytest.raises(ImageFileError, match=r"broken\.jpg: not a readable image file"):
        inpaint(shipped, corrupt, MASK)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        inpaint(shipped, tmp_path / "missing.png", MASK)


def test_an_all_missing_mask_fills_the_whole_photo(shipped):
    out = inpaint(shipped, PHOTO, np.zeros((64, 64), dtype=bool), **FAST)
    assert out.shape == (3, 64, 64) and torch.isfinite(out).all()
    assert out.std() > 0.02  # a picture, not a flat colour


def test_a_huge_number_of_steps_is_bounded_by_the_hole(shipped):
    # At least one token is committed per step: T beyond the hole's token count ends early.
    out = inpaint(shipped, PHOTO, MASK, total_iter=100_000)
    assert out.shape == (3, 64, 64)


def test_a_4096_pixel_photo_stays_within_a_memory_budget(tmp_path):
    """Everything at the photo's resolution is 8-bit: a 4096x4096 photo (50 MB as RGB) costs
    the process less than 600 MB above its size after loading the model."""
    script = f"""
import resource, numpy as np
from PIL import Image
from maskgit import load_maskgit
from maskgit.api import inpaint_photo
model = load_maskgit({str(SHIPPED)!r})
inpaint_photo(model, np.zeros((64, 64, 3), np.uint8), missing=np.eye(64, dtype=bool))
side = 4096
photo = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
Image.fromarray(photo).save({str(tmp_path / "big.png")!r}); del photo
mask = np.full((side, side), 255, np.uint8); mask[1400:2000, 1500:2300] = 0
Image.fromarray(mask).save({str(tmp_path / "mask.png")!r}); del mask
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fill = inpaint_photo(model, {str(tmp_path / "big.png")!r}, {str(tmp_path / "mask.png")!r})
assert fill.fills[0].shape == (side, side, 3)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth_mb = float(result.stdout.strip().splitlines()[-1])
    assert growth_mb < 600, f"peak memory grew by {growth_mb:.0f} MB"


# --- evaluate.py and train.py on awkward folders ---------------------------------------------


def evaluate(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "data.num_workers=0", "total_iter=2",
         "metrics.fid.enabled=false", *overrides],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip


def pairs(root: Path, names: list[str]) -> Path:
    """``root`` with val/ and val_masks/ holding the sample's first pairs under ``names``."""
    (root / "val").mkdir(parents=True)
    (root / "val_masks").mkdir()
    sources = sorted((SAMPLE / "val").glob("*.jpg"))
    for name, source in zip(names, sources):
        Image.open(source).save(root / "val" / f"{name}.png")
        Image.open(SAMPLE / "val_masks" / f"{source.stem}.png").save(
            root / "val_masks" / f"{name}.png"
        )
    return root


def test_unicode_and_space_names_are_read_and_written_as_given(tmp_path):
    root = pairs(tmp_path / "chats été", ["chat 1", "chaton_ü", "猫"])
    run = tmp_path / "sortie à part"
    result = evaluate(
        f"data_root='{root}'", f"hydra.run.dir='{run}'", f"paths.log_dir={tmp_path}/logs"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run / "inpainted").iterdir()) == [
        "chat 1.png",
        "chaton_ü.png",
        "猫.png",
    ]


def test_an_empty_image_folder_is_named(tmp_path):
    (tmp_path / "data" / "val").mkdir(parents=True)
    (tmp_path / "data" / "val_masks").mkdir()
    result = evaluate(f"data_root={tmp_path / 'data'}", f"paths.log_dir={tmp_path}/logs")
    assert result.returncode != 0
    assert "holds no images" in result.stdout + result.stderr
    assert str(tmp_path / "data") in result.stdout + result.stderr


def test_an_unwritable_output_folder_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = evaluate(f"hydra.run.dir={blocker}/run", f"paths.log_dir={tmp_path}/logs")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"evaluate: error: the output folder '{blocker}/run' cannot be written (Not a "
        "directory); choose another with hydra.run.dir=<folder> (or paths.log_dir=<folder>)"
    ]


def test_two_runs_into_one_folder_at_once_lose_nothing(tmp_path):
    root = pairs(tmp_path / "data", [f"p{k}" for k in range(6)])
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "evaluate.py"), "data.num_workers=0", "total_iter=2",
               "metrics.fid.enabled=false", f"data_root={root}", f"hydra.run.dir={run}",
               f"paths.log_dir={tmp_path}/logs"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    second = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    codes = [first.wait(timeout=300), second.wait(timeout=300)]
    assert codes == [0, 0], [p.stderr.read()[-2000:] for p in (first, second)]
    # Every output is whole and is the one a single run writes.
    alone = tmp_path / "alone"
    assert (
        evaluate(
            f"data_root={root}", f"hydra.run.dir={alone}", f"paths.log_dir={tmp_path}/logs"
        ).returncode
        == 0
    )
    for path in sorted((alone / "inpainted").iterdir()):
        assert np.array_equal(
            np.asarray(Image.open(path)), np.asarray(Image.open(run / "inpainted" / path.name))
        )
    assert not [
        p for p in (run / "inpainted").iterdir() if p.name.startswith(".")
    ]  # no torn temp files
    assert (run / "metrics.json").is_file()


def test_a_one_image_training_folder_trains(tmp_path, tiny_tokenizer_path):
    root = tmp_path / "one"
    (root / "train").mkdir(parents=True)
    Image.open(sorted((SAMPLE / "train").iterdir())[0]).save(root / "train" / "only.png")
    pairs(root, ["v0", "v1"])
    result = subprocess.run(
        [sys.executable, "train.py", "transformer=tiny", "tokenizer=tiny",
         f"tokenizer_ckpt={tiny_tokenizer_path}", f"data_root={root}", "data.num_workers=0",
         "callbacks.inpainting_fid=null", "trainer.max_steps=2", "+trainer.num_sanity_val_steps=0",
         f"paths.log_dir={tmp_path}/logs", f"paths.cache_dir={tmp_path}/cache", "run_name=one"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    checkpoint = torch.load(
        tmp_path / "logs" / "checkpoints" / "one" / "last.ckpt", weights_only=True
    )
    assert checkpoint["global_step"] == 2  # two steps of the one photo (and its flip)
