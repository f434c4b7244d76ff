"""Several fills per hole: ``num_samples=K`` in evaluate.py (names, grids, diversity) and
the diversity metric itself."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from test_evaluate import TEST_FILES, ckpt, pixels, run_evaluate, run_evaluate_raw  # noqa: F401

from maskgit.metrics.diversity import SampleDiversity

pytestmark = pytest.mark.slow


def test_diversity_is_zero_for_identical_fills_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    fill = torch.rand(2, 3, 8, 8, generator=generator)
    mask = torch.ones(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 0  # a 16-pixel hole
    same = SampleDiversity()
    same.update(torch.stack([fill, fill, fill]), mask)
    assert same.compute() == {"l1": 0.0, "changed": 0.0}
    other = fill.clone()
    other[0, :, 2, 2] = (other[0, :, 2, 2] + 0.5) % 1.0  # one hole pixel of image 0 moves
    other[:, :, 0, 0] = 0.0  # known pixels do not count
    different = SampleDiversity()
    different.update(torch.stack([fill, other]), mask)
    scores = different.compute()
    # image 0: 1 of 16 hole pixels changed; image 1: none; averaged over the 2 images.
    assert scores["changed"] == pytest.approx(1 / 16 / 2)
    assert scores["l1"] > 0
    with pytest.raises(ValueError, match=">= 2 fills"):
        different.update(fill[None], mask)


def test_num_samples_writes_k_fills_a_grid_per_input_and_their_diversity(ckpt, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    run_evaluate(ckpt, tmp_path / "logs", "total_iter=2", "num_samples=3", f"hydra.run.dir={run}")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["seeds"] == [0, 1, 2]
    assert 0 < metrics["diversity_changed"] <= 1 and metrics["diversity_l1"] > 0
    names = sorted(p.name for p in (run / "inpainted").iterdir())
    expected = [f"{s.stem}{suffix}.png" for s in TEST_FILES for suffix in ("", "_s1", "_s2")]
    assert names == sorted(expected)
    grids = sorted((run / "grids").iterdir())
    assert [g.stem for g in grids] == sorted(s.stem for s in TEST_FILES)
    # photo | masked | 3 fills, each 64 px wide at scale 2.
    assert Image.open(grids[0]).width >= 5 * 128
    # num_samples is num_seeds by another name: the same files, pixel for pixel.
    same = tmp_path / "same"
    run_evaluate(ckpt, tmp_path / "logs", "total_iter=2", "num_seeds=3", f"hydra.run.dir={same}")
    assert pixels(same) == pixels(run)


def test_num_samples_and_num_seeds_that_disagree_are_refused(ckpt, tmp_path):  # noqa: F811
    result = run_evaluate_raw(
        ckpt, tmp_path / "logs", "num_samples=2", "num_seeds=3", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode != 0
    assert "num_samples=2 and num_seeds=3: both set the fills per input" in result.stderr
