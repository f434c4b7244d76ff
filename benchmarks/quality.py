"""Inpainting quality under the verdict protocol: every method and decoding choice on the same
val pairs, each score a mean over seeds with its 95 % intervals, and paired verdicts.

    python benchmarks/quality.py                      # ../shared cat faces, all 1,000 val pairs
    python benchmarks/quality.py --limit 200 --seeds 2 --name quality_try
    python benchmarks/quality.py --suite samplers     # every sampler, T = 4 / 8 / 12
    python benchmarks/quality.py --suite mask_aware   # the shipped tokenizer's head, on and off
    python benchmarks/quality.py --ckpt checkpoints/other.safetensors --name quality_other

Every run goes through evaluate.py's own code (InpaintingEvaluator under Trainer.test, the
same seeds, hard paste unless a row says otherwise); the real images' Inception features are
computed once and shared by all runs; MaskGIT rows that differ only in their compositing
read one decoding (the trajectory cache). Seeded methods (MaskGIT, PatchMatch) run ``--seeds``
seeds; deterministic ones (OpenCV, vqgan_recon, masked_input) one, their seed interval being
zero. Each row reports FID with its seed interval (t, over seeds) and its image interval
(bootstrap over images), masked PSNR / SSIM with seed intervals, and the FID of the holes
above 40 % of the photo (against all real images). The decisions section compares each
candidate with the current default pairwise over the same images (``maskgit.compare``).
The "tokenizer" row scores the tokenizer itself: full-image reconstruction PSNR / SSIM /
FID and the share of known tokens that hiding the hole leaves unchanged. Writes
benchmarks/results/<name>.{json,md} (name: the suite) and keeps each run's evaluation folder
(per-image scores, fills) in logs/quality/<name>/<run>: ``--only ... --keep-others`` re-runs
some rows and pairs them with the kept ones, and ``python -m maskgit.compare`` any two later.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from maskgit.baselines import MaskGitInpainter
from maskgit.checkpoints import load_tokenizer
from maskgit.compare import compare_scores, resampled
from maskgit.evaluation import InpaintingEvaluator, run_settings, trajectory_settings
from maskgit.hydra_setup import register_gamma_groups
from maskgit.inpainting import hide_missing, tokenize_fp32
from maskgit.loading import tokenizer_of
from maskgit.metrics.fid import build_fid, frechet_distance
from maskgit.metrics.intervals import percentile_interval, t_interval
from maskgit.metrics.per_image import PER_IMAGE_FILE, read_per_image
from maskgit.metrics.tokens import KnownTokenAgreement
from maskgit.provenance import settings_digest, weights_digest
from maskgit.trajectory_cache import TrajectoryCache

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
register_gamma_groups(ROOT / "conf")  # schedule=... as in evaluate.py

DEFAULT_CKPT = ROOT / "checkpoints" / "maskgit_cats_local.safetensors"
LARGE_HOLE = 0.4  # the "large holes" column: images with more than this share missing
DEFAULT = "maskgit"  # the row of evaluate.py's defaults
# (label, evaluate.py overrides, seeded). The compositing rows keep the method's fill and
# blend it over 2 known pixels: for OpenCV and PatchMatch, whose output outside the hole is
# the input, that blend changes nothing (tests/test_verdicts.py), so they have one row.
RUNS = [
    (DEFAULT, [], True),
    ("maskgit top_k=null", ["decoding.top_k=null"], True),
    ("maskgit paste_feather=2", ["paste_feather=2"], True),
    ("patchmatch", ["method=patchmatch"], True),
    ("vqgan_recon", ["method=vqgan_recon"], False),
    ("vqgan_recon paste_feather=2", ["method=vqgan_recon", "paste_feather=2"], False),
    ("opencv_telea", ["method=opencv_telea"], False),
    ("opencv_ns", ["method=opencv_ns"], False),
    ("masked_input", ["method=masked_input"], False),
]
# (candidate, against): the paired verdicts the table reports. The first decides top_k under
# a hard paste; the second measures what the old default (top_k 50 + a 2-pixel feather)
# gained by rewriting known pixels; the others place MaskGIT against its references.
DECISIONS = [
    ("maskgit top_k=null", DEFAULT),
    ("maskgit paste_feather=2", DEFAULT),
    ("patchmatch", DEFAULT),
    ("vqgan_recon", DEFAULT),
]


# The samplers side by side (``--suite samplers``): every sampler at T = 8, the three
# families (confidence, Halton order, random order) also at T = 4 and 12; each row's diversity is
# that of its seeds' fills. Verdicts: each against confidence at the same T (hard paste, the
# same images and seeds). A sampler chooses tokens, so the tokenizer's mask-aware head is off:
# the rows compare the tokens alone.
SAMPLER_BASELINE = "confidence"
SAMPLER_RUNS = [
    (
        f"{sampler} T={steps}",
        [f"sampler={sampler}", f"total_iter={steps}", "decoding.mask_aware_head=false"],
        True,
    )
    for steps in (4, 8, 12)
    for sampler in (
        ("confidence", "halton", "random", "margin", "entropy", "lab")
        if steps == 8
        else ("confidence", "halton", "random")
    )
]
SAMPLER_DECISIONS = [
    (label, f"{SAMPLER_BASELINE} T={label.split('T=')[1]}")
    for label, _, _ in SAMPLER_RUNS
    if not label.startswith(SAMPLER_BASELINE)
]
# A tokenizer's mask-aware head (``--suite mask_aware [--tokenizer FILE]``): the same decoding
# (one trajectory) composited three ways, and the tokenizer's ceiling (the photo's own tokens
# in the hole) with and without the head. The head keeps every known pixel exact; the feather
# rewrites 2 pixels around the hole.
MASK_AWARE_RUNS = [
    ("hard paste", ["decoding.mask_aware_head=false"], True),
    ("mask-aware head", ["decoding.mask_aware_head=true"], True),
    ("paste_feather=2", ["decoding.mask_aware_head=false", "paste_feather=2"], True),
    ("vqgan_recon hard paste", ["method=vqgan_recon", "decoding.mask_aware_head=false"], False),
    ("vqgan_recon mask-aware head", ["method=vqgan_recon", "decoding.mask_aware_head=true"], False),
]
MASK_AWARE_DECISIONS = [
    ("mask-aware head", "hard paste"),
    ("mask-aware head", "paste_feather=2"),
    ("vqgan_recon mask-aware head", "vqgan_recon hard paste"),
]
SUITES = {
    "quality": (RUNS, DECISIONS),
    "samplers": (SAMPLER_RUNS, SAMPLER_DECISIONS),
    "mask_aware": (MASK_AWARE_RUNS, MASK_AWARE_DECISIONS),
}

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
    parser.add_argument("--ckpt", default=str(DEFAULT_CKPT))
    parser.add_argument(
        "--tokenizer", default=None, help="another tokenizer file (e.g. a fine-tuned decoder)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N val pairs (default all)")
    parser.add_argument("--suite", choices=sorted(SUITES), default="quality",
                        help="quality: every method and the defaults; samplers: sampler x T; "
                        "mask_aware: a tokenizer's head against the hard and feathered pastes")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the seeded methods")
    parser.add_argument("--bootstrap", type=int, default=100, help="image resamples")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="these runs only (their labels)")
    parser.add_argument("--keep-others", action="store_true",
                        help="with --only: keep the other rows and verdicts already in the results file")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--name", default=None, help="results file stem (default: the suite)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="the runs' evaluation folders (default logs/quality/<name>); "
                        "kept rows found there join the paired verdicts")  # fmt: skip
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="evaluate.py overrides"
    )
    args = parser.parse_args()
    given_name = args.name
    args.name = args.name or args.suite
    other_model = args.tokenizer or Path(args.ckpt).name != DEFAULT_CKPT.name
    if (other_model or args.set) and given_name is None and args.suite != "mask_aware":
        parser.error("--ckpt / --tokenizer / --set: give --name too, so the committed results stay")

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
        fid.update(batch["image"], real=True, keys=batch["index"])

    specs, decisions_wanted = SUITES[args.suite]
    labels = [TOKENIZER_RUN] + [label for label, _, _ in specs]
    if args.only:
        unknown = set(args.only) - set(labels)
        if unknown:
            parser.error(f"--only: unknown runs {sorted(unknown)}; runs: {labels}")
        by_label = {spec[0]: spec for spec in specs}  # run in the order asked
        specs = [by_label[label] for label in args.only if label in by_label]
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else tokenizer_of(args.ckpt)
    if args.suite == "mask_aware" and getattr(tokenizer, "mask_aware", None) is None:
        parser.error("--suite mask_aware: the tokenizer has no mask-aware head (--tokenizer FILE)")
    args.tokenizer_digest = weights_digest(tokenizer)
    tokenizer_row = None
    if args.suite == "quality" and (not args.only or TOKENIZER_RUN in args.only):
        tokenizer_row = tokenizer_scores(tokenizer.eval(), loader, fid)
        print(f"tokenizer: {tokenizer_row}", flush=True)
    table: list[dict] = []
    kept_rows: list[dict] = []
    kept_decisions: list[dict] = []
    previous = RESULTS / f"{args.name}.json"
    if args.keep_others and previous.is_file():  # rows measured earlier, not re-run now
        old = json.loads(previous.read_text())
        # Kept rows must score the same images, model and seeds as the rows measured now; the
        # tokenizer by its weights where recorded (the same file under another name is kept).
        same = ("data_root", "ckpt", "limit", "seeds", "set", "bootstrap")
        differ = [k for k in same if old["arguments"].get(k) != vars(args).get(k)]
        tokenizer_key = (
            "tokenizer_digest" if "tokenizer_digest" in old["arguments"] else "tokenizer"
        )
        if old["arguments"].get(tokenizer_key) != vars(args).get(tokenizer_key):
            differ.append(tokenizer_key)
        if differ:
            then = ", ".join(f"{k}={old['arguments'].get(k)!r}" for k in differ)
            parser.error(
                f"--keep-others: {previous} was measured with other {', '.join(differ)} "
                f"({then}); re-run all rows, or give another --name"
            )
        rerun = {label for label, _, _ in specs}
        kept_rows = [row for row in old["runs"] if row["run"] not in rerun]
        kept_decisions = old.get("decisions", [])
        tokenizer_row = tokenizer_row or old.get("tokenizer")
    scores: dict[str, dict] = {}  # label -> metric -> Resampled

    def in_suite_order(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda r: labels.index(r["run"]) if r["run"] in labels else 99)

    runs_dir = args.runs_dir or ROOT / "logs" / "quality" / args.name
    for row in kept_rows:  # their folders, where kept, pair with the rows measured now
        if (folder(runs_dir, row["run"]) / PER_IMAGE_FILE).is_file():
            scores[row["run"]] = run_scores(folder(runs_dir, row["run"]), args.bootstrap)
    for label, overrides, seeded in specs:
        cfg = compose_eval(common + overrides)
        method = hydra.utils.instantiate(cfg.method)
        if isinstance(method, MaskGitInpainter):  # rows differing in the paste decode once
            key = settings_digest(trajectory_settings(run_settings(cfg, method), method))
            cache = TrajectoryCache(Path(cfg.paths.cache_dir) / "trajectories", key)
            if args.suite != "samplers":  # the samplers suite measures decoding speed too
                method.use_trajectories(cache, decode_full=True)
        fid.reset()
        output_dir = folder(runs_dir, label)
        shutil.rmtree(output_dir, ignore_errors=True)  # this benchmark's own folder, re-run
        evaluator = InpaintingEvaluator(
            method, output_dir, fid, seed=cfg.seed, num_step_grids=0, resume=False,
            num_seeds=args.seeds if seeded else 1, bootstrap=0, real_features_ready=True,
        )  # fmt: skip
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False,
                            enable_progress_bar=False, accelerator="auto", devices=1)  # fmt: skip
        start = time.perf_counter()
        trainer.test(evaluator, dataloaders=loader, verbose=False)
        wall = time.perf_counter() - start
        metrics = evaluator.results["metrics"]
        # The image interval from the same resamples the paired verdicts use (computed once).
        scores[label] = run_scores(output_dir, args.bootstrap)
        resampled_fid = scores[label]["fid"]
        metrics["fid_ci95_images"] = (  # None under MIN_GROUP_FID_IMAGES images
            percentile_interval(resampled_fid.replicates, resampled_fid.value)
            if resampled_fid is not None
            else None
        )
        row = {"run": label, "overrides": overrides, "dir": str(output_dir), **metrics,
               "wall_seconds": wall, **large_hole_fid(output_dir)}  # fmt: skip
        table.append(row)
        print(f"{label:40s} FID {cell(row, 'fid')}  images {interval(row['fid_ci95_images'])}  "
              f"PSNR {cell(row, 'psnr')}  large holes {cell(row, 'fid_large_holes')}", flush=True)  # fmt: skip
        # Rewritten after every row with the verdicts measured so far: a stopped benchmark
        # keeps its rows and the verdicts between them.
        decisions = decide(scores, decisions_wanted)
        measured = {(d["candidate"], d["against"]) for d in decisions}
        kept = [d for d in kept_decisions if (d["candidate"], d["against"]) not in measured]
        rows = in_suite_order(kept_rows + table)
        write(rows, kept + decisions, int(fid.real_features_num_samples), args, tokenizer_row)
    table = in_suite_order(kept_rows + table)
    if args.suite == "samplers":
        plot_samplers(table, RESULTS / f"{args.name}.png")


def folder(runs_dir: Path, label: str) -> Path:
    return runs_dir / label.replace(" ", "_")


def run_scores(run_dir: Path, bootstrap: int) -> dict:
    """FID / PSNR / SSIM of a run folder with its image resamples (the same draws for every
    run of the same images, so any two pair)."""
    run = read_per_image(run_dir)
    return {metric: resampled(run, metric, bootstrap) for metric in ("fid", "psnr", "ssim")}


def large_hole_fid(run_dir: Path) -> dict:
    """FID of the images whose hole exceeds LARGE_HOLE of the photo, against all the real
    images, per seed, with the seed interval."""
    run = read_per_image(run_dir)
    if run.real_features is None:
        return {}
    real = run.real_features.double()
    mean = real.mean(0)
    cov = (real - mean).t() @ (real - mean) / (real.shape[0] - 1)
    values, count = [], 0
    for index, (keys, features) in run.fake.items():
        quality = run.quality[index]
        large = set(quality["keys"][quality["missing"] > LARGE_HOLE].tolist())
        rows = torch.tensor([k in large for k in keys.tolist()])
        count = int(rows.sum())
        if count >= 2:
            values.append(float(frechet_distance(mean, cov, features[rows].double())))
    if not values:
        return {}
    return {
        "fid_large_holes": sum(values) / len(values),
        "fid_large_holes_per_seed": values,
        "fid_large_holes_ci95": t_interval(values),
        "large_hole_images": count,
    }


def decide(scores: dict[str, dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """The paired verdict of each (candidate, against) pair measured (FID, PSNR, SSIM),
    from the runs' image resamples (the same draws for every run)."""
    decisions = []
    for candidate, against in pairs:
        if candidate not in scores or against not in scores:
            continue
        for metric in ("fid", "psnr", "ssim"):
            a, b = scores[candidate][metric], scores[against][metric]
            if a is None or b is None:
                continue
            comparison = compare_scores(metric, a, b)
            decisions.append({"candidate": candidate, "against": against, **vars(comparison)})
    return decisions


def plot_samplers(table: list[dict], path: Path) -> None:
    """FID against T per sampler, with the seed intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_sampler: dict[str, list[tuple[int, dict]]] = {}
    for row in table:
        sampler, steps = row["run"].split(" T=")
        by_sampler.setdefault(sampler, []).append((int(steps), row))
    figure, axis = plt.subplots(figsize=(6, 4))
    for sampler, points in sorted(by_sampler.items()):
        points.sort()
        steps = [t for t, _ in points]
        means = [r["fid"] for _, r in points]
        bounds = [r.get("fid_ci95") or [r["fid"], r["fid"]] for _, r in points]
        errors = [
            [m - b[0] for m, b in zip(means, bounds)],
            [b[1] - m for m, b in zip(means, bounds)],
        ]
        axis.errorbar(steps, means, yerr=errors, marker="o", capsize=3, label=sampler,
                      linestyle="-" if len(points) > 1 else "none")  # fmt: skip
    axis.set_xlabel("steps T")
    axis.set_ylabel("FID (mean of seeds, 95 % interval)")
    axis.set_xticks(sorted({t for points in by_sampler.values() for t, _ in points}))
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def interval(bounds) -> str:
    return f"[{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else "-"


def cell(row: dict, name: str, digits: int = 2) -> str:
    value = row.get(name)
    if value is None:
        return "n/a"
    return f"{value:.{digits}f} {interval(row.get(f'{name}_ci95'))}"


def write(
    table: list[dict], decisions: list[dict], n_images: int, args, tokenizer: dict | None
) -> None:
    """benchmarks/results/<name>.json and .md; rewritten after every run, so a stopped
    benchmark keeps the rows it measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    diverse = any("diversity_l1" in r for r in table)
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    data = {"images": n_images, "arguments": arguments, "tokenizer": tokenizer,
            "runs": [{k: v for k, v in r.items() if k != "dir"} for r in table],
            "decisions": decisions}  # fmt: skip
    (RESULTS / f"{args.name}.json").write_text(json.dumps(data, indent=2))
    lines = [
        f"# Inpainting quality ({n_images} val pairs of {Path(args.data_root).name}, "
        f"checkpoint {Path(args.ckpt).name}"
        + (f", tokenizer {Path(args.tokenizer).name}" if args.tokenizer else "")
        + f", device {'cuda' if torch.cuda.is_available() else 'cpu'})",
        "",
        "Command: `python benchmarks/quality.py"
        + (f" --tokenizer {args.tokenizer}" if args.tokenizer else "")
        + (f" --limit {args.limit}" if args.limit else "")
        + (f" --suite {args.suite}" if args.suite != "quality" else "")
        + (f" --seeds {args.seeds}" if args.seeds != 3 else "")
        + (f" --ckpt {args.ckpt}" if Path(args.ckpt).name != DEFAULT_CKPT.name else "")
        + (" --only " + " ".join(f'"{label}"' for label in args.only) if args.only else "")
        + (" --set " + " ".join(args.set) if args.set else "")
        + (f" --name {args.name}" if args.name != args.suite else "") + "`",
        "",
        f"Each score is the mean over the seeds (MaskGIT and PatchMatch: {args.seeds} seeds, "
        f"{', '.join(str(s) for s in range(args.seeds))}; the deterministic methods one) with "
        "its 95 % t-interval over seeds in brackets; `FID images` is FID's 95 % interval over "
        f"{args.bootstrap} resamples of the images (what another test set of this size could "
        "give). Every method is pasted the same way: a hard paste (every known pixel exact) "
        "unless the row says paste_feather=2. `FID holes > 40 %`: the images missing more "
        "than 40 % of the photo, against all real images. All choices below were made on "
        "these same val pairs (no held-out set): read the decisions as in-sample.",
        "",
        "| run | seeds | FID | FID images | FID holes > 40 % | masked PSNR | masked SSIM | images/s |"
        + (" diversity L1 | diversity changed |" if diverse else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if diverse else ""),
    ]  # fmt: skip
    if tokenizer is not None:
        lines[4:4] = [
            f"Tokenizer: whole-photo reconstruction PSNR {tokenizer['recon_psnr']:.2f} dB, SSIM "
            f"{tokenizer['recon_ssim']:.3f}, FID {tokenizer['recon_fid']:.2f}; known tokens "
            f"unchanged when the hole is hidden: {100 * tokenizer['known_tokens_far']:.2f} % away "
            f"from the hole, {100 * tokenizer['known_tokens_ring']:.2f} % next to it.",
            "",
        ]
    for r in table:
        lines.append(
            f"| {r['run']} | {len(r.get('seeds', []))} | {cell(r, 'fid')} | "
            f"{interval(r.get('fid_ci95_images'))} | {cell(r, 'fid_large_holes')} | "
            f"{cell(r, 'psnr')} | {cell(r, 'ssim', 3)} | {r.get('images_per_second') or 0:.1f} |"
            + (
                f" {cell(r, 'diversity_l1', 4)} | {cell(r, 'diversity_changed', 3)} |"
                if diverse
                else ""
            )
        )
    if decisions:
        lines += [
            "",
            "## Paired verdicts (the same images, masks and seeds; the difference resampled "
            "over the same image indices)",
            "",
            "| candidate | against | metric | candidate - against | 95 % interval | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for d in decisions:
            verdict = {"A better": "candidate better", "B better": "candidate worse"}.get(
                d["verdict"], d["verdict"]
            )
            lines.append(
                f"| {d['candidate']} | {d['against']} | {d['metric']} | {d['difference']:+.3f} | "
                f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {verdict} |"
            )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(table) - 2 :]), flush=True)


if __name__ == "__main__":
    main()
