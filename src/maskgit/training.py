"""The body of train.py: build everything from the config and fit."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from maskgit.callbacks.monitoring import monitor_instead
from maskgit.callbacks.validation_fid import ValidationFIDCallback
from maskgit.checkpoints import CheckpointError, newest_readable_checkpoint, read_checkpoint
from maskgit.hardware import warn_if_cpu_oversubscribed

log = logging.getLogger(__name__)


def instantiate_group(config: DictConfig | None, kind: str) -> list:
    """Instantiate every entry of a callbacks/ or logger/ group (skipping nulls)."""
    objects = []
    for name, entry in (config or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(f"{kind} entry {name!r} has no _target_: {OmegaConf.to_yaml(entry)}")
        log.info("Instantiating %s <%s>", kind, entry._target_)
        objects.append(hydra.utils.instantiate(entry))
    return objects


def monitor_logged_metric(callbacks: list[Callback]) -> None:
    """Only a validation FID callback logs val/fid (the inpainting one, or the mask-aware
    head's): without one (``callbacks.inpainting_fid=null``) checkpoints monitor val/loss
    instead of failing at the first save."""
    if any(isinstance(c, ValidationFIDCallback) and c.metric == "val/fid" for c in callbacks):
        return
    for callback in callbacks:
        monitor_instead(
            callback, "val/fid", "val/loss", "min", "no inpainting callback logs val/fid"
        )


def resume_checkpoint(ckpt_path: str | None, callbacks: list[Callback]) -> str | None:
    """The checkpoint to resume from. ``last``: the newest readable one the run's checkpoint
    callbacks wrote (last.ckpt, periodic/last.ckpt, top-k), with a warning naming each newer
    one that could not be read; a path: checked here, so an unreadable file is named."""
    if not ckpt_path:
        return None
    if ckpt_path != "last":
        read_checkpoint(ckpt_path)
        return ckpt_path
    folders = [Path(c.dirpath) for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
    found, skipped = newest_readable_checkpoint(folders)
    for path, reason in skipped:
        warnings.warn(f"ckpt_path=last: skipping {path}: {reason}", stacklevel=2)
    if found is None:
        if skipped:
            raise CheckpointError(
                "ckpt_path=last: no readable checkpoint in "
                + ", ".join(str(f) for f in folders)
                + f" ({len(skipped)} unreadable, listed above)"
            )
        log.warning("ckpt_path=last: no checkpoint in %s yet; starting a new run", folders)
        return None
    if skipped:
        log.warning("ckpt_path=last: resuming from %s", found)
    return str(found)


def train(cfg: DictConfig) -> float | None:
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("Instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model, _recursive_=False)
    if hasattr(datamodule, "set_tokenizer"):  # stage 2: the token cache encodes with it
        datamodule.set_tokenizer(getattr(model, "tokenizer", None))
    if cfg.get("init_from"):
        if not hasattr(model, "init_from"):
            raise ValueError(f"init_from: {type(model).__name__} has no warm start")
        model.init_from(cfg.init_from)
    warn_if_cpu_oversubscribed(
        cfg.trainer.devices, cfg.trainer.accelerator, cfg.data.get("num_workers", 0)
    )
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"), "callback")
    monitor_logged_metric(callbacks)
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), callbacks)
    trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)

    metric_name = cfg.get("optimized_metric")
    value = trainer.callback_metrics.get(metric_name) if metric_name else None
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path:
        log.info("Best checkpoint: %s", trainer.checkpoint_callback.best_model_path)
    return float(value) if value is not None else None
