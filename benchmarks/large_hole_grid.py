"""A picture of the large-hole failure and its progress: the val pairs with the largest holes,
one row each: photo | masked | the fill of each checkpoint given (seed 0) with a hard paste of
the decoder's output and, where its tokenizer has one, with the mask-aware head. A checkpoint
given as ``CKPT:TOKENIZER`` decodes through that tokenizer file (e.g. another head).

    python benchmarks/large_hole_grid.py checkpoints/maskgit_cats_local.safetensors \
        other.safetensors:other_tokenizer.safetensors --labels shipped new \
        --out benchmarks/results/large_holes.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from maskgit.api import decoder_for
from maskgit.data.images import list_images, load_image, load_mask, save_image
from maskgit.inpainting import masked_input
from maskgit.loading import load_maskgit
from maskgit.masking import missing_fraction

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def largest_holes(data_root: Path, count: int) -> list[tuple[Path, Path]]:
    pairs = [(p, data_root / "val_masks" / f"{p.stem}.png") for p in list_images(data_root / "val")]
    share = [float(missing_fraction(load_mask(m, SIZE)[None])) for _, m in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -share[i])
    return [pairs[i] for i in order[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpts", nargs="+", help="MaskGIT checkpoints (CKPT or CKPT:TOKENIZER)")
    parser.add_argument("--labels", nargs="+", help="column labels, one per checkpoint")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared/data/cat_faces")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/large_holes.png")
    args = parser.parse_args()
    pairs = largest_holes(args.data_root, args.count)
    images = torch.stack([load_image(p, SIZE) for p, _ in pairs])
    masks = torch.stack([load_mask(m, SIZE) for _, m in pairs])
    columns, labels = [images, masked_input(images, masks)], ["photo", "masked"]
    keys = torch.arange(len(pairs))
    if args.labels and len(args.labels) != len(args.ckpts):
        parser.error(f"--labels: {len(args.labels)} given for {len(args.ckpts)} checkpoints")
    for index, spec in enumerate(args.ckpts):
        ckpt, _, tokenizer = spec.partition(":")
        model = load_maskgit(ckpt, tokenizer or None)
        name = args.labels[index] if args.labels else Path(ckpt).stem
        heads = [False, True] if model.tokenizer.mask_aware is not None else [False]
        for head in heads:
            decoder = decoder_for(model, paste=True, paste_feather=0, mask_aware_head=head)
            with torch.inference_mode():
                fills = model.inpaint(images, masks, keys, decoder, seed=0).images.float()
            columns.append(fills)
            labels.append(f"{name[:6]}+head" if head else name)
    tiles = torch.stack(columns, 1).flatten(0, 1).clamp(0, 1)
    grid = make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, args.out)
    with Image.open(args.out) as picture:
        header = Image.new("RGB", (picture.width, 14), "white")
        draw = ImageDraw.Draw(header)
        for index, label in enumerate(labels):
            draw.text((2 + index * (SIZE + 2), 1), label[:11], fill="black")
        combined = Image.new("RGB", (picture.width, picture.height + 14), "white")
        combined.paste(header, (0, 0))
        combined.paste(picture.convert("RGB"), (0, 14))
    combined.save(args.out)
    print(f"wrote {args.out}: {len(pairs)} largest-hole val pairs, columns {labels}")


if __name__ == "__main__":
    main()
