"""Checkpoints are written atomically: a failure while saving keeps the previous file."""

import hydra
import pytest
import torch
from conftest import compose_config

from maskgit.checkpoints import AtomicCheckpointIO, save_atomic


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("interrupted while saving")


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    save_atomic({"step": 1, "weight": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="interrupted"):
        save_atomic({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left


def test_trainer_config_writes_checkpoints_atomically(tmp_path):
    cfg = compose_config("train", [f"paths.output_dir={tmp_path}"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    io = trainer.strategy.checkpoint_io
    io.save_checkpoint({"step": 3}, tmp_path / "a.ckpt")
    assert io.load_checkpoint(tmp_path / "a.ckpt")["step"] == 3
