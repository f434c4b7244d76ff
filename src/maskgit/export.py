"""Turn training checkpoints into the compact fp16 files that are shipped and evaluated.

    python -m maskgit.export tokenizer logs/checkpoints/tokenizer_cats_local/last.ckpt \
        checkpoints/vqgan_cats_local.safetensors
    python -m maskgit.export maskgit logs/checkpoints/maskgit_cats_local/last.ckpt \
        checkpoints/maskgit_cats_local.safetensors \
        --tokenizer checkpoints/vqgan_cats_local.safetensors

A name ending in .safetensors writes safetensors (tensors + a JSON header: nothing in it can
run code when loaded); any other name a weights-only torch.save of the same entries.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from maskgit.checkpoints import export_tokenizer
from maskgit.loading import export_maskgit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m maskgit.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("kind", choices=["tokenizer", "maskgit"])
    parser.add_argument("checkpoint", type=Path, help="a Lightning .ckpt written by train.py")
    parser.add_argument("out", type=Path, help="the compact file to write")
    parser.add_argument("--tokenizer", type=Path, help="maskgit: the compact tokenizer it uses")
    parser.add_argument(
        "--config",
        type=Path,
        help="tokenizer: its conf/tokenizer/*.yaml, for checkpoints without one",
    )
    args = parser.parse_args(argv)
    if args.kind == "tokenizer":
        config = yaml.safe_load(args.config.read_text()) if args.config else None
        out = export_tokenizer(args.checkpoint, args.out, config)
    else:
        if args.tokenizer is None:
            parser.error("maskgit export needs --tokenizer <compact tokenizer file>")
        out = export_maskgit(args.checkpoint, args.out, args.tokenizer)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
