"""The body of train.py: build everything from the config and fit."""

from __future__ import annotations

import logging

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from maskgit.callbacks.inpainting_fid import InpaintingFIDCallback
from maskgit.callbacks.monitoring import monitor_instead

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
    """Only the inpainting callback logs val/fid: without it (``callbacks.inpainting_fid=null``)
    checkpoints monitor val/loss instead of failing at the first save."""
    if any(isinstance(c, InpaintingFIDCallback) for c in callbacks):
        return
    for callback in callbacks:
        monitor_instead(
            callback, "val/fid", "val/loss", "min", "no inpainting callback logs val/fid"
        )


def train(cfg: DictConfig) -> float | None:
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("Instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model, _recursive_=False)
    if cfg.get("init_from"):
        if not hasattr(model, "init_from"):
            raise ValueError(f"init_from: {type(model).__name__} has no warm start")
        model.init_from(cfg.init_from)
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"), "callback")
    monitor_logged_metric(callbacks)
    loggers: list[Logger] = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metric_name = cfg.get("optimized_metric")
    value = trainer.callback_metrics.get(metric_name) if metric_name else None
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path:
        log.info("Best checkpoint: %s", trainer.checkpoint_callback.best_model_path)
    return float(value) if value is not None else None
