"""Config utilities shared by the LightningModules."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain_config(config: Any) -> Any:
    """DictConfig/ListConfig -> plain containers, so checkpoints hold no OmegaConf objects
    (``torch.load(weights_only=True)``, which resuming uses, refuses them)."""
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config
