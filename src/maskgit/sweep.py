"""Summary of a Hydra multirun of evaluate.py: CSV, markdown table and a plot, in the sweep dir.

Jobs that differ only in ``seed`` are one setting: their per-seed values are pooled (mean and
95 % t-interval over all their seeds), never drawn as separate points. The best setting (lowest
FID, or highest masked PSNR without FID) is marked, and every other setting is compared with it
pairwise over the same images (``maskgit.compare``): where the interval of the difference holds
0 it is marked a tie, statistically indistinguishable from the best.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from maskgit.compare import DEFAULT_BOOTSTRAP, ComparisonError, check_pairable, resampled
from maskgit.metrics.intervals import paired_difference, t_interval, verdict
from maskgit.metrics.per_image import PerImage, PerImageError, read_per_image

log = logging.getLogger(__name__)

SCORES = ("fid", "psnr", "ssim")
TIMES = ("images_per_second", "wall_seconds")
# Overrides that only repeat a setting with other noise: pooled, not a setting of their own.
SEED_OPTIONS = ("seed", "num_seeds")


@dataclass
class Setting:
    """The jobs of one setting (the same overrides but for the seed)."""

    options: dict[str, str]
    jobs: list[Path] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def per_seed(self, name: str) -> list[float]:
        values: list[float] = []
        for result in self.results:
            metrics = result["metrics"]
            values += metrics.get(f"{name}_per_seed") or (
                [metrics[name]] if metrics.get(name) is not None else []
            )
        return values

    def seeds(self) -> list[int]:
        return [s for r in self.results for s in r["metrics"].get("seeds", [r.get("seed", 0)])]

    def per_image(self) -> PerImage:
        """The jobs' per-image results as one run with all their seeds."""
        runs = [read_per_image(job) for job in self.jobs]
        merged = PerImage(seeds=[], real_keys=runs[0].real_keys,
                          real_features=runs[0].real_features, fake={}, quality={})  # fmt: skip
        for run in runs:
            offset = len(merged.seeds)
            merged.seeds += run.seeds
            merged.fake.update({offset + i: v for i, v in run.fake.items()})
            merged.quality.update({offset + i: v for i, v in run.quality.items()})
        return merged


def options_of(result: dict[str, Any]) -> dict[str, str]:
    options = {}
    for override in result.get("overrides", []):
        key, _, value = override.partition("=")
        options[key.lstrip("+~")] = value
    return options


def collect(sweep_dir: Path) -> list[Setting]:
    """The sweep's settings in job order, each with its jobs' metrics.json."""
    settings: dict[str, Setting] = {}
    for path in sorted(
        sweep_dir.glob("*/metrics.json"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    ):
        result = json.loads(path.read_text())
        options = {k: v for k, v in options_of(result).items() if k not in SEED_OPTIONS}
        options = {"method": result.get("method", ""), **options}
        setting = settings.setdefault(json.dumps(options, sort_keys=True), Setting(options))
        setting.jobs.append(path.parent)
        setting.results.append(result)
    return list(settings.values())


def summarise(settings: list[Setting], bootstrap: int = DEFAULT_BOOTSTRAP) -> list[dict[str, Any]]:
    """One row per setting: its options, each score's mean over all its seeds with the
    t-interval, FID's image interval (a single job's), and the verdict against the best."""
    rows = []
    for setting in settings:
        row: dict[str, Any] = {"jobs": ",".join(job.name for job in setting.jobs)}
        row.update(setting.options)
        row["seeds"] = len(setting.seeds())
        for name in SCORES:
            values = setting.per_seed(name)
            row[name] = sum(values) / len(values) if values else None
            row[f"{name}_ci95"] = t_interval(values) if values else None
        if len(setting.results) == 1:
            row["fid_ci95_images"] = setting.results[0]["metrics"].get("fid_ci95_images")
        for name in TIMES:
            values = [r["metrics"].get(name) for r in setting.results]
            values = [v for v in values if v is not None]
            row[name] = sum(values) / len(values) if values else None
        rows.append(row)
    mark_best_and_ties(settings, rows, bootstrap)
    return rows


def mark_best_and_ties(settings: list[Setting], rows: list[dict[str, Any]], bootstrap: int) -> None:
    """``verdict``: best / tie (indistinguishable from the best) / worse, and ``vs_best``: the
    difference from the best with its paired interval over images."""
    metric = "fid" if all(r["fid"] is not None for r in rows) else "psnr"
    scored = [i for i, r in enumerate(rows) if r[metric] is not None]
    if not scored:
        return
    lower = metric == "fid"
    best = min(scored, key=lambda i: rows[i][metric] * (1 if lower else -1))
    rows[best]["verdict"] = f"best ({metric})"
    if len(scored) < 2:
        return
    try:
        best_run = settings[best].per_image()
        best_score = resampled(best_run, metric, bootstrap)
    except PerImageError as error:
        log.warning("no paired verdicts: %s", error)
        return
    for index in scored:
        if index == best:
            continue
        try:
            run = settings[index].per_image()
            check_pairable(run, best_run)
            score = resampled(run, metric, bootstrap)
        except (PerImageError, ComparisonError) as error:
            rows[index]["verdict"] = f"not compared: {error}"
            continue
        if score is None or best_score is None:
            continue
        difference, interval = paired_difference(score, best_score)
        rows[index]["vs_best"] = f"{difference:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"
        tie = verdict(difference, interval, lower) == "indistinguishable"
        rows[index]["verdict"] = "tie with best" if tie else "worse"


def notes_of(settings: list[Setting]) -> list[str]:
    return sorted(
        {
            r["metrics"]["fid_note"]
            for s in settings
            for r in s.results
            if r["metrics"].get("fid_note")
        }
    )


def write_summary(sweep_dir: Path, bootstrap: int = DEFAULT_BOOTSTRAP) -> list[dict[str, Any]]:
    settings = collect(sweep_dir)
    if not settings:
        return []
    rows = summarise(settings, bootstrap)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value: Any) -> str:
        if isinstance(value, list) and len(value) == 2:
            return f"[{value[0]:.3f}, {value[1]:.3f}]"
        return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = [
        "Each score: the mean over the setting's seeds; `_ci95`: 95 % t-interval over seeds; "
        "`fid_ci95_images`: over image resamples; `vs_best`: the difference from the best "
        "setting with its paired 95 % interval over the same images; a tie is a setting whose "
        "interval holds 0.",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    lines += ["", *[f"Note: {note}" for note in notes_of(settings)]]
    (sweep_dir / "summary.md").write_text("\n".join(lines).rstrip() + "\n")
    plot(rows, sweep_dir / "summary.png")
    return rows


# The options a sweep plot runs along: both count decoding steps, so the axis ticks are integers.
X_OPTIONS = ("sweet_spot", "total_iter")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Each setting's mean with its seed interval as an error bar against sweet_spot or
    total_iter, a line per schedule (and T); ties with the best hollow."""
    import matplotlib.pyplot as plt

    figure = sweep_figure(rows)
    if figure is None:
        return
    figure.savefig(path, dpi=120)
    plt.close(figure)


def sweep_figure(rows: list[dict[str, Any]]):
    """The summary plot's matplotlib figure (None: no swept step option to plot against)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    x_key = next((k for k in X_OPTIONS if any(k in r for r in rows)), None)
    y_key = "fid" if any(r.get("fid") is not None for r in rows) else "psnr"
    if x_key is None:
        return None
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get(y_key) is None or row.get(x_key) in (None, "null"):
            continue
        label = (
            f"{row.get('schedule', '')} T={row['total_iter']}"
            if x_key == "sweet_spot" and "total_iter" in row
            else row.get("schedule", "all")
        )
        groups.setdefault(label, []).append(row)
    spans = []
    for label, members in sorted(groups.items()):
        members.sort(key=lambda r: float(r[x_key]))
        xs = [float(r[x_key]) for r in members]
        ys = [float(r[y_key]) for r in members]
        errors = [
            [y - (r.get(f"{y_key}_ci95") or [y, y])[0] for y, r in zip(ys, members)],
            [(r.get(f"{y_key}_ci95") or [y, y])[1] - y for y, r in zip(ys, members)],
        ]
        line = axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
        for x, y, r in zip(xs, ys, members):
            verdict_text = str(r.get("verdict", ""))
            if verdict_text.startswith(("best", "tie")):
                axis.plot([x], [y], marker="*" if verdict_text.startswith("best") else "o",
                          markersize=12, markerfacecolor="none",
                          markeredgecolor=line.lines[0].get_color())  # fmt: skip
        for r in members:
            for key in (f"{y_key}_ci95", "fid_ci95_images" if y_key == "fid" else ""):
                if r.get(key):
                    spans.append(r[key][1] - r[key][0])
    # The axis spans at least the widest interval around the points, so a gap smaller than
    # the uncertainty does not fill the plot as if it were a trend.
    values = [float(r[y_key]) for members in groups.values() for r in members]
    if values and spans:
        middle, half = (max(values) + min(values)) / 2, (max(values) - min(values)) / 2
        half = max(half + max(spans) / 2, max(spans))
        axis.set_ylim(middle - half, middle + half)
    axis.set_xlabel(x_key)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(
        (y_key.upper() if y_key == "fid" else "masked PSNR (dB)") + " (mean, 95 % seed interval)"
    )
    axis.set_title("star: best; circled: statistically tied with it", fontsize=8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarise every job's metrics.json."""

    def __init__(self, bootstrap: int = DEFAULT_BOOTSTRAP) -> None:
        self.bootstrap = bootstrap

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir, self.bootstrap)
        if rows:
            log.info("Sweep summary (%d settings): %s", len(rows), sweep_dir / "summary.md")
            print((sweep_dir / "summary.md").read_text(), flush=True)
