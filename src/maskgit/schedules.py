"""Mask-ratio schedules gamma(r): [0, 1] -> [0, 1], monotone decreasing, gamma(0)=1, gamma(1)=0.

Training masks ceil(gamma(r) * N) tokens with r ~ U(0, 1); decoding keeps
floor(gamma(t / T) * n_missing) tokens masked after step t. Each schedule is a plain
function of a tensor, selected in Hydra with ``_target_: maskgit.schedules.<name>`` (and
``_partial_: true`` where it takes parameters); any function of that shape works.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Schedule = Callable[[Tensor], Tensor]


def _unit(r: Tensor | float) -> Tensor:
    return torch.as_tensor(r, dtype=torch.float64).clamp(0.0, 1.0)


def cosine(r: Tensor | float) -> Tensor:
    return torch.cos(_unit(r) * math.pi / 2)


def linear(r: Tensor | float) -> Tensor:
    return 1.0 - _unit(r)


def square(r: Tensor | float) -> Tensor:
    return 1.0 - _unit(r) ** 2


def cubic(r: Tensor | float) -> Tensor:
    return 1.0 - _unit(r) ** 3


def sqrt(r: Tensor | float) -> Tensor:
    return 1.0 - torch.sqrt(_unit(r))


def log(r: Tensor | float) -> Tensor:
    # -log2(r)/... is unbounded at 0; this normalised form keeps gamma(0)=1 and gamma(1)=0.
    return 1.0 - torch.log2(1.0 + _unit(r))


def arccos(r: Tensor | float) -> Tensor:
    return torch.arccos(_unit(r)) / (math.pi / 2)


def power(r: Tensor | float, exponent: float = 2.0) -> Tensor:
    """1 - r^exponent: linear (1), square (2), cubic (3), sqrt (0.5) as special cases."""
    if exponent <= 0:
        raise ValueError(f"schedule power exponent must be > 0, got {exponent}")
    return 1.0 - _unit(r) ** exponent


SCHEDULES: dict[str, Schedule] = {
    "cosine": cosine,
    "linear": linear,
    "square": square,
    "cubic": cubic,
    "sqrt": sqrt,
    "log": log,
    "arccos": arccos,
}


def get_schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}"
        ) from None
