"""Send an image grid to whichever logger is active (TensorBoard, W&B, or files for CSV).

Used by the tokenizer module (reconstructions) and the validation callback (inpaintings)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import make_grid

from maskgit.data.images import save_image


def log_image_grid(
    trainer: L.Trainer, key: str, rows: list[Tensor], nrow: int | None = None
) -> None:
    """Log images [B,3,H,W] in [0,1], one row per tensor of ``rows`` (rank 0 only)."""
    if not trainer.is_global_zero or not rows:
        return
    images = torch.cat([r.detach().float().clamp(0, 1).cpu() for r in rows])
    grid = make_grid(images, nrow=nrow or rows[0].shape[0], padding=2, pad_value=1.0)
    step = trainer.global_step
    for logger in trainer.loggers:
        experiment = logger.experiment
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image(key, grid, step)
        elif hasattr(logger, "log_image"):  # W&B
            logger.log_image(key=key, images=[grid], step=step)
        elif logger.log_dir:  # CSV and others: a PNG beside the metrics
            path = Path(logger.log_dir) / "images" / f"{key.replace('/', '_')}_step{step:07d}.png"
            save_image(grid, path)
