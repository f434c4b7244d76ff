"""Learning curves of the shipped models against CPU hours, from the chunks' metric logs.

    python benchmarks/learning_curves.py

Reads benchmarks/results/curves/chunks.json (one entry per training chunk: its stage, the
metrics.csv Lightning's CSVLogger wrote, its wall minutes and steps) and writes
benchmarks/results/learning_curves.png: stage 1 val PSNR and reconstruction FID (logged from
the adversarial chunks on) and stage 2 val FID against the CPU hours spent by that stage
(steps spread evenly over each chunk's wall time). A chunk with a ``series`` (a capacity
candidate) starts its own hours at 0 and is drawn dashed; an ``arm_of`` chunk (an A/B arm)
starts where the chunk it names started, beside it, and adds no hours.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CURVES = Path(__file__).resolve().parent / "results" / "curves"
# One panel per (stage, metric column, y label, title).
PANELS = [
    ("tokenizer", "val/psnr", "val PSNR (dB, 500 val photos)", "stage 1: tokenizer PSNR"),
    ("tokenizer", "val/rfid", "val reconstruction FID (500 val photos)", "stage 1: tokenizer FID"),
    ("maskgit", "val/fid", "val FID (200 val pairs, cosine T=8)", "stage 2: MaskGIT"),
]


def points(chunk: dict, key: str, hours_before: float) -> list[tuple[float, float]]:
    hours_per_step = chunk["wall_minutes"] / 60 / chunk["steps"]
    rows = []
    with open(CURVES / chunk["csv"], newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get(key) and float(row[key]) > 0:
                step = int(row["step"]) + 1 - chunk.get("first_step", 0)
                rows.append((hours_before + step * hours_per_step, float(row[key])))
    return rows


def main() -> None:
    chunks = json.loads((CURVES / "chunks.json").read_text())
    figure, axes = plt.subplots(1, len(PANELS), figsize=(15, 5.5))
    for axis, (stage, key, ylabel, title) in zip(axes, PANELS):
        # Hours add up along each series (the shipped model's chunks; a candidate's own,
        # from 0): candidates compare with the shipped model at equal CPU hours.
        hours: dict[str, float] = {}
        started: dict[str, float] = {}  # each chunk's first hour, by label
        for chunk in (c for c in chunks if c["stage"] == stage):
            series = chunk.get("series", stage)
            start = started[chunk["arm_of"]] if "arm_of" in chunk else hours.get(series, 0.0)
            started[chunk["label"]] = start
            xy = points(chunk, key, start)
            if xy:
                axis.plot(*zip(*xy), marker="o", label=chunk["label"],
                          linestyle="--" if series != stage else "-")  # fmt: skip
            if "arm_of" not in chunk:
                hours[series] = start + chunk["wall_minutes"] / 60
        axis.set_xlabel("CPU hours (2 cores)")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    figure.tight_layout()
    out = CURVES.parent / "learning_curves.png"
    figure.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
