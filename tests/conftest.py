"""Shared fixtures: tiny real models, the shipped sample images, Hydra composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from maskgit.checkpoints import TOKENIZER_FORMAT, save_atomic
from maskgit.hydra_setup import register_gamma_groups
from maskgit.models.vqgan import VQGAN

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared"
FID_WEIGHTS = SHARED / "models" / "inception" / "weights-inception-2015-12-05-6726825d.pth"

os.environ.setdefault("PROJECT_ROOT", str(ROOT))
register_gamma_groups(CONF)  # the mask/ and schedule/ groups, as train.py and evaluate.py do
# `make test` runs one pytest-xdist worker per core: each worker, and the train/evaluate
# processes it starts, gets its share of the cores instead of all of them (no oversubscription).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
THREADS = max(1, min(2, CORES // WORKERS))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(min(THREADS, torch.get_num_threads()))


def tiny_tokenizer_config() -> dict:
    return yaml.safe_load((CONF / "tokenizer" / "tiny.yaml").read_text())


def tiny_transformer_config(num_codes: int = 64) -> dict:
    return {
        "num_image_tokens": 256,
        "num_codebook_vectors": num_codes,
        "dim": 32,
        "n_layers": 2,
        "hidden_dim": 64,
        "num_heads": 4,
    }


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory) -> Path:
    """A tiny VQGAN (random weights) saved in our compact tokenizer format."""
    torch.manual_seed(0)
    config = tiny_tokenizer_config()
    vqgan = VQGAN(**config)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.pt"
    save_atomic(
        {"format": TOKENIZER_FORMAT, "config": config, "state_dict": vqgan.state_dict()}, path
    )
    return path


@pytest.fixture()
def tiny_maskgit(tiny_tokenizer_path):
    """A tiny MaskGitModule over the tiny tokenizer, with paper decoding settings."""
    from maskgit.modules.maskgit import MaskGitModule

    torch.manual_seed(0)
    return MaskGitModule(
        tokenizer_ckpt=str(tiny_tokenizer_path),
        transformer=tiny_transformer_config(),
        mask_schedule="cosine",
        decoding={
            "_target_": "maskgit.decoding.IterativeDecoder",
            "schedule": {"_target_": "maskgit.schedules.cosine", "_partial_": True},
            "total_iter": 4,
        },
        lr=1e-3,
        warmup_steps=1,
    )


def compose_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/<name>.yaml as the entry points do, with Hydra's runtime fields set."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides or [], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture()
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (the project's shared data) is absent on this machine")
    return SHARED
