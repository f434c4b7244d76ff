"""Inpaint images with a trained MaskGIT (or a reference method) and report FID & co.

python evaluate.py ckpt=checkpoints/maskgit_cats.pt schedule=square total_iter=20
python evaluate.py -m sweet_spot=2,4,6,8 schedule=cosine,linear,square
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

from maskgit.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
