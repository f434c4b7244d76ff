"""A ready model from a checkpoint file: find the tokenizer a MaskGIT checkpoint was trained
over, check it is that one, build the model; and the compact export of a trained MaskGIT.

The formats themselves (ours and the lab's, both stages) are read in ``maskgit.checkpoints``;
the fingerprint that identifies a tokenizer and its one check are ``maskgit.fingerprint``'s.
Lookup of a recorded tokenizer path: as recorded, relative to the checkpoint's folder, then
the project's ``checkpoints/`` (a path the user gives is used as given, never replaced).
"""

from __future__ import annotations

import os
from pathlib import Path

from maskgit.checkpoints import (
    MASKGIT_FORMAT,
    TOKENIZER_FORMAT,
    TokenizerNotFoundError,
    half_state_dict,
    load_tokenizer,
    read_checkpoint,
    read_maskgit,
    resolve_path,
    save_compact,
    training_record,
)
from maskgit.fingerprint import TokenizerMismatchError
from maskgit.models.vqgan import VQGAN
from maskgit.modules.maskgit import MaskGitModule

__all__ = [
    "TokenizerMismatchError",
    "TokenizerNotFoundError",
    "export_maskgit",
    "find_tokenizer",
    "load_maskgit",
    "tokenizer_of",
]


def find_tokenizer(path: str | Path, recorded: dict | None, override: str | None = None) -> Path:
    """The tokenizer file of the MaskGIT checkpoint ``path`` (``recorded``: what it records,
    from ``read_maskgit``); ``override`` (``tokenizer_ckpt=``) wins and must exist."""
    if override:
        found = resolve_path(override)
        if found is None:
            raise TokenizerNotFoundError(
                f"tokenizer_ckpt={override!r} does not exist (a path you give is used as given)"
            )
        return found
    if recorded is None:
        raise TokenizerNotFoundError(
            f"{path}: records no tokenizer (a lab checkpoint?); pass tokenizer_ckpt=<path>"
        )
    checkpoint_dir = Path(path).resolve().parent
    found = resolve_path(recorded["path"], checkpoint_dir) or resolve_path(
        Path(recorded["path"]).name, checkpoint_dir, shipped=True
    )
    if found is None:
        raise TokenizerNotFoundError(
            f"{path}: needs the tokenizer it was trained over, {recorded['path']!r} "
            f"(fingerprint {recorded.get('fingerprint')}), which was not found (looked as given "
            f"and beside the checkpoint); pass tokenizer_ckpt=<path>"
        )
    return found


def load_maskgit(path: str | Path, tokenizer_ckpt: str | None = None) -> MaskGitModule:
    """A ready MaskGitModule (eval mode) from our compact file, a Lightning checkpoint, or
    the lab's transformer state_dict (with ``tokenizer_ckpt``). Raises
    ``TokenizerNotFoundError`` without its tokenizer and ``TokenizerMismatchError`` (a
    ``CheckpointError``) with another one."""
    hparams, state, recorded = read_maskgit(path)
    tokenizer_path = find_tokenizer(path, recorded, tokenizer_ckpt)
    hparams.update(tokenizer_ckpt=str(tokenizer_path), compile=False)
    module = MaskGitModule(**hparams)
    module.load_transformer(state, recorded, str(path))
    return module.eval()


def tokenizer_of(path: str | Path) -> VQGAN:
    """The tokenizer a MaskGIT checkpoint uses (or the tokenizer file itself)."""
    data = read_checkpoint(path)
    if data.get("format") == TOKENIZER_FORMAT or "vqgan" in data.get("hyper_parameters", {}):
        return load_tokenizer(path)
    _, _, recorded = read_maskgit(path)
    return load_tokenizer(find_tokenizer(path, recorded))


def export_maskgit(checkpoint: str | Path, out: str | Path, tokenizer_file: str | Path) -> Path:
    """A Lightning checkpoint (or an older export) -> compact fp16 file, safetensors for a
    ``.safetensors`` name, that records ``tokenizer_file`` by a path relative to ``out``'s
    folder (ship them side by side, or keep their relative places)."""
    module = load_maskgit(checkpoint, str(tokenizer_file))
    out = Path(out)
    # relpath, not Path.relative_to: an export to another folder records "../..." and loads.
    relative = os.path.relpath(Path(tokenizer_file).resolve(), out.resolve().parent)
    hparams = {k: v for k, v in module.hparams.items() if k != "tokenizer_ckpt"}
    hparams["tokenizer_ckpt"] = relative
    training = training_record(read_checkpoint(checkpoint), checkpoint)
    save_compact(
        {
            "format": MASKGIT_FORMAT,
            "hyper_parameters": hparams,
            "state_dict": {
                f"transformer.{k}": v for k, v in half_state_dict(module.transformer).items()
            },
            "tokenizer": {"path": relative, "fingerprint": module.tokenizer_fingerprint},
            **({"training": training} if training else {}),
        },
        out,
    )
    return out
