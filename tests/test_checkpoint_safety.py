"""No checkpoint runs code when it is loaded, through any entry point; shipped weights are
safetensors, and exports round-trip through it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FID_WEIGHTS, ROOT, SAMPLE, tiny_transformer_config
from hydra.errors import InstantiationException

from maskgit.checkpoints import (
    MASKGIT_FORMAT,
    AtomicCheckpointIO,
    CheckpointError,
    is_safetensors,
    load_tokenizer,
    read_checkpoint,
)
from maskgit.export import main as export_main
from maskgit.loading import export_maskgit, load_maskgit
from maskgit.metrics.fid import build_fid
from maskgit.modules.maskgit import MaskGitModule


class CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: a full unpickler creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(folder: Path, like: dict | None = None) -> tuple[Path, Path]:
    """A checkpoint that looks like ``like`` (or a bare state_dict) with a payload inside;
    returns (the file, the marker the payload would create)."""
    marker = folder / "payload-ran"
    data = dict(like or {"weight": torch.ones(2)})
    data["payload"] = CreatesFile(marker)
    path = folder / "evil.pt"
    torch.save(data, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture()
def evil(tmp_path) -> tuple[Path, Path]:
    return evil_checkpoint(tmp_path)


@pytest.fixture()
def tiny_module(tiny_tokenizer_path) -> MaskGitModule:
    torch.manual_seed(0)
    return MaskGitModule(
        tokenizer_ckpt=str(tiny_tokenizer_path), transformer=tiny_transformer_config()
    )


def lightning_checkpoint(module: MaskGitModule) -> dict:
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "global_step": 7,
        "epoch": 1,
    }
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def refused(error: pytest.ExceptionInfo, path: Path) -> bool:
    return names_the_refused_open(str(error.value)) and str(path) in str(error.value)


def names_the_refused_open(message: str) -> bool:
    # ``open`` pickles as ``io.open`` (``builtins.open`` on some Pythons).
    return (
        re.search(r"needs (io|builtins)\.open", message) is not None and "weights_only" in message
    )


def test_the_payload_would_run_under_a_full_unpickler(evil):
    # The probe itself works: without weights_only the file is created.
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_read_checkpoint_refuses_naming_the_type(evil):
    path, marker = evil
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert refused(error, path) and not marker.exists()


def test_api_and_tokenizer_loaders_never_run_the_payload(
    tiny_module, tiny_tokenizer_path, tmp_path
):
    # Shaped like a real MaskGIT and a real tokenizer file: the format checks come too late.
    maskgit_path, marker = evil_checkpoint(tmp_path, lightning_checkpoint(tiny_module))
    with pytest.raises(CheckpointError) as error:
        load_maskgit(maskgit_path, str(tiny_tokenizer_path))
    assert refused(error, maskgit_path) and not marker.exists()
    tokenizer_path, marker = evil_checkpoint(tmp_path, read_checkpoint(tiny_tokenizer_path))
    with pytest.raises(CheckpointError) as error:
        load_tokenizer(tokenizer_path)
    assert refused(error, tokenizer_path) and not marker.exists()
    with pytest.raises(CheckpointError):  # a good MaskGIT over an evil tokenizer
        good = tmp_path / "good.ckpt"
        torch.save(lightning_checkpoint(tiny_module), good)
        load_maskgit(good, str(tokenizer_path))
    assert not marker.exists()


def test_export_never_runs_the_payload(tiny_module, tiny_tokenizer_path, tmp_path):
    path, marker = evil_checkpoint(tmp_path, lightning_checkpoint(tiny_module))
    for argv in (
        ["maskgit", str(path), str(tmp_path / "out.safetensors"), "--tokenizer",
         str(tiny_tokenizer_path)],
        ["tokenizer", str(path), str(tmp_path / "tok.safetensors")],
    ):  # fmt: skip
        with pytest.raises(CheckpointError):
            export_main(argv)
    assert not marker.exists() and not list(tmp_path.glob("*.safetensors"))


def test_lightning_resume_reads_weights_only(evil):
    path, marker = evil
    with pytest.raises(CheckpointError) as error:
        AtomicCheckpointIO().load_checkpoint(path)
    assert refused(error, path) and not marker.exists()


def test_fid_weights_are_checked_before_torch_fidelity_unpickles_them(evil):
    path, marker = evil
    with pytest.raises(CheckpointError) as error:
        build_fid(str(path))
    assert refused(error, path) and not marker.exists()


def test_train_entry_points_never_run_the_payload(tiny_tokenizer_path, tmp_path):
    from test_train_entry import run_train, stage2

    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for image in sorted((SAMPLE / "train").iterdir())[:4]:
        shutil.copy(image, data / "train" / image.name)
    for option in ("ckpt_path", "init_from", "tokenizer_ckpt"):
        path, marker = evil_checkpoint(tmp_path)
        overrides = [*stage2(tiny_tokenizer_path, data, tmp_path), f"{option}={path}"]
        # tokenizer_ckpt fails inside Hydra's instantiate, which wraps the CheckpointError.
        with pytest.raises((CheckpointError, InstantiationException)) as error:
            run_train([*overrides, "data.val_dir=null", "data.val_masks=null"], tmp_path / "o")
        assert refused(error, path) and not marker.exists(), option


@pytest.mark.slow
@pytest.mark.parametrize("option", ["ckpt", "tokenizer_ckpt"])
def test_evaluate_never_runs_the_payload(option, tiny_module, tmp_path):
    path, marker = evil_checkpoint(tmp_path, lightning_checkpoint(tiny_module))
    good = tmp_path / "good.ckpt"
    torch.save(lightning_checkpoint(tiny_module), good)
    target = {
        "ckpt": [f"ckpt={path}"],
        "tokenizer_ckpt": [f"ckpt={good}", f"tokenizer_ckpt={path}"],
    }
    result = subprocess.run(
        [sys.executable, "evaluate.py", *target[option], f"hydra.run.dir={tmp_path / 'run'}",
         "metrics.fid.enabled=false", "data.test_limit=2", "data.num_workers=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode != 0
    assert names_the_refused_open(result.stderr)
    assert not marker.exists()


def test_export_writes_safetensors_that_load_to_the_same_model(tiny_tokenizer_path, tmp_path):
    tokenizer = tmp_path / "tokenizer.safetensors"
    export_main(["tokenizer", str(tiny_tokenizer_path), str(tokenizer)])
    torch.manual_seed(0)
    module = MaskGitModule(tokenizer_ckpt=str(tokenizer), transformer=tiny_transformer_config())
    source = tmp_path / "last.ckpt"
    torch.save(lightning_checkpoint(module), source)
    out = export_maskgit(source, tmp_path / "maskgit.safetensors", tokenizer)
    assert is_safetensors(out) and is_safetensors(tokenizer) and not is_safetensors(source)
    data = read_checkpoint(out)
    assert data["format"] == MASKGIT_FORMAT
    assert data["tokenizer"] == {
        "path": "tokenizer.safetensors",
        "fingerprint": module.tokenizer_fingerprint,
    }
    assert data["training"]["global_step"] == 7 and data["training"]["from"] == "last.ckpt"
    loaded = load_maskgit(out)
    assert loaded.hparams.transformer == module.hparams.transformer
    for key, value in module.transformer.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[key], value.half().float()), key
    # An older .pt export of the same weights still loads, weights-only.
    legacy = export_maskgit(source, tmp_path / "maskgit.pt", tokenizer)
    assert not is_safetensors(legacy)
    assert torch.equal(load_maskgit(legacy).transformer.bias, loaded.transformer.bias)


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(
        CheckpointError, match=r"broken\.safetensors: cannot be read as a safetensors"
    ):
        read_checkpoint(path)


def test_shipped_weights_are_safetensors_and_load():
    shipped = sorted((ROOT / "checkpoints").glob("*.*"))
    weights = [p for p in shipped if p.suffix != ".md"]
    assert weights and all(p.suffix == ".safetensors" and is_safetensors(p) for p in weights)
    model = load_maskgit(ROOT / "checkpoints" / "maskgit_cats_local.safetensors")
    assert model.hparams.tokenizer_ckpt.endswith("vqgan_cats_local.safetensors")
    assert read_checkpoint(ROOT / "checkpoints" / "maskgit_cats_local.safetensors")["training"]


def test_the_fid_weights_load_weights_only():
    if not FID_WEIGHTS.is_file():
        pytest.skip(f"{FID_WEIGHTS} (shared Inception weights) is absent on this machine")
    assert read_checkpoint(FID_WEIGHTS)
