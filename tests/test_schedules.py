"""Mask-ratio schedules, their Hydra configs, and token masks for training and inpainting."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import hydra
import pytest
import torch
from conftest import CONF, compose_config
from omegaconf import OmegaConf

from maskgit.masking import pixel_to_token_mask, random_token_mask
from maskgit.schedules import SCHEDULES, Schedule, get_schedule, power

GRID = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)

# Scalar re-statements of the paper's gamma functions, for spot values and mask counts.
REFERENCE: dict[str, Callable[[float], float]] = {
    "cosine": lambda r: math.cos(r * math.pi / 2),
    "linear": lambda r: 1 - r,
    "square": lambda r: 1 - r * r,
    "cubic": lambda r: 1 - r * r * r,
    "sqrt": lambda r: 1 - math.sqrt(r),
    "log": lambda r: 1 - math.log(1 + r, 2),
    "arccos": lambda r: math.acos(r) * 2 / math.pi,
}

ALL_SCHEDULES: dict[str, Schedule] = {
    **SCHEDULES,
    "power0.5": partial(power, exponent=0.5),
    "power2.5": partial(power, exponent=2.5),
    "power7": partial(power, exponent=7.0),
}

# One group, mounted as mask= (training) and schedule= (decoding).
CONFIG_FILES = sorted((CONF / "gamma").glob("*.yaml"))


def test_reference_covers_every_schedule() -> None:
    assert set(REFERENCE) == set(SCHEDULES)


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_schedule_endpoints_range_and_monotone(name: str) -> None:
    gamma = ALL_SCHEDULES[name]
    assert float(gamma(0.0)) == pytest.approx(1.0, abs=1e-12)
    assert float(gamma(1.0)) == pytest.approx(0.0, abs=1e-12)
    values = gamma(GRID)
    assert values.shape == GRID.shape
    assert bool(((values >= 0) & (values <= 1)).all())
    assert bool((values[1:] <= values[:-1]).all())
    # Strictly decreasing overall: each decoding step unmasks something.
    assert float(values[500]) > float(values[1500])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_matches_scalar_formula(name: str) -> None:
    points = [0.0, 0.1, 1 / 3, 0.5, 0.77, 1.0]
    got = SCHEDULES[name](torch.tensor(points, dtype=torch.float64))
    expected = torch.tensor([REFERENCE[name](r) for r in points], dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_power_special_cases_and_bad_exponent() -> None:
    for exponent, name in ((1.0, "linear"), (2.0, "square"), (3.0, "cubic"), (0.5, "sqrt")):
        torch.testing.assert_close(power(GRID, exponent), SCHEDULES[name](GRID))
    with pytest.raises(ValueError, match="exponent"):
        power(GRID, 0.0)


def test_get_schedule_unknown_names_options() -> None:
    assert get_schedule("arccos") is SCHEDULES["arccos"]
    with pytest.raises(ValueError, match="nope") as info:
        get_schedule("nope")
    for name in SCHEDULES:
        assert name in str(info.value)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_instantiates_same_schedule(path: Path) -> None:
    config = OmegaConf.load(path)
    gamma = hydra.utils.instantiate(config)
    if path.stem == "power":
        expected = power(GRID, float(config.exponent))
    else:
        expected = SCHEDULES[path.stem](GRID)
    torch.testing.assert_close(gamma(GRID), expected, atol=0, rtol=0)


def test_composed_train_config_selects_mask_schedule() -> None:
    cfg = compose_config("train", ["mask=arccos", "schedule=power"])
    mask_gamma = hydra.utils.instantiate(cfg.mask)
    decode_gamma = hydra.utils.instantiate(cfg.schedule)
    torch.testing.assert_close(mask_gamma(GRID), SCHEDULES["arccos"](GRID))
    torch.testing.assert_close(decode_gamma(GRID), power(GRID, 2.5))


@pytest.mark.parametrize("name", ["cosine", "linear", "arccos", "cubic"])
def test_random_token_mask_counts(name: str) -> None:
    batch, num_tokens, seed = 64, 256, 123
    mask = random_token_mask(
        batch, num_tokens, SCHEDULES[name], generator=torch.Generator().manual_seed(seed)
    )
    # The ratio is the generator's first draw; draw it again from the same seed.
    ratios = torch.rand(batch, generator=torch.Generator().manual_seed(seed))
    expected = [math.ceil(REFERENCE[name](float(r)) * num_tokens) for r in ratios]
    assert mask.shape == (batch, num_tokens) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == expected
    # Positions are drawn per row (fully masked rows aside), and each is masked somewhere.
    partial_rows = [tuple(row.nonzero().flatten().tolist()) for row in mask if not row.all()]
    assert len(partial_rows) > batch // 2
    assert len(set(partial_rows)) == len(partial_rows)
    assert bool(mask.any(0).all())


def test_random_token_mask_seeded_is_reproducible() -> None:
    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return random_token_mask(8, 256, SCHEDULES["cosine"], generator=generator)

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


@pytest.mark.parametrize("pixel", [(0, 0), (63, 63), (5, 42), (32, 31), (3, 60)])
def test_single_missing_pixel_marks_its_token(pixel: tuple[int, int]) -> None:
    y, x = pixel
    pixel_mask = torch.ones(2, 1, 64, 64)
    pixel_mask[1, 0, y, x] = 0.0
    tokens = pixel_to_token_mask(pixel_mask, 16)
    assert tokens.shape == (2, 16, 16) and tokens.dtype == torch.bool
    assert not tokens[0].any()
    assert tokens[1].nonzero().tolist() == [[y // 4, x // 4]]
    # A [B,H,W] mask (no channel dimension) means the same.
    assert torch.equal(pixel_to_token_mask(pixel_mask[:, 0], 16), tokens)
    # One pixel of a 4x4 token is a share of 1/16: below any positive threshold.
    assert not pixel_to_token_mask(pixel_mask, 16, threshold=0.1).any()


def test_token_mask_threshold() -> None:
    pixel_mask = torch.ones(1, 1, 64, 64)
    pixel_mask[0, 0, 0:4, 0:2] = 0.0  # token (0, 0): exactly half missing
    pixel_mask[0, 0, 4:7, 8:12] = 0.0  # token (1, 2): three quarters missing
    pixel_mask[0, 0, 60, 60] = 0.0  # token (15, 15): one pixel
    at_half = pixel_to_token_mask(pixel_mask, 16, threshold=0.5)
    assert at_half[0].nonzero().tolist() == [[1, 2]]
    assert pixel_to_token_mask(pixel_mask, 16)[0].nonzero().tolist() == [[0, 0], [1, 2], [15, 15]]
    assert not pixel_to_token_mask(pixel_mask, 16, threshold=0.75).any()


def test_token_mask_rejects_indivisible_size() -> None:
    with pytest.raises(ValueError, match="16x16"):
        pixel_to_token_mask(torch.ones(1, 1, 50, 50), 16)
