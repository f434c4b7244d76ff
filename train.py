"""Train a tokenizer (``experiment=tokenizer``) or a MaskGIT transformer (default).

python train.py trainer.devices=4 mask=cosine
python train.py experiment=tokenizer_cats
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

from maskgit.hydra_setup import register_gamma_groups, single_decoding_names
from maskgit.training import train

# conf/gamma/ is the `mask` and the `schedule` group.
register_gamma_groups(Path(__file__).resolve().parent / "conf")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(single_decoding_names(cfg))


if __name__ == "__main__":
    main()
