"""Lightning's ModelCheckpoint whose ``last.ckpt`` holds a run's final step.

Lightning writes ``last.ckpt`` only beside another save (a validation's top-k, every N
steps), so a run that ends between two of them (``trainer.max_steps``, ``trainer.max_time``)
leaves ``last.ckpt`` at the last validation while its newest weights are elsewhere or
nowhere: exporting ``last.ckpt`` then ships older weights than the run trained. This one
also writes it when training ends. The class keeps Lightning's name so the callback's state
key, and with it resuming from checkpoints written before, is unchanged.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # Skips fast_dev_run, and a final step that is already saved (no second write).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
