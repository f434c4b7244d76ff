"""The public Python API: ``from maskgit import load_maskgit, inpaint, save_image``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SAMPLE, compose_config

import maskgit
from maskgit import inpaint, load_image, load_mask, load_maskgit, save_image

SHIPPED = ROOT / "checkpoints" / "maskgit_cats_local.safetensors"
IMAGE = sorted((SAMPLE / "val").glob("*.jpg"))[0]
MASK = SAMPLE / "val_masks" / f"{IMAGE.stem}.png"


@pytest.fixture(scope="module")
def shipped():
    return load_maskgit(SHIPPED)


def test_inpaints_one_file_keeping_every_known_pixel(shipped, tmp_path):
    result = inpaint(shipped, IMAGE, MASK, seed=0)
    original, known = load_image(IMAGE, 64), load_mask(MASK, 64).bool().expand(3, -1, -1)
    assert result.shape == (3, 64, 64) and result.dtype == torch.float32
    assert 0 < (~known).sum() < known.numel()
    assert torch.equal(result[known], original[known])
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    # The hole is filled, not left grey as in the masked input.
    assert not torch.allclose(result[~known], torch.full_like(result[~known], 0.5), atol=0.05)

    # Saved and read back: the known pixels keep their 8-bit values exactly.
    out = tmp_path / "inpainted.png"
    save_image(result, out)
    assert torch.equal(load_image(out, 64)[known], original[known])

    # Tensors give what files give; the seed fixes the result.
    from_tensors = inpaint(shipped, original, load_mask(MASK, 64)[0], seed=0)
    assert torch.equal(from_tensors, result)


def test_decoding_options_override_the_models_settings(shipped):
    short = inpaint(shipped, IMAGE, MASK, total_iter=2, schedule="linear")
    assert short.shape == (3, 64, 64)
    with pytest.raises(TypeError, match="unknown decoding option"):
        inpaint(shipped, IMAGE, MASK, total_iters=2)
    with pytest.raises(ValueError, match=r"mask is 32x32, expected 48x40 \(the photo's size\)"):
        inpaint(shipped, torch.zeros(3, 40, 48), torch.ones(32, 32))


def test_importing_the_package_does_not_import_lightning():
    code = "import sys, maskgit; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert {"load_maskgit", "inpaint", "save_image"} <= set(dir(maskgit))


def test_tensor_inputs_of_every_dtype_and_their_ranges(shipped):
    image, mask = load_image(IMAGE, 64), load_mask(MASK, 64)[0]
    reference = inpaint(shipped, image, mask, seed=0)
    as_uint8 = (image * 255).round().byte()
    assert torch.equal(inpaint(shipped, as_uint8, mask, seed=0), reference)
    for same_mask in (mask.bool(), mask.byte(), (mask * 255).byte(), mask[None]):
        assert torch.equal(inpaint(shipped, image, same_mask, seed=0), reference)
    # A float image in [0, 255] would come back on that scale: refused, saying what to do.
    with pytest.raises(ValueError, match=r"image: float values must lie in \[0, 1\].*255"):
        inpaint(shipped, image * 255, mask)
    with pytest.raises(ValueError, match="image: expected a float tensor"):
        inpaint(shipped, as_uint8.long(), mask)


def test_one_set_of_decoding_defaults_for_evaluate_the_api_the_command_and_the_app():
    import hydra

    from maskgit.api import decoder_for

    cfg = compose_config("evaluate")
    from_config = hydra.utils.instantiate(cfg.decoding)
    from_api = decoder_for()
    for name in ("total_iter", "sweet_spot", "choice_temperature", "temperature", "top_k",
                 "sample", "token_threshold", "paste", "paste_feather", "mask_aware_head",
                 "precision"):  # fmt: skip
        assert getattr(from_api, name) == getattr(from_config, name), name
    ratios = torch.linspace(0, 1, 11)
    assert torch.allclose(from_api.schedule(ratios), from_config.schedule(ratios))
    assert type(from_api.sampler) is type(from_config.sampler)
    assert vars(from_api.sampler) == vars(from_config.sampler)
