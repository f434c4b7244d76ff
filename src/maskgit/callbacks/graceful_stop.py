"""Stop a training run cleanly on SIGTERM (``kill PID``, a scheduler's time limit).

Lightning only notices SIGTERM at an epoch's end in a single process (its per-batch check
needs a process group), so a stopped run would go on for up to an epoch and then exit with
status 0. This callback checks after every optimizer step: it saves a checkpoint of that
step where ``ckpt_path=last`` finds it (the rolling ``periodic/last.ckpt``), says so, and
exits with status 143 (128 + SIGTERM), as a program stopped by SIGTERM does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)
SIGTERM_EXIT_STATUS = 143


class StopOnSigterm(L.Callback):
    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if not getattr(trainer, "received_sigterm", False):
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # the whole state, to resume from
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM: stopped after step %d, saved %s; resume with ckpt_path=last",
                trainer.global_step, path,
            )  # fmt: skip
        raise SystemExit(SIGTERM_EXIT_STATUS)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        # A SIGTERM that arrived after this step's check: Lightning stops at the step's end
        # with status 0; say so and give the status of a stopped program instead.
        if isinstance(exception, SIGTERMException):
            if trainer.is_global_zero:
                log.warning(
                    "SIGTERM: stopped after step %d; resume with ckpt_path=last (from the newest "
                    "checkpoint)", trainer.global_step,
                )  # fmt: skip
            raise SystemExit(SIGTERM_EXIT_STATUS) from exception
