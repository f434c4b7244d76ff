"""What produced an evaluation output: the run's settings and weights, and each input.

An evaluation folder holds ``run.json`` (the settings, the method's weights digest and the
seed that every output of the folder was made with), and every inpainted PNG carries the
key of its own inputs under that run. A rerun into the folder reuses exactly the images
whose key matches (same settings, same image and mask content), recomputes the rest, and
refuses to run with other settings, naming them, so no folder ever mixes two runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from maskgit.atomic import write_json

RUN_FILE = "run.json"
KEY_FIELD = "maskgit-key"


class OutputFolderError(RuntimeError):
    """An output folder that holds another run's results."""


def weights_digest(module: nn.Module, skip: str | None = None) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes and values); with ``skip``,
    of those whose dotted name has no part called ``skip``."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if skip is not None and skip in name.split("."):
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def input_digest(image: Tensor, pixel_mask: Tensor) -> str:
    """sha256 of one input as the method sees it: the 8-bit image and its binary mask."""
    digest = hashlib.sha256()
    digest.update(image.detach().float().mul(255).round().byte().cpu().numpy().tobytes())
    digest.update(pixel_mask.detach().float().round().byte().cpu().numpy().tobytes())
    return digest.hexdigest()


def settings_digest(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings as JSON (the same before and after a round trip to disk)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def output_key(run_digest: str, image_digest: str) -> str:
    """The key an output PNG carries: its run and its own input."""
    return hashlib.sha256(f"{run_digest}:{image_digest}".encode()).hexdigest()


def _flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(settings, Mapping):
        flat: dict[str, Any] = {}
        for key, value in settings.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): settings}


def differing_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """'name: old -> new' for every setting that differs (flattened with dots)."""
    before, after = _flatten(old), _flatten(new)
    return [
        f"{name}: {before.get(name, '(unset)')!r} -> {after.get(name, '(unset)')!r}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


def claim_output_folder(output_dir: Path, settings: Mapping[str, Any]) -> str:
    """Record ``settings`` as the folder's run (or check they are the recorded ones) and
    return their digest; an OutputFolderError names every setting that differs."""
    record = output_dir / RUN_FILE
    settings = json.loads(json.dumps(settings))  # plain JSON types, as read back
    if record.is_file():
        try:
            recorded = json.loads(record.read_text())["settings"]
        except (ValueError, KeyError) as error:
            raise OutputFolderError(
                f"{record}: unreadable run record ({error}); remove it or the folder, or "
                "evaluate into another folder (hydra.run.dir=...)"
            ) from error
        changes = differing_settings(recorded, settings)
        if changes:
            shown = "\n  ".join(changes[:20])
            raise OutputFolderError(
                f"{output_dir} holds the results of a run with other settings; its images and "
                f"metrics.json are kept. Differing:\n  {shown}\nEvaluate into another folder "
                "(hydra.run.dir=...), or rerun with the recorded settings to finish that run."
            )
    elif any((output_dir / name).exists() for name in ("metrics.json", "inpainted")):
        raise OutputFolderError(
            f"{output_dir} holds results without a {RUN_FILE} (written by an older version): "
            "what produced them is unknown, so they are neither reused nor overwritten. "
            "Evaluate into another folder (hydra.run.dir=...)."
        )
    else:
        write_json(record, {"settings": settings, "digest": settings_digest(settings)})
    return settings_digest(settings)
