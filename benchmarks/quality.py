"""Inpainting quality benchmark: MaskGIT decoding settings against reference methods.

    python benchmarks/quality.py                      # ../shared cat faces, all 1,000 val pairs
    python benchmarks/quality.py --limit 300 --quick  # fewer images and settings
    python benchmarks/quality.py --limit 200 --name quality_grid200  # the full grid, 200 pairs
    python benchmarks/quality.py --tokenizer new_vqgan.pt --name quality_new  # another decoder
    python benchmarks/quality.py --only "maskgit cosine T=8" --set precision=32 seed=1 \
        --name parity_fp32_seed1                      # any evaluate.py override

Every run goes through evaluate.py's own code (InpaintingEvaluator under Trainer.test); the
real images' Inception features are computed once and shared by all runs. The "tokenizer"
row scores the tokenizer itself: full-image reconstruction PSNR / SSIM / FID and the share
of known tokens that hiding the hole leaves unchanged, away from it and next to it. Writes
benchmarks/results/<name>.{json,md} (name: quality).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from maskgit.checkpoints import load_tokenizer
from maskgit.evaluation import InpaintingEvaluator
from maskgit.hydra_setup import register_gamma_groups
from maskgit.inpainting import hide_missing, tokenize_fp32
from maskgit.loading import tokenizer_of
from maskgit.metrics.fid import build_fid
from maskgit.metrics.tokens import KnownTokenAgreement
from maskgit.provenance import weights_digest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
register_gamma_groups(ROOT / "conf")  # schedule=... as in evaluate.py


def runs(quick: bool) -> list[tuple[str, list[str]]]:
    """(label, evaluate.py overrides) of every run."""
    specs = [("masked_input", ["method=masked_input"]), ("vqgan_recon", ["method=vqgan_recon"])]
    specs += [(f"opencv_{a}", [f"method=opencv_{a}"]) for a in ("telea", "ns")]
    if quick:  # a CPU-sized subset: every schedule at T=8 and sweet_spot 6, T for cosine
        grid = [(s, 8, spot) for s in ("cosine", "linear", "square") for spot in (None, 6)]
        grid += [("cosine", 4, None), ("cosine", 12, None), ("cosine", 8, 4)]
    else:
        grid = [(s, t, None) for s in ("cosine", "linear", "square") for t in (4, 8, 12, 20)]
        grid += [(s, 12, spot) for s in ("cosine", "linear", "square") for spot in (2, 4, 6, 8)]
    for schedule, total, spot in grid:
        label = f"maskgit {schedule} T={total}" + (f" sweet_spot={spot}" if spot else "")
        overrides = [f"schedule={schedule}", f"total_iter={total}"]
        specs.append((label, overrides + ([f"sweet_spot={spot}"] if spot else [])))
    specs.append(("maskgit lab-rule decoding T=8", ["decoding=lab", "total_iter=8"]))
    # cosine T=8 with one option changed: precision parity (and the seed's own noise beside
    # it) and the sampling / paste options.
    # They start from OPTION_BASE, not from the defaults, so a row keeps its meaning when the
    # defaults change.
    base = ["schedule=cosine", "total_iter=8"]
    for option, overrides in OPTION_RUNS.items():
        changed = {override.split("=")[0] for override in overrides}
        fixed = [f"{key}={value}" for key, value in OPTION_BASE.items() if key not in changed]
        specs.append((f"maskgit cosine T=8 {option}", base + fixed + overrides))
    return specs


# The decoding the option rows change one thing of: a hard paste, sampling from every code
# (the defaults until paste_feather and top_k were chosen on the 1,000 val pairs).
OPTION_BASE = {"decoding.paste_feather": "0", "decoding.top_k": "null"}


OPTION_RUNS = {
    "fp32": ["precision=32"],
    "fp32 seed=1": ["precision=32", "seed=1"],
    "bf16 seed=1": ["seed=1"],
    "paste_feather=1": ["decoding.paste_feather=1"],
    "paste_feather=2": ["decoding.paste_feather=2"],
    "paste_feather=3": ["decoding.paste_feather=3"],
    "paste_feather=2 seed=1": ["decoding.paste_feather=2", "seed=1"],
    "top_k=50": ["decoding.top_k=50"],
    "top_k=200": ["decoding.top_k=200"],
    "temperature=0.8": ["decoding.temperature=0.8"],
    "temperature=1.2": ["decoding.temperature=1.2"],
    "choice_temperature=2": ["choice_temperature=2.0"],
    "choice_temperature=8": ["choice_temperature=8.0"],
    # The best paste and the best sampling option together.
    "paste_feather=2 top_k=50": ["decoding.paste_feather=2", "decoding.top_k=50"],
}
OPTION_LABELS = {f"maskgit cosine T=8 {option}" for option in OPTION_RUNS}


TOKENIZER_RUN = "tokenizer"


@torch.inference_mode()
def tokenizer_scores(tokenizer, loader, fid) -> dict:
    """Whole-photo reconstruction PSNR / SSIM / FID (fp32) and known-token agreement."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    psnr = PeakSignalNoiseRatio(data_range=1.0)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
    agreement = KnownTokenAgreement()
    fid.reset()
    for batch in loader:
        images, masks = batch["image"], batch["mask"]
        tokens = tokenize_fp32(tokenizer, images)
        recon = tokenizer.detokenize(tokens).float()
        recon = recon.mul(255).round().div(255)  # scored as 8-bit images, like the others
        psnr.update(recon, images)
        ssim.update(recon, images)
        fid.update(recon, real=False)
        agreement.update(tokenize_fp32(tokenizer, hide_missing(images, masks)), tokens, masks)
    tokens_kept = agreement.compute()
    return {
        "run": TOKENIZER_RUN,
        "recon_psnr": float(psnr.compute()),
        "recon_ssim": float(ssim.compute()),
        "recon_fid": float(fid.compute()),
        "known_tokens_far": float(tokens_kept["far"]),
        "known_tokens_ring": float(tokens_kept["ring"]),
    }


def compose_eval(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    with open_dict(cfg):
        cfg.output_dir = "unused"
        cfg.overrides = overrides
        cfg.paths.output_dir = "unused"
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "cat_faces"))
    parser.add_argument(
        "--ckpt", default=str(ROOT / "checkpoints" / "maskgit_cats_local.safetensors")
    )
    parser.add_argument(
        "--tokenizer", default=None, help="another tokenizer file (e.g. a fine-tuned decoder)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N val pairs (default all)")
    parser.add_argument("--quick", action="store_true", help="fewer decoding settings")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="these runs only (their labels)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--name", default="quality", help="results file stem")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="evaluate.py overrides"
    )
    parser.add_argument(
        "--include", nargs="+", default=[], metavar="NAME",
        help="rows of earlier results files (benchmarks/results/NAME.json, same images) to "
             "put in this table, e.g. the reference methods, which do not depend on --ckpt",
    )  # fmt: skip
    args = parser.parse_args()
    if (args.only or args.tokenizer or args.set) and args.name == "quality":
        parser.error("--only / --tokenizer / --set: give --name too, so the committed results stay")

    common = [f"data_root={args.data_root}", f"ckpt={args.ckpt}", "data.num_workers=0",
              f"data.eval_batch_size={args.batch_size}", "resume=false"]  # fmt: skip
    if args.tokenizer:
        common.append(f"tokenizer_ckpt={args.tokenizer}")
    common += args.set
    if args.limit:
        common.append(f"data.test_limit={args.limit}")
    base = compose_eval(common)
    datamodule = hydra.utils.instantiate(base.data)
    datamodule.setup("test")
    loader = datamodule.test_dataloader()

    fid = build_fid(base.metrics.fid.weights_path, required=True)
    fid.reset_real_features = False  # real features once, shared by every run
    for batch in loader:
        fid.update(batch["image"], real=True)

    specs = runs(args.quick)
    labels = [TOKENIZER_RUN] + [label for label, _ in specs]
    if args.only:
        unknown = set(args.only) - set(labels)
        if unknown:
            parser.error(f"--only: unknown runs {sorted(unknown)}; runs: {labels}")
        specs = [(label, overrides) for label, overrides in specs if label in args.only]
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else tokenizer_of(args.ckpt)
    args.tokenizer_digest = weights_digest(tokenizer)  # recorded: --include compares it
    rerun = {label for label, _ in specs} | (
        {TOKENIZER_RUN} if not args.only or TOKENIZER_RUN in args.only else set()
    )
    table, tokenizer_row = included_rows(args, rerun)
    if not args.only or TOKENIZER_RUN in args.only:
        tokenizer_row = tokenizer_scores(tokenizer.eval(), loader, fid)
        print(
            f"tokenizer: recon PSNR {tokenizer_row['recon_psnr']:.2f} SSIM "
            f"{tokenizer_row['recon_ssim']:.3f} FID {tokenizer_row['recon_fid']:.2f}; known "
            f"tokens unchanged: far {tokenizer_row['known_tokens_far']:.4f} ring "
            f"{tokenizer_row['known_tokens_ring']:.4f}",
            flush=True,
        )
        write(table, int(fid.real_features_num_samples), args, final=False, tokenizer=tokenizer_row)
    for label, overrides in specs:
        cfg = compose_eval(common + overrides)
        method = hydra.utils.instantiate(cfg.method)
        fid.reset()
        with tempfile.TemporaryDirectory() as output_dir:
            evaluator = InpaintingEvaluator(
                method, output_dir, fid, seed=cfg.seed, num_step_grids=0, resume=False,
                reference_is_test_set=False,
            )  # fmt: skip
            trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False,
                                enable_progress_bar=False, accelerator="auto", devices=1)  # fmt: skip
            start = time.perf_counter()
            trainer.test(evaluator, dataloaders=loader, verbose=False)
            wall = time.perf_counter() - start
        metrics = evaluator.results["metrics"]
        row = {"run": label, "overrides": overrides, **metrics, "wall_seconds": wall}
        table.append(row)
        print(f"{label:45s} FID {metrics['fid']:8.2f}  PSNR {metrics['psnr']:6.2f}  "
              f"SSIM {metrics['ssim']:.3f}  {metrics['images_per_second'] or 0:8.1f} img/s", flush=True)  # fmt: skip
        # Rewritten after every run: a stopped benchmark keeps the rows it measured.
        write(table, int(fid.real_features_num_samples), args, final=False, tokenizer=tokenizer_row)

    write(table, int(fid.real_features_num_samples), args, final=True, tokenizer=tokenizer_row)


# Runs whose result depends on the tokenizer's weights (decoder included) besides the images.
TOKENIZER_DEPENDENT = ("vqgan_recon", TOKENIZER_RUN)


def included_rows(args, rerun: set[str]) -> tuple[list[dict], dict | None]:
    """The runs (and tokenizer row) of earlier results files, each marked with its file: over
    the same images, with the same tokenizer for the rows that depend on it; a run this
    invocation measures again replaces its included row."""
    rows, tokenizer = [], None
    for name in args.include:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"--include {name}: {path} does not exist")
        earlier = json.loads(path.read_text())
        theirs = earlier["summary"]["arguments"]
        for key in ("data_root", "limit"):
            if theirs.get(key) != getattr(args, key):
                raise SystemExit(f"--include {name}: its rows are over other images "
                                 f"({key} {theirs.get(key)!r}, here {getattr(args, key)!r})")  # fmt: skip
        same_tokenizer = theirs.get("tokenizer_digest") == args.tokenizer_digest
        for row in earlier["runs"]:
            if row["run"] in rerun:
                continue
            if row["run"].split(" ")[0] in TOKENIZER_DEPENDENT and not same_tokenizer:
                raise SystemExit(f"--include {name}: its {row['run']} row is of another "
                                 "tokenizer (weights digest); measure it again here")  # fmt: skip
            rows.append(dict(row, source=f"{name}.json"))
        if earlier.get("tokenizer") and TOKENIZER_RUN not in rerun:
            if not same_tokenizer:
                raise SystemExit(f"--include {name}: its tokenizer row is of another tokenizer")
            tokenizer = earlier["tokenizer"]
    return rows, tokenizer


REFERENCES = ("vqgan_recon", "opencv_telea", "opencv_ns", "masked_input")


def write(table: list[dict], n_images: int, args, final: bool, tokenizer: dict | None) -> None:
    def best(prefix: str) -> dict:
        # Over the settings of the grid, each at seed 0: not over the option runs (other seeds
        # among them), which are compared with "maskgit cosine T=8" in the table.
        rows = [r for r in table if r["run"].startswith(prefix) and r["run"] not in OPTION_LABELS]
        return min(rows, key=lambda r: r["fid"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    present = {r["run"].split(" ")[0] for r in table}
    schedules = [s for s in ("cosine", "linear", "square") if any(
        r["run"].startswith(f"maskgit {s}") for r in table)]  # fmt: skip
    if not final or "maskgit" not in present or not set(REFERENCES) <= present:
        # A partial table: every row, no summary of the whole comparison.
        summary = {"images": n_images, "complete": False, "arguments": vars(args)}
        partial = {"summary": summary, "tokenizer": tokenizer, "runs": table}
        (RESULTS / f"{args.name}.json").write_text(json.dumps(partial, indent=2))
        if final:
            write_markdown(table, n_images, args, tokenizer, [])
        return
    maskgit_best = best("maskgit")
    summary = {
        "images": n_images,
        "complete": True,
        "best_maskgit": maskgit_best["run"],
        "best_maskgit_fid": maskgit_best["fid"],
        "vqgan_recon_fid": best("vqgan_recon")["fid"],
        "opencv_telea_fid": best("opencv_telea")["fid"],
        "opencv_ns_fid": best("opencv_ns")["fid"],
        "masked_input_fid": best("masked_input")["fid"],
        "arguments": vars(args),
    }
    summary["best_maskgit_over_vqgan_recon"] = (
        summary["best_maskgit_fid"] / summary["vqgan_recon_fid"]
    )
    for schedule in schedules:
        summary[f"best_{schedule}"] = best(f"maskgit {schedule}")["run"]
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps({"summary": summary, "tokenizer": tokenizer, "runs": table}, indent=2)
    )
    closing = [
        "",
        f"Best MaskGIT: {summary['best_maskgit']} (FID {summary['best_maskgit_fid']:.2f}); "
        f"vqgan_recon {summary['vqgan_recon_fid']:.2f} "
        f"(ratio {summary['best_maskgit_over_vqgan_recon']:.2f}x, target <= 2x); "
        f"opencv_telea {summary['opencv_telea_fid']:.2f}, opencv_ns {summary['opencv_ns_fid']:.2f}.",
        "",
        "Best per schedule: " + "; ".join(
            f"{s}: {summary[f'best_{s}']} (FID {best(f'maskgit {s}')['fid']:.2f})"
            for s in schedules),
    ]  # fmt: skip
    write_markdown(table, n_images, args, tokenizer, closing)


def write_markdown(
    table: list[dict], n_images: int, args, tokenizer: dict | None, closing: list[str]
) -> None:
    only = " --only " + " ".join(f'"{label}"' for label in args.only) if args.only else ""
    lines = [
        f"# Inpainting quality ({n_images} val pairs of {Path(args.data_root).name}, "
        f"checkpoint {Path(args.ckpt).name}"
        + (f", tokenizer {Path(args.tokenizer).name}" if args.tokenizer else "")
        + f", device {'cuda' if torch.cuda.is_available() else 'cpu'})",
        "",
        "Command: `python benchmarks/quality.py"
        + (f" --tokenizer {args.tokenizer}" if args.tokenizer else "")
        + (f" --limit {args.limit}" if args.limit else "") + (" --quick" if args.quick else "")
        + (f" --ckpt {args.ckpt}" if Path(args.ckpt).name != "maskgit_cats_local.safetensors" else "")
        + only + (" --set " + " ".join(args.set) if args.set else "")
        + (" --include " + " ".join(args.include) if args.include else "")
        + (f" --name {args.name}" if args.name != "quality" else "") + "`",
        "",
        "| run | FID | masked PSNR | masked SSIM | images/s |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    if tokenizer is not None:
        lines[-2:-2] = [
            f"Tokenizer: whole-photo reconstruction PSNR {tokenizer['recon_psnr']:.2f} dB, SSIM "
            f"{tokenizer['recon_ssim']:.3f}, FID {tokenizer['recon_fid']:.2f}; known tokens "
            f"unchanged when the hole is hidden: {100 * tokenizer['known_tokens_far']:.2f} % away "
            f"from the hole, {100 * tokenizer['known_tokens_ring']:.2f} % next to it.",
            "",
        ]
    for r in table:
        source = f" ({r['source']})" if r.get("source") else ""
        lines.append(
            f"| {r['run']}{source} | {r['fid']:.2f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['images_per_second'] or 0:.1f} |"
        )
    lines += closing
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
