"""The README's picture: sample val photos, their masks and the shipped model's fills.

python docs/pictures.py            # writes docs/images/fills.png (seed 0, defaults)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maskgit.api import inpaint
from maskgit.data.images import load_image, load_mask
from maskgit.inpainting import masked_input
from maskgit.loading import load_maskgit
from maskgit.step_pictures import save_picture, stack_rows, strip

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
# Sample val photos with holes of several shapes and sizes.
STEMS = ["00126", "00448", "00660", "01102", "01476", "01692"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt", default=str(ROOT / "checkpoints" / "maskgit_cats_local.safetensors")
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "fills.png")
    args = parser.parse_args()
    model = load_maskgit(args.ckpt)
    rows = []
    for stem in STEMS:
        photo = SAMPLE / "val" / f"{stem}.jpg"
        mask = SAMPLE / "val_masks" / f"{stem}.png"
        image, known = load_image(photo, 64), load_mask(mask, 64)
        fill = inpaint(model, photo, mask, seed=0)
        rows.append(strip(image, masked_input(image, known), [fill], scale=2))
    pairs = [stack_rows([a, b]) for a, b in zip(rows[0::2], rows[1::2])]
    from PIL import Image

    width = sum(p.width for p in pairs)
    picture = Image.new("RGB", (width, max(p.height for p in pairs)), (255, 255, 255))
    x = 0
    for part in pairs:
        picture.paste(part, (x, 0))
        x += part.width
    save_picture(picture, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
