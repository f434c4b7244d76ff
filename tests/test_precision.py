"""precision=auto: bf16 where the hardware has bf16 matrix units, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

import maskgit.precision as precision


@pytest.fixture()
def cpu_units(monkeypatch):
    """Stub PyTorch's CPU capability queries: (avx512_bf16, amx_tile)."""

    def stub(avx512_bf16: bool, amx: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return stub


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "32")],
)
def test_auto_follows_the_cpu_bf16_units(cpu_units, avx512_bf16, amx, expected):
    cpu_units(avx512_bf16, amx)
    assert precision.resolve("auto", "cpu") == expected
    trainer = {"bf16": "bf16-mixed", "32": "32-true"}[expected]
    assert precision.trainer_precision("auto", "cpu") == trainer


def test_auto_on_this_cpu_uses_pytorchs_own_query():
    has_units = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert precision.resolve("auto", "cpu") == ("bf16" if has_units else "32")


@pytest.mark.parametrize("avx512_bf16", [True, False])
def test_forced_precision_ignores_the_hardware(cpu_units, avx512_bf16):
    cpu_units(avx512_bf16, False)
    assert precision.trainer_precision("32", "cpu") == "32-true"
    assert precision.trainer_precision("bf16", "cpu") == "bf16-mixed"
    assert precision.resolve("32", "cpu") == "32"


def test_lightning_values_pass_through_and_unknown_values_are_named():
    assert precision.trainer_precision("16-mixed", "gpu") == "16-mixed"
    assert precision.trainer_precision("bf16-true", "cpu") == "bf16-true"
    with pytest.raises(ValueError, match=r"decoding\.precision must be one of auto, 32, bf16"):
        precision.resolve("fp8", "cpu", "decoding.precision")


def test_autocast_context_matches_the_resolved_precision(cpu_units):
    cpu_units(False, False)
    x = torch.randn(4, 4)
    with precision.autocast("auto", torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    with precision.autocast("bf16", torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), precision.autocast("32", x.device):
        assert (x @ x).dtype == torch.float32  # "32" stays fp32 inside a bf16-mixed Trainer


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_composed_configs_resolve_the_trainer_precision(cpu_units, name):
    cpu_units(True, False)
    cfg = compose_config(name, ["trainer.accelerator=cpu"])
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.decoding.precision == "auto"
    cpu_units(False, False)
    assert compose_config(name, ["trainer.accelerator=cpu"]).trainer.precision == "32-true"
    forced = compose_config(name, ["precision=32", "trainer.accelerator=cpu"])
    assert forced.trainer.precision == "32-true" and str(forced.decoding.precision) == "32"


def test_codebook_lookup_stays_fp32_under_autocast():
    from conftest import tiny_tokenizer_config

    from maskgit.models.vqgan import VQGAN

    torch.manual_seed(0)
    vqgan = VQGAN(**tiny_tokenizer_config()).eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        _, reference, _ = vqgan.encode(images)
        latents = vqgan.encode_latents(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z_q, _, _ = vqgan.codebook(latents)
    assert z_q.dtype == torch.float32
    assert reference.dtype == torch.long
