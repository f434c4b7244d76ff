"""Checkpoint monitoring when the monitored metric will not be logged."""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


def monitor_instead(
    checkpoint: Callback | None, metric: str, fallback: str, mode: str, why: str
) -> None:
    """Point a ModelCheckpoint that monitors ``metric``, which nothing will log, at
    ``fallback`` (``mode`` min/max) instead of letting it fail at its first save."""
    if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.monitor != metric:
        return
    log.warning("%s: checkpoints monitor %s instead", why, fallback)
    checkpoint.monitor = fallback
    checkpoint.mode = mode
