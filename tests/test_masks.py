"""Training and val masks that look like the large-hole failure: shapes, hole ratios, mix."""

from __future__ import annotations

import pytest
import torch

from maskgit.data.masks import GeneratedMasks, MaskMixture, large_holes

SIZE = 64


def missing_share(mask: torch.Tensor) -> float:
    return float((mask < 0.5).float().mean())


def test_large_holes_are_large_and_of_every_kind():
    source = large_holes(seed=0)
    shares = []
    for index in range(300):
        mask = source.mask(index, f"{index:05d}", SIZE)
        assert mask.shape == (1, SIZE, SIZE) and set(mask.unique().tolist()) <= {0.0, 1.0}
        shares.append(missing_share(mask))
    assert min(shares) >= 0.38, min(shares)  # every hole is large
    assert max(shares) <= 0.8, max(shares)
    halves = sum(abs(s - 0.5) < 1e-9 for s in shares)
    assert 60 <= halves <= 140  # about a third are half faces
    assert sum(s > 0.6 for s in shares) > 20  # free-form holes reach above 60 %


def test_a_seeded_set_is_fixed_and_training_draws_vary():
    fixed = large_holes(seed=3)
    assert torch.equal(fixed.mask(7, "a", SIZE), fixed.mask(7, "a", SIZE))
    training = large_holes(seed=None)
    draws = {training.mask(0, "a", SIZE, draw_seed=k).sum().item() for k in range(20)}
    assert len(draws) > 5


def test_the_usual_masks_join_with_their_weight():
    mixed = large_holes(seed=0, current_weight=3.0, kind="boxes", hole_range=(0.05, 0.2))
    shares = [missing_share(mixed.mask(i, "x", SIZE)) for i in range(200)]
    small = sum(s < 0.3 for s in shares)
    assert 70 <= small <= 130  # 3 of 6 parts are the usual, here small, boxes


def test_a_mixture_checks_its_weights():
    source = GeneratedMasks("boxes", seed=0)
    with pytest.raises(ValueError, match="must name the same non-empty set"):
        MaskMixture({"a": source}, {"b": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        MaskMixture({"a": source}, {"a": 0.0})
