"""Samplers: which of the still-masked tokens iterative decoding commits at each step.

At every step the decoding loop (``maskgit.decoding.IterativeDecoder``) predicts every masked
token and asks its sampler for a score per position; it then keeps masked the n_t lowest-scored
still-masked positions (n_t from the schedule, counted over the hole's tokens only) and commits
the rest. The loop, not the sampler, guarantees that known and already-committed tokens are
never touched: it scores them +inf before ranking, whatever the sampler returned.

- ``ConfidenceSampler``: the model's confidence plus annealed Gumbel noise (the MaskGIT paper;
  ``noise="lab"``: the lab's rule). ``score="margin"`` / ``"entropy"`` are cheap variants.
- ``RandomSampler``: a uniformly random order (the ablation baseline).
- ``HaltonSampler``: a low-discrepancy spatial order (Halton-MaskGIT, Besnier et al. 2025),
  restricted to the hole: the still-masked positions earliest in the order are committed.

Random numbers are a counter-based hash of (seed, image key, step, position), as everywhere in
decoding: an image decodes the same alone, in any batch, on any DDP rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
from torch import Tensor

NOISE_STREAM = 1  # the hash stream of the ranking noise (0 is the token sampling's)


@dataclass
class StepState:
    """What a sampler sees at one step.

    step: t in 1..T; total_iter: T; gamma: the schedule; unknown [B,N]: still masked;
    log_probs [M,K]: the predictions at the unknown positions (row-major); chosen [M]: the
    token sampled at each; keys [B]: the images' ids; seed [B]: each row's decoding seed.
    """

    step: int
    total_iter: int
    gamma: Callable[[Tensor], Tensor]
    unknown: Tensor
    log_probs: Tensor
    chosen: Tensor
    keys: Tensor
    seed: Tensor
    uniform: Callable[..., Tensor]

    def per_position(self, values: Tensor) -> Tensor:
        """[M] values at the unknown positions -> [B,N], +inf elsewhere."""
        full = torch.full(self.unknown.shape, float("inf"), device=self.unknown.device)
        full[self.unknown] = values.float()
        return full

    def noise(self) -> Tensor:
        """Standard Gumbel noise [B,N] of this step."""
        num = self.unknown.shape[1]
        u = self.uniform(self.seed, self.keys, self.step, NOISE_STREAM, num)
        return -torch.log(-torch.log(u)).float()


class Sampler:
    """Scores [B,N] of the still-masked positions: the highest are committed first."""

    name = "sampler"

    def scores(self, state: StepState) -> Tensor:
        raise NotImplementedError


class ConfidenceSampler(Sampler):
    """Confidence + Gumbel noise scaled by ``choice_temperature * (1 - t/T)`` (``noise="paper"``)
    or by ``choice_temperature * (1 - gamma(t/T))`` (``"lab"``). The confidence is the
    log-probability of the sampled token (``score="probability"``), the margin between the
    two most likely tokens' log-probabilities (``"margin"``) or minus the entropy of the
    prediction (``"entropy"``)."""

    name = "confidence"

    def __init__(
        self,
        choice_temperature: float = 4.5,
        noise: Literal["paper", "lab"] = "paper",
        score: Literal["probability", "margin", "entropy"] = "probability",
    ) -> None:
        if not choice_temperature >= 0:
            raise ValueError(
                f"choice_temperature must be >= 0 (the scale of the Gumbel noise on the "
                f"confidences), got {choice_temperature}"
            )
        if noise not in ("paper", "lab"):
            raise ValueError(f"noise must be 'paper' or 'lab', got {noise!r}")
        if score not in ("probability", "margin", "entropy"):
            raise ValueError(f"sampler.score must be probability, margin or entropy, got {score!r}")
        self.choice_temperature = choice_temperature
        self.noise = noise
        self.score = score

    def noise_scale(self, step: int, total_iter: int, gamma: Callable[[Tensor], Tensor]) -> float:
        ratio = step / total_iter
        if self.noise == "lab":
            gamma = float(gamma(torch.tensor(ratio, dtype=torch.float64)))
            return self.choice_temperature * (1.0 - gamma)
        return self.choice_temperature * (1.0 - ratio)

    def confidence(self, state: StepState) -> Tensor:
        log_probs = state.log_probs
        if self.score == "probability":
            return log_probs.gather(1, state.chosen[:, None]).squeeze(1)
        if self.score == "margin":
            top = log_probs.topk(2, dim=-1).values
            return top[:, 0] - top[:, 1]
        return (log_probs.exp() * log_probs).sum(-1)  # minus the entropy

    def scores(self, state: StepState) -> Tensor:
        scores = state.per_position(self.confidence(state))
        scale = self.noise_scale(state.step, state.total_iter, state.gamma)
        if scale > 0:
            scores = scores + scale * state.noise()
        return scores


class RandomSampler(Sampler):
    """A uniformly random order of the hole's positions, drawn anew at each step."""

    name = "random"

    def scores(self, state: StepState) -> Tensor:
        return state.noise()


@cache
def halton_order(grid: int) -> tuple[int, ...]:
    """The positions of a grid x grid token map in the order a 2-D Halton sequence (bases 2
    and 3) first visits their cells: spread out at every prefix."""
    order: list[int] = []
    seen: set[int] = set()
    index = 0
    while len(order) < grid * grid:
        index += 1
        x, y = _radical_inverse(index, 2), _radical_inverse(index, 3)
        cell = int(y * grid) * grid + int(x * grid)
        if cell not in seen:
            seen.add(cell)
            order.append(cell)
    return tuple(order)


def _radical_inverse(index: int, base: int) -> float:
    result, fraction = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        result += digit * fraction
        fraction /= base
    return result


def make_sampler(name: str, **options) -> Sampler:
    """A sampler by its ``conf/sampler/`` name (the Python API's ``sampler="halton"``)."""
    presets = {
        "confidence": lambda: ConfidenceSampler(**options),
        "lab": lambda: ConfidenceSampler(**{"noise": "lab", **options}),
        "margin": lambda: ConfidenceSampler(**{"score": "margin", **options}),
        "entropy": lambda: ConfidenceSampler(**{"score": "entropy", **options}),
        "random": lambda: RandomSampler(**options),
        "halton": lambda: HaltonSampler(**options),
    }
    if name not in presets:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(presets)}")
    return presets[name]()


class HaltonSampler(Sampler):
    """Commits the still-masked positions in Halton order (the earliest first), so each
    step's tokens are spread over the hole; the order is over the whole grid and restricted
    to the hole by the loop, so the schedule counts the hole's tokens only."""

    name = "halton"

    def scores(self, state: StepState) -> Tensor:
        batch, num = state.unknown.shape
        grid = math.isqrt(num)
        if grid * grid != num:
            raise ValueError(f"sampler=halton needs a square token grid, got {num} tokens")
        rank = torch.empty(num, device=state.unknown.device)
        order = torch.tensor(halton_order(grid), device=state.unknown.device)
        rank[order] = torch.arange(num, device=rank.device, dtype=rank.dtype)
        return (-rank).expand(batch, num).clone()
