"""Run validation (with the FID callback) on N CPU processes and write the logged metrics.

Used by test_ddp_fid.py as a subprocess: Lightning's DDP launcher re-runs this script once
per extra process, which it could not do with pytest itself.

    python tests/ddp_validate.py <tokenizer.pt> <devices> <out.json> <val_limit>
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SAMPLE, tiny_transformer_config

from maskgit.callbacks.inpainting_fid import InpaintingFIDCallback
from maskgit.data.datamodules import InpaintingDataModule
from maskgit.data.masks import FolderMasks
from maskgit.modules.maskgit import MaskGitModule


class SmallFeatures(nn.Module):
    """A small real feature extractor for FID (fixed random conv net)."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float()).flatten(1)


def main() -> None:
    tokenizer, devices, out, limit = (
        sys.argv[1],
        int(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
    )
    torch.manual_seed(0)
    model = MaskGitModule(
        tokenizer_ckpt=tokenizer,
        transformer=tiny_transformer_config(),
        decoding={
            "_target_": "maskgit.decoding.IterativeDecoder",
            "schedule": {"_target_": "maskgit.schedules.cosine", "_partial_": True},
            "total_iter": 3,
        },
    )
    data = InpaintingDataModule(
        train_dir=str(SAMPLE / "train"), val_dir=str(SAMPLE / "val"),
        val_masks=FolderMasks(SAMPLE / "val_masks"), eval_batch_size=3, num_workers=0,
        token_cache=False, val_limit=limit,
    )  # fmt: skip
    callback = InpaintingFIDCallback(feature=SmallFeatures(), seed=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    if trainer.is_global_zero:
        out.write_text(json.dumps({k: float(v) for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
