"""Photos of any size, several fills per hole, and the ``maskgit-inpaint`` command."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE
from PIL import Image

from maskgit import inpaint, load_maskgit
from maskgit.api import decoder_for, inpaint_photo
from maskgit.cli import main as inpaint_command
from maskgit.photo import box_missing, read_missing, window_around

SHIPPED = ROOT / "checkpoints" / "maskgit_cats_local.safetensors"
IMAGE = sorted((SAMPLE / "val").glob("*.jpg"))[0]
FAST = {"total_iter": 2}


@pytest.fixture(scope="module")
def shipped():
    return load_maskgit(SHIPPED)


@pytest.fixture(scope="module")
def wide_photo(tmp_path_factory):
    """A non-square photo (150x100) made from a sample cat, as PNG and JPEG, with a mask of
    its size that has an irregular hole."""
    folder = tmp_path_factory.mktemp("photo")
    cat = Image.open(IMAGE).convert("RGB").resize((100, 100), Image.BICUBIC)
    photo = Image.new("RGB", (150, 100), (40, 90, 160))
    photo.paste(cat, (30, 0))
    known = np.ones((100, 150), dtype=bool)
    known[35:70, 50:95] = False
    known[60:80, 90:110] = False
    mask = Image.fromarray(np.where(known, 255, 0).astype(np.uint8))
    photo.save(folder / "wide.png")
    photo.save(folder / "wide.jpg", quality=90)
    mask.save(folder / "wide_mask.png")
    return folder, known


def test_a_non_square_photo_keeps_its_size_and_every_known_pixel(shipped, wide_photo):
    folder, known = wide_photo
    for name in ("wide.png", "wide.jpg"):
        original = torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB")).copy())
        original = original.permute(2, 0, 1).float() / 255
        result = inpaint(shipped, folder / name, folder / "wide_mask.png", seed=0, **FAST)
        assert result.shape == (3, 100, 150)
        keep = torch.from_numpy(known).expand(3, -1, -1)
        assert torch.equal(result[keep], original[keep]), name
        # The hole is filled with something new, not the photo and not a flat colour.
        hole = result[~keep].view(3, -1)
        assert hole.std(dim=1).min() > 0.02
        assert not torch.allclose(hole, original[~keep].view(3, -1), atol=0.02)


def test_pil_numpy_and_tensor_inputs_give_the_same_fill(shipped, wide_photo):
    folder, known = wide_photo
    pil = Image.open(folder / "wide.png")
    array = np.asarray(pil.convert("RGB"))
    reference = inpaint(shipped, folder / "wide.png", folder / "wide_mask.png", **FAST)
    assert torch.equal(
        inpaint(shipped, pil, Image.open(folder / "wide_mask.png"), **FAST), reference
    )
    assert torch.equal(inpaint(shipped, array, known, **FAST), reference)
    as_tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    assert torch.equal(inpaint(shipped, as_tensor, torch.from_numpy(known), **FAST), reference)
    # A float tensor keeps its own known values, not 8-bit copies of them.
    noisy = (as_tensor.float() / 255 + 0.001).clamp(0, 1)
    out = inpaint(shipped, noisy, torch.from_numpy(known), **FAST)
    keep = torch.from_numpy(known).expand(3, -1, -1)
    assert torch.equal(out[keep], noisy[keep])


def test_num_samples_gives_k_fills_each_the_one_its_seed_gives_alone(shipped, wide_photo):
    folder, _ = wide_photo
    args = (shipped, folder / "wide.png", folder / "wide_mask.png")
    fills = inpaint(*args, seed=3, num_samples=3, **FAST)
    assert fills.shape == (3, 3, 100, 150)
    for k in range(3):
        assert torch.equal(fills[k], inpaint(*args, seed=3 + k, **FAST)), k
    assert not torch.equal(fills[0], fills[1])


def test_per_row_seeds_decode_each_row_as_alone(shipped):
    image = torch.from_numpy(np.asarray(Image.open(IMAGE).convert("RGB")).copy()).permute(2, 0, 1)
    image = image.float().div(255)
    known = torch.ones(1, 64, 64)
    known[:, 16:48, 10:40] = 0
    decoder = decoder_for(shipped, total_iter=3)
    batch = shipped.inpaint(
        image.expand(2, -1, -1, -1), known.expand(2, -1, -1, -1), torch.zeros(2), decoder,
        seed=torch.tensor([5, 9]),
    )  # fmt: skip
    for row, seed in enumerate((5, 9)):
        alone = shipped.inpaint(image[None], known[None], torch.zeros(1), decoder, seed=seed)
        assert torch.equal(batch.tokens[row], alone.tokens[0])


def test_window_is_the_largest_square_centred_on_the_hole():
    missing = np.zeros((100, 150), dtype=bool)
    missing[40:60, 140:150] = True  # at the right edge: the window is clamped inside
    window = window_around(missing)
    assert (window.left, window.top, window.side) == (50, 0, 100)
    missing[:] = False
    missing[10:20, 60:80] = True
    assert window_around(missing).left == 20  # centred on x = 70
    missing[:] = False
    missing[0:10, 0:130] = True  # wider than the photo is tall: reaches outside, centred
    window = window_around(missing)
    assert (window.left, window.top, window.side) == (0, -30, 130)  # all rows inside


def test_masks_of_another_size_and_bad_boxes_are_named():
    with pytest.raises(ValueError, match=r"mask is 64x64, expected 150x100 \(the photo's size\)"):
        read_missing(np.ones((64, 64), dtype=bool), (150, 100))
    with pytest.raises(ValueError, match=r"box 0,0,200,10: expected 0 <= x0 < x1 <= 150"):
        box_missing((150, 100), [(0, 0, 200, 10)])
    assert box_missing((150, 100), [(10, 20, 30, 25)]).sum() == 20 * 5


def test_an_all_known_mask_returns_the_photo_unchanged_and_says_so(shipped, wide_photo):
    folder, _ = wide_photo
    original = np.asarray(Image.open(folder / "wide.png").convert("RGB"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = inpaint(shipped, folder / "wide.png", np.ones((100, 150), dtype=bool))
    assert any("no missing pixel" in str(w.message) for w in caught)
    assert torch.equal(out, torch.from_numpy(original.copy()).permute(2, 0, 1).float() / 255)
    with pytest.raises(ValueError, match="no missing pixel"):
        inpaint_photo(shipped, folder / "wide.png", missing=np.zeros((100, 150), dtype=bool))


def test_inpaint_command_with_a_box_samples_and_a_steps_animation(wide_photo, tmp_path, capsys):
    folder, _ = wide_photo
    out = tmp_path / "filled.png"
    code = inpaint_command(
        [
            str(folder / "wide.jpg"),
            "--box",
            "50,35,95,70",
            "--samples",
            "2",
            "-o",
            str(out),
            "--steps-gif",
            str(tmp_path / "steps.gif"),
            "--total-iter",
            "3",
        ]
    )
    assert code == 0
    photo = np.asarray(Image.open(folder / "wide.jpg").convert("RGB"))
    keep = ~box_missing((150, 100), [(50, 35, 95, 70)])
    fills = [np.asarray(Image.open(tmp_path / f"filled_s{k}.png")) for k in range(2)]
    for fill in fills:
        assert fill.shape == photo.shape and np.array_equal(fill[keep], photo[keep])
    assert not np.array_equal(fills[0], fills[1])
    grid = Image.open(tmp_path / "filled_grid.png")
    assert grid.width > 4 * 150  # photo | masked | fill 0 | fill 1
    gif = Image.open(tmp_path / "steps.gif")
    assert gif.n_frames == 4  # the input and 3 steps
    assert str(tmp_path / "filled_s0.png") in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mask", "MISSING.png"], "does not exist"),
        (["--mask", "SMALL"], r"mask is 64x64, expected 150x100"),
        (["--mask", "WHITE"], "no black \\(missing\\) pixel"),
        (["--box", "0,0,500,5"], "expected 0 <= x0 < x1 <= 150"),
    ],
)
def test_inpaint_command_errors_name_the_problem(wide_photo, tmp_path, capsys, extra, message):
    folder, _ = wide_photo
    Image.new("L", (64, 64), 255).save(tmp_path / "small.png")
    Image.new("L", (150, 100), 255).save(tmp_path / "white.png")
    paths = {"SMALL": tmp_path / "small.png", "WHITE": tmp_path / "white.png"}
    extra = [str(paths.get(value, value)) for value in extra]
    out = tmp_path / "out.png"
    code = inpaint_command([str(folder / "wide.png"), *extra, "-o", str(out)])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_inpaint_command_is_installed_with_a_help_text():
    result = subprocess.run(
        [sys.executable, "-m", "maskgit.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "Inpaint one photo" in result.stdout and "--box" in result.stdout


def test_a_grey_mask_file_of_the_photos_size_is_binarised_with_a_warning(tmp_path):
    values = np.full((40, 60), 255, dtype=np.uint8)
    values[10:20, 10:20] = 0
    values[0, 0] = 200  # anti-aliased: known, but said
    Image.fromarray(values).save(tmp_path / "grey.png")
    with pytest.warns(UserWarning, match=r"grey\.png: 1 mask pixel\(s\) are neither 0 nor 255"):
        missing = read_missing(tmp_path / "grey.png", (60, 40))
    assert missing.sum() == 100 and not missing[0, 0]
