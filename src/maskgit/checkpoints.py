"""Checkpoint files: reading and writing them (atomically), every format of both stages
(ours, compact and Lightning, and the lab's raw state_dicts) and strict state-dict fitting.

No file runs code when it is read: ``.safetensors`` files hold tensors and a JSON header
only, and every pickle-based file (``.pt``, ``.ckpt``, the lab's state_dicts) goes through
``torch.load(weights_only=True)``, whose unpickler builds tensors and plain containers and
refuses any other type; the refused type is named in the error.

Every failure names the file and what does not fit: missing, unexpected and mis-shaped keys,
a truncated file, a checkpoint of the other stage. Finding the tokenizer a MaskGIT checkpoint
was trained over and building a ready model from it is ``maskgit.loading``'s.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from maskgit.atomic import atomic_write
from maskgit.models.vqgan import VQGAN

# The lab's per-channel normalisation of its training images (its tokenizer expects it).
LAB_PIXEL_MEAN = (0.4816, 0.4324, 0.3845)
LAB_PIXEL_STD = (0.2602, 0.2518, 0.2537)

TOKENIZER_FORMAT = "maskgit.tokenizer"
MASKGIT_FORMAT = "maskgit.maskgit"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with what does not fit."""


class TokenizerNotFoundError(FileNotFoundError):
    """The frozen tokenizer a MaskGIT model needs (its ``tokenizer_ckpt``, or the one its
    checkpoint records) cannot be found."""


SAFETENSORS_SUFFIX = ".safetensors"
# Top-level entries of our compact files that are not tensors: JSON in a safetensors header.
METADATA_KEYS = ("format", "config", "hyper_parameters", "tokenizer", "training")


def is_safetensors(path: str | Path) -> bool:
    """By content, not name: 8 bytes of header length, then the JSON header's ``{``."""
    with open(path, "rb") as file:
        head = file.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _refused_type(error: Exception) -> str | None:
    """The global a weights-only unpickler refused (``posix.system``, ``builtins.eval``, ...)."""
    match = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(error))
    return match.group(1) if match else None


def _read_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_type(error)
        if refused is None:
            raise CheckpointError(
                f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a "
                f"checkpoint): {error}"
            ) from error
        raise CheckpointError(
            f"{path}: refused: it needs {refused} to be unpickled, and checkpoints "
            "are read with torch.load(weights_only=True), which builds tensors and plain "
            "containers only (a file that needs more could run code when loaded). Re-save it "
            "as a state_dict, or export it with python -m maskgit.export"
        ) from None
    except Exception as error:
        # The weights-only unpickler fails on arbitrary bytes in many ways (EOFError,
        # IndexError, KeyError, ...): each means the same, not a checkpoint.
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a checkpoint): "
            f"{error}"
        ) from error


def _read_safetensors(path: Path) -> dict[str, Any]:
    """Our compact format in safetensors: tensors under ``state_dict``, every other entry
    from the header's JSON metadata."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state_dict = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot be read as a safetensors file: {error}") from error
    data: dict[str, Any] = {"state_dict": state_dict}
    for key, text in metadata.items():
        try:
            data[key] = text if key == "format" else json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(
                f"{path}: header entry {key!r} is not valid JSON: {error}"
            ) from error
    return data


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Any checkpoint file as a dict, without running code from it (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    data = _read_safetensors(path) if is_safetensors(path) else _read_pickle(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(data).__name__}")
    return dict(data)


def write_safetensors(data: Mapping[str, Any], path: str | Path) -> Path:
    """Our compact format as safetensors (atomically): ``data["state_dict"]``'s tensors, and
    the entries of ``METADATA_KEYS`` as JSON in the header."""
    metadata = {
        key: value if key == "format" else json.dumps(value)
        for key, value in data.items()
        if key in METADATA_KEYS
    }
    other = set(data) - set(METADATA_KEYS) - {"state_dict"}
    if other:
        raise ValueError(f"no place for {sorted(other)} in a safetensors file")
    tensors = {k: v.detach().contiguous() for k, v in data["state_dict"].items()}
    payload = safetensors_bytes(tensors, metadata=metadata)
    return atomic_write(path, lambda file: file.write(payload))


def save_compact(data: Mapping[str, Any], path: str | Path) -> Path:
    """An exported model: safetensors for a ``.safetensors`` name, else a weights-only
    ``torch.save`` of the same plain dict (readable by ``read_checkpoint`` either way)."""
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        return write_safetensors(data, path)
    save_atomic(dict(data), path)
    return Path(path)


def newest_readable_checkpoint(
    folders: list[Path],
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest ``*.ckpt`` (by modification time) under ``folders`` that loads, and the
    newer ones skipped as unreadable, each with the reason."""
    candidates = {
        p.resolve() for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")
    }
    skipped: list[tuple[Path, str]] = []
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            read_checkpoint(path)
        except CheckpointError as error:
            skipped.append((path, str(error)))
            continue
        return path, skipped
    return None, skipped


def describe_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str | None:
    """Missing / unexpected / mis-shaped keys between two state_dicts, or None if they fit."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshaped = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(given[k].shape)}"
        for k in expected
        if k in given and tuple(expected[k].shape) != tuple(given[k].shape)
    ]
    if not (missing or unexpected or misshaped):
        return None
    lines = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ):
        if items:
            shown = "\n    ".join(items[:10])
            more = f"\n    ... and {len(items) - 10} more" if len(items) > 10 else ""
            lines.append(f"  {len(items)} {label} key(s):\n    {shown}{more}")
    return "\n".join(lines)


def require_fit(module: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """A CheckpointError listing every key that does not fit, before torch's own error."""
    problem = describe_mismatch(module.state_dict(), state_dict)
    if problem:
        raise CheckpointError(
            f"{source}: does not fit {type(module).__name__} of this configuration:\n{problem}"
        )


def checkpoint_source(module: L.LightningModule) -> str:
    """The file a Lightning checkpoint is being restored from, where the trainer knows it."""
    trainer = module._trainer
    return str(trainer.ckpt_path) if trainer is not None and trainer.ckpt_path else "checkpoint"


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, Tensor], source: str
) -> None:
    require_fit(module, state_dict, source)
    module.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)


def _strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def is_lab_vqgan(state_dict: Mapping[str, Any]) -> bool:
    return "codebook.embedding.weight" in state_dict and "encoder.model.0.weight" in state_dict


def is_lab_transformer(state_dict: Mapping[str, Any]) -> bool:
    return "tok_emb.weight" in state_dict and "pos_emb" in state_dict


# The lab's transformer configuration (its checkpoints hold no config).
LAB_TRANSFORMER = {
    "num_image_tokens": 256,
    "num_codebook_vectors": 1024,
    "dim": 768,
    "n_layers": 15,
    "hidden_dim": 1536,
    "num_heads": 16,
}


def read_maskgit(path: str | Path) -> tuple[dict, dict[str, Tensor], dict | None]:
    """(hyper-parameters, transformer state_dict, recorded tokenizer ``{"path",
    "fingerprint"}`` or None) of any MaskGIT format: our compact file, a Lightning checkpoint
    of ``MaskGitModule``, or the lab's transformer state_dict."""
    data = read_checkpoint(path)
    hparams = data.get("hyper_parameters", {})
    if data.get("format") == TOKENIZER_FORMAT or "vqgan" in hparams:
        raise CheckpointError(f"{path}: is a tokenizer (stage 1) checkpoint, expected MaskGIT")
    if is_lab_transformer(data):
        return {"transformer": dict(LAB_TRANSFORMER)}, data, None
    if data.get("format") == MASKGIT_FORMAT or ("state_dict" in data and "transformer" in hparams):
        state = _strip_prefix(data["state_dict"], "transformer.")
        return dict(hparams), state, data.get("tokenizer")
    raise CheckpointError(
        f"{path}: not a MaskGIT checkpoint (expected ours, a Lightning checkpoint of "
        f"MaskGitModule, or the lab's transformer state_dict); top-level keys: {list(data)[:8]}"
    )


def load_tokenizer(path: str | Path, config: Mapping[str, Any] | None = None) -> VQGAN:
    """A frozen-ready VQGAN from any of: our compact file, a stage-1 Lightning checkpoint,
    or the lab's raw state_dict (lab architecture and normalisation unless ``config``)."""
    data = read_checkpoint(path)
    if data.get("format") == MASKGIT_FORMAT or "transformer" in data.get("hyper_parameters", {}):
        raise CheckpointError(f"{path}: is a MaskGIT (stage 2) checkpoint, expected a tokenizer")
    if data.get("format") == TOKENIZER_FORMAT:
        config, state_dict = data["config"], data["state_dict"]
    elif "state_dict" in data and "vqgan" in data.get("hyper_parameters", {}):
        config = config or data["hyper_parameters"]["vqgan"]
        state_dict = _strip_prefix(data["state_dict"], "vqgan.")
    elif "state_dict" in data and any(k.startswith("vqgan.") for k in data["state_dict"]):
        if config is None:
            raise CheckpointError(f"{path}: a stage-1 checkpoint without its config; pass config=")
        state_dict = _strip_prefix(data["state_dict"], "vqgan.")
    elif is_lab_vqgan(data):
        config = dict(config or {"pixel_mean": LAB_PIXEL_MEAN, "pixel_std": LAB_PIXEL_STD})
        state_dict = data
    else:
        keys = list(data)[:8]
        raise CheckpointError(
            f"{path}: not a tokenizer checkpoint (expected our format, a stage-1 Lightning "
            f"checkpoint or the lab's VQGAN state_dict with 'encoder.model.*'); top-level keys: {keys}"
        )
    vqgan = VQGAN(**dict(config))
    load_state_dict_strict(vqgan, state_dict, str(path))
    return vqgan


def tokenizer_config(vqgan: VQGAN, source_config: Mapping[str, Any]) -> dict[str, Any]:
    config = dict(source_config)
    config["pixel_mean"] = vqgan.pixel_mean.flatten().tolist()
    config["pixel_std"] = vqgan.pixel_std.flatten().tolist()
    return config


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save through ``maskgit.atomic``: a kill or a concurrent writer while saving
    never leaves a torn file."""
    atomic_write(path, lambda file: torch.save(obj, file))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes through a temporary file and a rename, so a
    run killed while saving keeps its previous checkpoint intact, and reads through
    ``read_checkpoint``, so resuming (``ckpt_path=``) never runs code from the file."""

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        save_atomic(checkpoint, path)


def half_state_dict(module: nn.Module, dtype: torch.dtype = torch.float16) -> dict[str, Tensor]:
    return {
        k: v.detach().to(dtype) if v.is_floating_point() else v.detach()
        for k, v in module.state_dict().items()
    }


def export_tokenizer(
    checkpoint: str | Path, out: str | Path, config: Mapping[str, Any] | None = None
) -> Path:
    """A stage-1 checkpoint -> compact fp16 tokenizer file (config + weights)."""
    data = read_checkpoint(checkpoint)
    config = config or data.get("hyper_parameters", {}).get("vqgan") or data.get("config")
    vqgan = load_tokenizer(checkpoint, config)
    training = training_record(data, checkpoint)
    save_compact(
        {"format": TOKENIZER_FORMAT, "config": tokenizer_config(vqgan, config or {}),
         "state_dict": half_state_dict(vqgan), **({"training": training} if training else {})},
        out,
    )  # fmt: skip
    return Path(out)


def training_record(data: Mapping[str, Any], source: str | Path) -> dict[str, Any] | None:
    """Where an exported file came from: a Lightning checkpoint's step and epoch, or the
    record an already exported file carries."""
    if "training" in data:
        return dict(data["training"])
    if "global_step" not in data:
        return None
    return {
        "from": Path(source).name,
        "global_step": int(data["global_step"]),
        "epoch": int(data.get("epoch", 0)),
        "lightning_version": str(data.get("pytorch-lightning_version", "")),
    }


def resolve_path(path: str | Path, *bases: Path, shipped: bool = False) -> Path | None:
    """``path`` as given, else relative to each of ``bases``; None when nowhere.

    ``shipped`` (only for paths a checkpoint recorded, e.g. on another machine, never for a
    path the user gave) also accepts the file of that name in the project's checkpoints/.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_absolute():
        for base in bases:
            candidate = base / path
            if candidate.is_file():
                return candidate
    root = os.environ.get("PROJECT_ROOT")
    if shipped and root and (Path(root) / "checkpoints" / path.name).is_file():
        return Path(root) / "checkpoints" / path.name
    return None
