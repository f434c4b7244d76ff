"""The learning-rate schedule of the training modules: linear warmup, then cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup: int, total: int, floor: float) -> Callable[[int], float]:
    """A LambdaLR factor: linear warmup over ``warmup`` steps, cosine decay to ``floor`` of
    the peak at step ``total``, then ``floor``."""
    warmup = max(1, warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
