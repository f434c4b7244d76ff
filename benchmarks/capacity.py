"""Capacity at equal compute: each transformer size's FID on the val pairs against the
training compute it had, paired verdicts where one size's checkpoints bracket another's
compute, and the compute each size's curve projects to the quality targets.

    python benchmarks/capacity.py

Reads benchmarks/results/curves/capacity.json: per size (a conf/transformer/ name), its
evaluated checkpoints, each with the steps it trained (batch 32), its wall hours, and the
benchmarks/quality.py row that scored it (results file, run label, run folder; every row a
hard paste over the same 1,000 val pairs and seeds, so any two pair image by image; a pair
whose run folders are gone, logs/ being outside git, keeps the verdict capacity.json recorded).
Training compute is C = (6 N + 6 L s d) tokens: N transformer parameters, L layers, s tokens
per image, d width (the forward + backward cost of Kaplan et al. 2020, attention included). Writes
benchmarks/results/capacity.{md,json,png}.

A bracket verdict: size A's checkpoint with *less* compute than size B's, better than B by the
paired FID interval, means A wins at B's compute (A only improves with more); B better than
A's checkpoint with *more* compute means B wins. Anything else is undecided. The projection
fits FID = a + b ln C through a size's seed means: a rough trend from a few chunks (each with
its own restarted learning-rate schedule), not a promise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from maskgit.compare import check_pairable, compare_scores, resampled
from maskgit.metrics.per_image import PER_IMAGE_FILE, PerImage, read_per_image
from maskgit.models.transformer import BidirectionalTransformer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPEC = RESULTS / "curves" / "capacity.json"
BATCH = 32
TOKENS = 256  # 64 px / 4 = 16 x 16 tokens per image
TARGETS = (2.0, 1.5)  # FID as a multiple of vqgan_recon's (issue "quality 2")
BOOTSTRAP = 100


def flops_per_token(size: str) -> tuple[float, int]:
    """Training FLOPs per token of a conf/transformer/ size, and its parameter count."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "transformer"), version_base="1.3"):
        cfg = compose(config_name=size)
    model = BidirectionalTransformer(
        num_image_tokens=TOKENS, dim=cfg.dim, n_layers=cfg.n_layers,
        hidden_dim=cfg.hidden_dim, num_heads=cfg.num_heads,
    )  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    return 6 * params + 6 * cfg.n_layers * TOKENS * cfg.dim, params


def row_of(results: str, run: str) -> dict:
    data = json.loads((RESULTS / results).read_text())
    rows = [row for row in data["runs"] if row["run"] == run]
    if not rows:
        raise SystemExit(f"{RESULTS / results}: no run {run!r}")
    return rows[0]


def fit_log_compute(points: list[dict]) -> tuple[float, float] | None:
    """Least squares FID = a + b ln C through the points; None under two points."""
    if len(points) < 2:
        return None
    xs = [math.log(p["pflop"]) for p in points]
    ys = [p["fid"] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return mean_y - slope * mean_x, slope


def projected_pflop(fit: tuple[float, float] | None, target: float) -> float | None:
    """The compute where the fitted curve reaches ``target``; None where it never does."""
    if fit is None or fit[1] >= 0:
        return None
    return math.exp((target - fit[0]) / fit[1])


def load_points(spec: dict) -> dict[str, list[dict]]:
    sizes: dict[str, list[dict]] = {}
    for size, entries in spec["sizes"].items():
        per_token, params = flops_per_token(size)
        sizes[size] = []
        for entry in entries:
            row = row_of(entry["results"], entry["run"])
            run_dir = ROOT / entry["folder"]
            # Evaluation folders live in logs/, outside git: one that is gone (another
            # machine) keeps its point, and its pairs their recorded verdicts.
            if not (run_dir / PER_IMAGE_FILE).is_file():
                run_dir = None
            sizes[size].append({
                **entry, "size": size, "params": params,
                "pflop": per_token * entry["steps"] * BATCH * TOKENS / 1e15,
                "fid": row["fid"], "fid_ci95": row["fid_ci95"], "psnr": row["psnr"],
                "psnr_ci95": row["psnr_ci95"], "ssim": row["ssim"],
                "fid_large_holes": row.get("fid_large_holes"), "run_dir": run_dir,
            })  # fmt: skip
        sizes[size].sort(key=lambda p: p["pflop"])
    return sizes


def bracket_verdicts(sizes: dict[str, list[dict]], recorded: list[dict]) -> list[dict]:
    """Paired FID verdicts at each size's nearest checkpoints in compute. A pair whose
    per-image scores are not all here reuses its verdict in ``recorded`` (the last
    capacity.json), or says it was not compared."""
    recorded_pairs = {(v["a"], v["b"]): v for v in recorded if v["ci95"] is not None}
    runs: dict[Path, PerImage] = {}  # each run's per-image file, read once
    fids: dict[Path, object] = {}

    def run_of(point: dict) -> PerImage:
        if point["run_dir"] not in runs:
            runs[point["run_dir"]] = read_per_image(point["run_dir"])
        return runs[point["run_dir"]]

    def fid_of(point: dict):
        if point["run_dir"] not in fids:
            fids[point["run_dir"]] = resampled(run_of(point), "fid", BOOTSTRAP)
        return fids[point["run_dir"]]

    verdicts, compared = [], set()
    for size_b, points_b in sizes.items():
        for b in points_b:
            for size_a, points_a in sizes.items():
                if size_a == size_b:
                    continue
                below = [a for a in points_a if a["pflop"] <= b["pflop"]]
                above = [a for a in points_a if a["pflop"] >= b["pflop"]]
                # Only the nearest checkpoint on each side decides anything; a pair met
                # again from the other size's side is the same comparison.
                for a, side in ((below[-1] if below else None, "less"),
                                (above[0] if above else None, "more")):  # fmt: skip
                    if a is None or frozenset((a["label"], b["label"])) in compared:
                        continue
                    compared.add(frozenset((a["label"], b["label"])))
                    if a["run_dir"] is None or b["run_dir"] is None:
                        verdicts.append(recorded_pairs.get((a["label"], b["label"])) or {
                            "a": a["label"], "b": b["label"], "a_compute": side,
                            "fid_difference": None, "ci95": None,
                            "verdict": "not compared: re-run the command in "
                            + " and ".join(
                                str(Path(p["results"]).with_suffix(".md"))
                                for p in (a, b) if p["run_dir"] is None
                            )
                            + " for the per-image scores",
                        })  # fmt: skip
                        continue
                    check_pairable(run_of(a), run_of(b))
                    result = compare_scores("fid", fid_of(a), fid_of(b))
                    low, high = result.ci95
                    if side == "less" and high < 0:
                        verdict = f"{size_a} better at {size_b}'s compute"
                    elif side == "more" and low > 0:
                        verdict = f"{size_b} better at its compute"
                    else:
                        verdict = "undecided"
                    verdicts.append({
                        "a": a["label"], "b": b["label"], "a_compute": side,
                        "fid_difference": result.difference, "ci95": [low, high],
                        "verdict": verdict,
                    })  # fmt: skip
    return verdicts


def write(sizes: dict[str, list[dict]], verdicts: list[dict], reference: float) -> None:
    targets = {factor: factor * reference for factor in TARGETS}
    lines = [
        "# Capacity at equal compute (1,000 val pairs of cat_faces, 3 seeds, hard paste)",
        "",
        "Command: `python benchmarks/capacity.py` (the points: "
        "`benchmarks/results/curves/capacity.json`). Compute: training FLOPs, (6 N + 6 L s d) "
        "per token, N the transformer's parameters; wall hours as logged (2-core CPU, partly "
        "shared, some chunks on 1 thread: a rough guide only). FID with its 95 % interval over "
        "the seeds. Targets: FID "
        + ", ".join(f"{f:g}x vqgan_recon = {t:.2f}" for f, t in targets.items())
        + f" (vqgan_recon {reference:.2f}).",
        "",
        "| size | checkpoint | parameters | steps | PFLOP | wall hours | FID | masked PSNR "
        "| masked SSIM | FID holes > 40 % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, points in sizes.items():
        for p in points:
            low, high = p["fid_ci95"]
            holes = f"{p['fid_large_holes']:.1f}" if p["fid_large_holes"] else "-"
            lines.append(
                f"| {size} | {p['label']} | {p['params'] / 1e6:.2f} M | {p['steps']:,} | "
                f"{p['pflop']:.2f} | {p['wall_hours']:.2f} | {p['fid']:.2f} [{low:.2f}, "
                f"{high:.2f}] | {p['psnr']:.2f} | {p['ssim']:.3f} | {holes} |"
            )
    lines += ["", "## Bracket verdicts (paired FID, a - b, the same images and seeds)", "",
              "| a | b | a's compute | FID a - b | 95 % interval | verdict |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for v in verdicts:
        if v["ci95"] is None:
            lines.append(f"| {v['a']} | {v['b']} | {v['a_compute']} | - | - | {v['verdict']} |")
            continue
        lines.append(
            f"| {v['a']} | {v['b']} | {v['a_compute']} | {v['fid_difference']:+.2f} | "
            f"[{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}] | {v['verdict']} |"
        )
    lines += ["", "## Projection (FID = a + b ln C through each size's seed means)", ""]
    projections = {}
    for size, points in sizes.items():
        fit = fit_log_compute(points)
        if fit is None:
            lines.append(f"- {size}: one checkpoint, no curve to project.")
            continue
        hours_per_pflop = sum(p["wall_hours"] for p in points) / sum(p["pflop"] for p in points)
        parts = []
        projections[size] = {"a": fit[0], "b": fit[1]}
        for factor, target in targets.items():
            pflop = projected_pflop(fit, target)
            projections[size][f"{factor:g}x"] = pflop
            parts.append(
                f"{factor:g}x ({target:.2f}): "
                + (f"{pflop:.1f} PFLOP, about {pflop * hours_per_pflop:.0f} wall hours "
                   "at this size's logged pace" if pflop else "not reached by the fit")
            )  # fmt: skip
        lines.append(
            f"- {size}: FID = {fit[0]:.2f} {fit[1]:+.2f} ln(PFLOP) through "
            f"{len(points)} checkpoints; " + "; ".join(parts) + "."
        )
    (RESULTS / "capacity.md").write_text("\n".join(lines) + "\n")
    clean = {s: [{k: v for k, v in p.items() if k != "run_dir"} for p in ps]
             for s, ps in sizes.items()}  # fmt: skip
    (RESULTS / "capacity.json").write_text(json.dumps(
        {"points": clean, "verdicts": verdicts, "projections": projections,
         "reference_fid": reference, "targets": targets}, indent=1))  # fmt: skip
    plot(sizes, projections, targets)


def plot(sizes: dict[str, list[dict]], projections: dict, targets: dict) -> None:
    figure, axis = plt.subplots(figsize=(7, 5))
    for size, points in sizes.items():
        xs = [p["pflop"] for p in points]
        ys = [p["fid"] for p in points]
        errors = [[p["fid"] - p["fid_ci95"][0] for p in points],
                  [p["fid_ci95"][1] - p["fid"] for p in points]]  # fmt: skip
        line = axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=size)
        if size in projections:
            fit = projections[size]
            reached = [fit[f"{factor:g}x"] for factor in targets if fit[f"{factor:g}x"]]
            end = max([xs[-1] * 4, *reached])
            grid = [xs[0] * (end / xs[0]) ** (i / 50) for i in range(51)]
            axis.plot(grid, [fit["a"] + fit["b"] * math.log(x) for x in grid], linestyle="--",
                      color=line[0].get_color(), alpha=0.6)  # fmt: skip
    axis.set_xscale("log")
    for factor, target in targets.items():
        axis.axhline(target, color="grey", linestyle=":")
        axis.text(axis.get_xlim()[0], target, f" {factor:g}x vqgan_recon", va="bottom")
    axis.set_xlabel("training compute (PFLOP)")
    axis.set_ylabel("FID, 1,000 val pairs, hard paste (3 seeds, 95 %)")
    axis.set_title("transformer sizes at equal compute")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "capacity.png", dpi=110)


def main() -> None:
    spec = json.loads(SPEC.read_text())
    reference = row_of(spec["reference"]["results"], spec["reference"]["run"])["fid"]
    sizes = load_points(spec)
    previous = RESULTS / "capacity.json"
    recorded = json.loads(previous.read_text())["verdicts"] if previous.is_file() else []
    verdicts = bracket_verdicts(sizes, recorded)
    write(sizes, verdicts, reference)
    print((RESULTS / "capacity.md").read_text())


if __name__ == "__main__":
    main()
