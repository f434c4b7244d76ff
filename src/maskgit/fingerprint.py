"""What identifies a tokenizer: the fingerprint of the weights that decide its tokens, and the
one check that a MaskGIT's weights were trained over the tokenizer they are used with.

The token cache names its files by the fingerprint; MaskGIT checkpoints record it beside the
tokenizer's path, and every way of loading one (``maskgit.loading.load_maskgit``,
``init_from=``, Lightning's resume) runs :func:`require_same_tokenizer`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from maskgit.checkpoints import CheckpointError
from maskgit.models.vqgan import VQGAN

# What decides an image's tokens. The decoder side (post_quant_conv, decoder) is left out: a
# decoder retrained over the frozen codebook keeps every token, its cache and its MaskGIT.
TOKEN_DEFINING_PREFIXES = ("encoder.", "quant_conv.", "codebook.")


class TokenizerMismatchError(CheckpointError):
    """MaskGIT weights trained over another tokenizer: they would read its codes as
    something else."""


def tokenizer_fingerprint(tokenizer: VQGAN, whole: bool = False) -> str:
    """A hash of what maps images to tokens: the encoder-side weights, the pixel
    normalisation, the code lookup and the down-sampling (``whole``: of every weight and the
    normalisation, as checkpoints written before decoder fine-tuning record)."""
    digest = hashlib.sha1()
    for name, tensor in tokenizer.state_dict().items():
        if not (whole or name.startswith(TOKEN_DEFINING_PREFIXES)):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for buffer in (tokenizer.pixel_mean, tokenizer.pixel_std):
        digest.update(buffer.cpu().numpy().tobytes())
    if not whole:  # settings without weights that change every token
        settings = f"l2={tokenizer.codebook.l2_normalize},down={tokenizer.downsample_factor}"
        digest.update(settings.encode())
    return digest.hexdigest()[:16]


def require_same_tokenizer(
    source: str,
    recorded: Mapping[str, Any] | None,
    tokenizer: VQGAN,
    tokenizer_name: str,
    own: str | None = None,
) -> None:
    """A :class:`TokenizerMismatchError` when ``recorded`` (the ``{"path", "fingerprint"}`` a
    MaskGIT checkpoint recorded; None or no fingerprint: nothing to check, e.g. the lab's
    files) names another tokenizer than ``tokenizer`` (called ``tokenizer_name`` in the
    message; ``own``: its fingerprint where the caller holds it)."""
    expected = (recorded or {}).get("fingerprint")
    if not expected:
        return
    own = own or tokenizer_fingerprint(tokenizer)
    # Checkpoints written before decoder fine-tuning record the whole-weights form (hashed
    # only for them: it reads every weight).
    if expected == own or expected == tokenizer_fingerprint(tokenizer, whole=True):
        return
    raise TokenizerMismatchError(
        f"{source}: was trained over tokenizer {recorded.get('path')!r} (fingerprint "
        f"{expected}), but {tokenizer_name} has fingerprint {own}: its tokens would mean "
        "something else"
    )
