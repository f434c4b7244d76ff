"""Which floating-point precision runs where.

``precision=auto`` picks bf16 mixed precision where the hardware has bf16 matrix units (a
GPU that supports bf16, or a CPU with AVX-512 BF16 or AMX tiles, as PyTorch reports them)
and fp32 elsewhere; ``32`` and ``bf16`` force one. Training, decoding and evaluation all
resolve it here. Tokenizing always runs in fp32 (``maskgit.inpainting.tokenize_fp32``):
nearest-code lookups are sensitive to rounding, and the token cache, training and
inference must agree on every token.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from omegaconf import OmegaConf

PRECISIONS = ("auto", "32", "bf16")
_TRAINER_PRECISION = {"32": "32-true", "bf16": "bf16-mixed"}


def cpu_has_bf16_units() -> bool:
    """AVX-512 BF16 or AMX tiles, by PyTorch's own CPU capability query."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_supported(device_type: str) -> bool:
    """Whether bf16 matrix math is fast on this kind of device ("cpu" or "cuda")."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return cpu_has_bf16_units()
    return False


def check_precision(precision: object, option: str = "precision") -> str:
    value = str(precision)
    if value not in PRECISIONS:
        raise ValueError(f"{option} must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return value


def resolve(precision: object, device_type: str, option: str = "precision") -> str:
    """'auto' | '32' | 'bf16' -> '32' or 'bf16' on ``device_type``."""
    value = check_precision(precision, option)
    if value == "auto":
        return "bf16" if bf16_supported(device_type) else "32"
    return value


def accelerator_device_type(accelerator: object) -> str:
    """Lightning's ``accelerator`` option -> the device type it will run on."""
    name = str(accelerator)
    if name in ("gpu", "cuda"):
        return "cuda"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def trainer_precision(precision: object, accelerator: object = "auto") -> str:
    """The Trainer's ``precision`` for ``precision=auto|32|bf16`` on ``accelerator``;
    any of Lightning's own values (``16-mixed``, ``bf16-true`` ...) passes unchanged."""
    value = str(precision)
    if value not in PRECISIONS:
        return value
    return _TRAINER_PRECISION[resolve(value, accelerator_device_type(accelerator))]


def autocast(precision: object, device: torch.device) -> AbstractContextManager:
    """bf16 autocast on ``device`` where ``precision`` resolves to bf16, else autocast off
    (so "32" stays fp32 even inside a bf16-mixed Trainer)."""
    bf16 = resolve(precision, device.type) == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


# `trainer.precision: ${trainer_precision:${precision},${trainer.accelerator}}` in conf/.
OmegaConf.register_new_resolver("trainer_precision", trainer_precision, replace=True)
