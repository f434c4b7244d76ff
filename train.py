"""Train a tokenizer (``experiment=tokenizer``) or a MaskGIT transformer (default).

python train.py trainer.devices=4 mask=cosine
python train.py experiment=tokenizer_cats
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

from maskgit.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
