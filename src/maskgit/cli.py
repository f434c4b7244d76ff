"""``maskgit-inpaint``: inpaint one photo of any size from the command line.

    maskgit-inpaint cat.jpg --mask cat_mask.png -o cat_filled.png
    maskgit-inpaint cat.jpg --box 20,30,44,50 --box 5,5,12,12 --samples 4 --steps-gif steps.gif

The mask has the photo's size, white = keep, black = fill (``--invert-mask`` for the other
convention); ``--box X0,Y0,X1,Y1`` (pixels, X1/Y1 exclusive) marks rectangles to fill
instead. The output keeps the photo's size and every pixel outside the hole.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_CHECKPOINT = "maskgit_cats_local.safetensors"
EXIT_BAD_INPUT = 2


def default_checkpoint() -> Path:
    """$MASKGIT_CKPT, else the shipped model of the project this package is installed from."""
    if os.environ.get("MASKGIT_CKPT"):
        return Path(os.environ["MASKGIT_CKPT"])
    return Path(__file__).resolve().parents[2] / "checkpoints" / DEFAULT_CHECKPOINT


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box {text!r}: expected X0,Y0,X1,Y1 (4 integers)")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskgit-inpaint",
        description="Inpaint one photo with a trained MaskGIT: the hole (a mask or boxes) is "
        "filled by iterative decoding at the model's resolution and pasted back; the output "
        "keeps the photo's size and every known pixel.",
    )
    parser.add_argument("photo", type=Path, help="the photo (PNG, JPEG, WebP, ...; any size)")
    hole = parser.add_mutually_exclusive_group(required=True)
    hole.add_argument("--mask", type=Path, help="mask of the photo's size: white keep, black fill")
    hole.add_argument("--box", type=parse_box, action="append", metavar="X0,Y0,X1,Y1",
                      help="a rectangle to fill (repeatable)")  # fmt: skip
    parser.add_argument("--invert-mask", action="store_true", help="white = fill, black = keep")
    parser.add_argument("-o", "--output", type=Path,
                        help="output PNG (default: <photo stem>_inpainted.png here)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=1, metavar="K",
                        help="K fills (seeds seed..seed+K-1): OUT_s<k>.png and OUT_grid.png")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-gif", type=Path, metavar="GIF",
                        help="also write an animation of the decoding steps (first fill)")  # fmt: skip
    parser.add_argument("--total-iter", type=int, help="T, decoding steps (default 8)")
    parser.add_argument("--schedule", help="gamma schedule (default cosine)")
    parser.add_argument("--sampler", help="confidence | lab | margin | entropy | random | halton")
    parser.add_argument("--ckpt", type=Path, default=None,
                        help=f"MaskGIT checkpoint (default: $MASKGIT_CKPT or checkpoints/{DEFAULT_CHECKPOINT})")  # fmt: skip
    return parser


def outputs_for(output: Path, samples: int) -> list[Path]:
    if samples == 1:
        return [output]
    return [output.with_name(f"{output.stem}_s{k}.png") for k in range(samples)]


def run(args: argparse.Namespace) -> list[Path]:
    """Do the work of one command line; returns the files written."""
    import numpy as np

    from maskgit.api import inpaint_photo
    from maskgit.loading import load_maskgit
    from maskgit.photo import box_missing, read_missing, read_photo
    from maskgit.step_pictures import save_animation, save_picture, strip

    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.total_iter is not None and args.total_iter < 1:
        raise ValueError(f"--total-iter must be >= 1, got {args.total_iter}")
    photo = read_photo(args.photo)
    size = (photo.shape[1], photo.shape[0])
    if args.box:
        missing = box_missing(size, args.box)
    else:
        missing = read_missing(args.mask, size)
        missing = ~missing if args.invert_mask else missing
    if not missing.any():
        raise ValueError(
            f"{args.mask}: the mask has no black (missing) pixel: nothing to fill"
            + ("" if args.invert_mask else " (a mask with white = fill needs --invert-mask)")
        )
    ckpt = args.ckpt or default_checkpoint()
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist; pass --ckpt")
    output = args.output or Path(f"{args.photo.stem}_inpainted.png")
    if output.suffix.lower() != ".png":
        raise ValueError(f"-o {output}: expected a .png name (the known pixels stay exact)")
    options = {"total_iter": args.total_iter, "schedule": args.schedule, "sampler": args.sampler}
    decoding = {name: value for name, value in options.items() if value is not None}
    model = load_maskgit(ckpt)
    fill = inpaint_photo(
        model, photo, missing=missing, seed=args.seed, num_samples=args.samples,
        return_steps=args.steps_gif is not None, **decoding,
    )  # fmt: skip
    from PIL import Image

    written = []
    for path, array in zip(outputs_for(output, args.samples), fill.fills):
        save_picture(Image.fromarray(array), path)
        written.append(path)
    if args.samples > 1:
        masked = np.where(missing[..., None], np.uint8(128), photo)
        grid = output.with_name(f"{output.stem}_grid.png")
        save_picture(strip(photo, masked, fill.fills, scale=1), grid)
        written.append(grid)
    if args.steps_gif is not None:
        save_animation(fill.decoding_frames(), args.steps_gif)
        written.append(args.steps_gif)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    from maskgit.checkpoints import CheckpointError

    try:
        written = run(args)
    except (ValueError, FileNotFoundError, TypeError, CheckpointError) as error:
        print(f"maskgit-inpaint: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in written:
        print(path)
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
