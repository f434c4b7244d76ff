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
from maskgit.hydra_setup import register_gamma_groups, single_decoding_names

# conf/gamma/ is the `mask` and the `schedule` group.
register_gamma_groups(Path(__file__).resolve().parent / "conf")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return evaluate(single_decoding_names(cfg))


if __name__ == "__main__":
    main()
