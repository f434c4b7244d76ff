"""Fault injection for the reliability tests: a kill and a poisoned model at a known step."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class KillAtStep(L.Callback):
    """SIGKILL once ``step`` optimizer steps are done (before that step's checkpoint is saved,
    as Lightning runs checkpoint callbacks last)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermDuringStep(L.Callback):
    """SIGTERM while optimizer step ``step`` runs (at its batch's start), as ``kill PID``
    would send it to this process, or, with ``group``, ``pkill -f`` / a scheduler to the
    whole process group (data workers included)."""

    def __init__(self, step: int, group: bool = False) -> None:
        self.step = step
        self.group = group

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step - 1:
            if self.group:
                os.killpg(os.getpgid(0), signal.SIGTERM)
            else:
                os.kill(os.getpid(), signal.SIGTERM)


class PoisonAt(L.Callback):
    """Sets every transformer weight to NaN before the batch of step ``step``: that step's
    loss is non-finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for param in pl_module.transformer.parameters():
                    param.fill_(float("nan"))
