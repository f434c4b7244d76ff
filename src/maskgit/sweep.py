"""Summary of a Hydra multirun of evaluate.py: CSV, markdown table and a plot, in the sweep dir."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = ("fid", "psnr", "ssim", "images_per_second", "wall_seconds")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(
        sweep_dir.glob("*/metrics.json"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    ):
        results = json.loads(path.read_text())
        row: dict[str, Any] = {"job": path.parent.name, "method": results.get("method")}
        for override in results.get("overrides", []):
            key, _, value = override.partition("=")
            row[key.lstrip("+~")] = value
        row.update({name: results["metrics"].get(name) for name in COLUMNS})
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = collect(sweep_dir)
    if not rows:
        return rows
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    plot(rows, sweep_dir / "summary.png")
    return rows


# The options a sweep plot runs along: both count decoding steps, so the axis ticks are integers.
X_OPTIONS = ("sweet_spot", "total_iter")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """FID (or masked PSNR without FID) against sweet_spot or total_iter, a line per schedule."""
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
    figure, axis = plt.subplots(figsize=(5, 3.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get(y_key) is None or row.get(x_key) in (None, "null"):
            continue
        label = (
            f"{row.get('schedule', '')} T={row['total_iter']}"
            if x_key == "sweet_spot" and "total_iter" in row
            else row.get("schedule", "all")
        )
        groups.setdefault(label, []).append((float(row[x_key]), float(row[y_key])))
    for label, points in sorted(groups.items()):
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axis.set_xlabel(x_key)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(y_key.upper() if y_key == "fid" else "masked PSNR (dB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarise every job's metrics.json."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        if rows:
            log.info("Sweep summary (%d jobs): %s", len(rows), sweep_dir / "summary.md")
            print((sweep_dir / "summary.md").read_text(), flush=True)
