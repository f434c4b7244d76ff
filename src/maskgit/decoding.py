"""Iterative decoding (MaskGIT, Chang et al. 2022) for inpainting.

The missing tokens start as ``[MASK]``; known tokens never change. At step t = 1..T every
masked token is predicted, and the n_t = floor(gamma(t/T) * n_missing) lowest-scored of them
are masked again; the sampler (``maskgit.samplers``) gives the scores (by default the
confidence: log-probability of the chosen token + Gumbel noise scaled by
``choice_temperature * (1 - t/T)``). The loop scores known and committed tokens +inf, so no
sampler can touch them. ``sweet_spot`` stops after that many steps, filling the remaining
masks with the last prediction.

Random numbers come from a counter-based hash of (seed, image key, step, position): an
image decodes the same whether it is alone, in a batch, or on another DDP rank.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from maskgit.precision import autocast, check_precision
from maskgit.samplers import ConfidenceSampler, Sampler, StepState
from maskgit.schedules import Schedule

LogitsAt = Callable[[Tensor, Tensor], Tensor]
"""(tokens [B,N], where [B,N] bool) -> logits [M,K] at the True positions (row-major)."""

_MASK32 = 0xFFFFFFFF


def _hash32(x: Tensor) -> Tensor:
    """lowbias32 integer hash on int64 tensors holding 32-bit values."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash_uniform(
    seed: int | Tensor,
    keys: Tensor,
    step: int,
    stream: int,
    width: int,
    positions: Tensor | None = None,
) -> Tensor:
    """Uniform(0,1) noise [M, width] that depends only on
    (seed, key, step, stream, position, column): keys [M], positions [M] (default 0), seed
    one int or [M] (a seed per row)."""
    seeds = seed.to(keys) if isinstance(seed, Tensor) else torch.full_like(keys, seed)
    base = _hash32((seeds & _MASK32) + 0x9E3779B9 * (stream + 1))
    base = _hash32(base ^ _hash32(keys & _MASK32))
    base = _hash32(base + step * 0x85EBCA6B)
    if positions is not None:
        base = _hash32(base ^ _hash32(positions + 0x165667B1))
    columns = torch.arange(width, device=keys.device, dtype=torch.int64)
    bits = _hash32(base.unsqueeze(1) ^ _hash32(columns + 0x27D4EB2F).unsqueeze(0))
    return (bits.double() + 0.5) / 2**32


def gumbel(uniform: Tensor) -> Tensor:
    return -torch.log(-torch.log(uniform))


@dataclass
class DecodingSteps:
    """Per-step states: token masks [B,N] (True = still masked; the first is the input's)
    and the model's full prediction [B,N] at each step (one fewer than the masks)."""

    masks: list[Tensor] = field(default_factory=list)
    tokens: list[Tensor] = field(default_factory=list)


class IterativeDecoder:
    """Settings of iterative decoding; calling it decodes a batch of token grids.

    Args:
        schedule: gamma(r), the share of the missing tokens still masked after step r*T.
        total_iter: T, the number of steps the schedule is spread over.
        sweet_spot: stop after this many steps (None: run all T).
        choice_temperature: scale of the Gumbel noise added to the confidences (of the
            default sampler, when ``sampler`` is None).
        temperature: softmax temperature of the token predictions.
        top_k: sample among the k most likely tokens only (None: all of them); the
            confidence is still the model's probability. With ``sample=False`` it changes
            nothing. These defaults are the project's, shared by evaluate.py
            (``conf/decoding/default.yaml``, pinned by a test), the API and the apps.
        sample: sample the predicted tokens (True) or take the argmax.
        noise: the default sampler's: "paper" anneals the noise as (1 - t/T); "lab" scales
            it by (1 - gamma(t/T)).
        sampler: which still-masked tokens each step commits (``maskgit.samplers``); None:
            ``ConfidenceSampler(choice_temperature, noise)``.
        token_threshold: a token is missing where more than this share of its pixels is.
        paste: paste the decoded image into the known pixels (False: raw VQGAN output).
        paste_feather: with ``paste``, blend over this many known pixels around the hole
            (a linear ramp from the decoded to the known pixels) instead of a hard edge; 0
            keeps every known pixel as it is.
        mask_aware_head: with ``paste``, decode the hole with the tokenizer's mask-aware head
            (``maskgit.models.mask_aware``) where it has one; known pixels stay exact.
        precision: "auto" runs the transformer and the VQGAN decoder under bf16 autocast
            where the device has bf16 matrix units (``maskgit.precision``) and in fp32
            elsewhere; "32" and "bf16" force one. Tokenizing, confidences, noise and the
            ranking are always fp32.
        compile: ``torch.compile`` the transformer's blocks for decoding (first call slow),
            in place: later decoding with that transformer runs compiled too.
    """

    def __init__(
        self,
        schedule: Schedule,
        total_iter: int = 8,
        sweet_spot: int | None = None,
        choice_temperature: float = 4.5,
        temperature: float = 1.0,
        top_k: int | None = 50,
        sample: bool = True,
        noise: Literal["paper", "lab"] = "paper",
        token_threshold: float = 0.0,
        paste: bool = True,
        paste_feather: int = 0,
        mask_aware_head: bool = True,
        precision: Literal["auto", "32", "bf16"] = "auto",
        compile: bool = False,
        sampler: Sampler | None = None,
    ) -> None:
        if total_iter < 1:
            raise ValueError(f"total_iter must be >= 1, got {total_iter}")
        if sweet_spot is not None and not 1 <= sweet_spot <= total_iter:
            raise ValueError(
                f"sweet_spot must be in [1, total_iter={total_iter}], got {sweet_spot}"
            )
        default_sampler = ConfidenceSampler(choice_temperature, noise)  # checks both
        if not 0.0 <= token_threshold < 1.0:
            raise ValueError(
                f"decoding.token_threshold must be in [0, 1) (the share of a token's pixels "
                f"that may be missing before it is), got {token_threshold}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise ValueError(f"decoding.top_k must be an integer >= 1 or null, got {top_k!r}")
        if (
            isinstance(paste_feather, bool)
            or not isinstance(paste_feather, int)
            or paste_feather < 0
        ):
            raise ValueError(
                f"decoding.paste_feather must be an integer >= 0 (pixels of blend around the "
                f"hole; 0 = a hard paste), got {paste_feather!r}"
            )
        precision = check_precision(precision, "decoding.precision")
        self.schedule = schedule
        self.total_iter = total_iter
        self.sweet_spot = sweet_spot
        self.choice_temperature = choice_temperature
        self.temperature = temperature
        self.top_k = top_k
        self.sample = sample
        self.noise = noise
        self.token_threshold = token_threshold
        self.paste = paste
        self.paste_feather = paste_feather
        self.mask_aware_head = mask_aware_head
        self.precision = precision
        self.compile = compile
        self.sampler = sampler if sampler is not None else default_sampler

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """The autocast context of the model calls on ``device``: bf16, or autocast off,
        so that "32" stays fp32 even inside a bf16-mixed Trainer."""
        return autocast(self.precision, device)

    @property
    def num_steps(self) -> int:
        return self.sweet_spot or self.total_iter

    def masked_after(self, step: int, n_missing: Tensor) -> Tensor:
        """floor(gamma(t/T) * n_missing) [B]: the schedule's count after ``step``."""
        ratio = torch.tensor(step / self.total_iter, dtype=torch.float64)
        gamma = self.schedule(ratio).to(torch.float64)
        return torch.floor(gamma * n_missing.to(torch.float64) + 1e-9).long()

    @torch.inference_mode()
    def __call__(
        self,
        logits_at: LogitsAt,
        tokens: Tensor,
        token_mask: Tensor,
        mask_token_id: int,
        keys: Tensor | None = None,
        seed: int | Tensor = 0,
        return_steps: bool = False,
    ) -> tuple[Tensor, DecodingSteps | None]:
        """Fill the masked tokens.

        Args:
            logits_at: the model, predicting only where asked (``BidirectionalTransformer.logits_at``).
            tokens: [B,N] token ids of the image (values under the mask are ignored).
            token_mask: [B,N] bool, True = missing.
            keys: [B] int ids of the images (dataset indices) that key the random numbers.
            seed: the noise seed, or [B] seeds: a row decodes as it would alone with its
                seed, so K copies of an image with seeds s..s+K-1 are K fills in one batch.
        Returns:
            tokens [B,N] with every missing token filled, and the per-step states if asked.
        """
        batch, num = tokens.shape
        device = tokens.device
        keys = torch.arange(batch, device=device) if keys is None else keys.to(device).long()
        seeds = (
            seed.to(device).long().expand(batch)
            if isinstance(seed, Tensor)
            else torch.full((batch,), seed, device=device, dtype=torch.long)
        )
        n_missing = token_mask.sum(1)
        unknown = token_mask.clone()
        current = tokens.masked_fill(unknown, mask_token_id)
        steps = DecodingSteps() if return_steps else None
        if steps is not None:
            steps.masks.append(unknown.clone())
        last = self.num_steps
        autocast = self.autocast(device)
        for step in range(1, last + 1):
            if not unknown.any():
                break
            with autocast:
                logits = logits_at(current, unknown)
            logits = logits.float() / self.temperature  # [M,K]
            log_probs = torch.log_softmax(logits, dim=-1)
            if self.sample:  # Gumbel-max: a categorical sample from the hashed noise
                rows, cols = unknown.nonzero().unbind(1)
                u = hash_uniform(seeds[rows], keys[rows], step, 0, logits.shape[-1], cols)
                candidates = log_probs
                if self.top_k is not None and self.top_k < logits.shape[-1]:
                    # Only the sampling is restricted (to exactly k codes, ties broken by
                    # topk); the confidence stays the model's.
                    keep = torch.zeros_like(log_probs, dtype=torch.bool)
                    keep.scatter_(1, log_probs.topk(self.top_k, dim=-1).indices, True)
                    candidates = log_probs.masked_fill(~keep, float("-inf"))
                chosen = (candidates + gumbel(u).to(log_probs.dtype)).argmax(-1)
            else:
                chosen = log_probs.argmax(-1)
            sampled = current.clone()
            sampled[unknown] = chosen

            if step == last:
                n_mask = torch.zeros_like(n_missing)
            else:
                # At least one token is revealed each step, and one stays for the next.
                n_unknown = unknown.sum(1)
                n_mask = self.masked_after(step, n_missing).to(device)
                n_mask = torch.minimum(n_mask, n_unknown - 1).clamp_min(0)
                n_mask = torch.where(n_unknown > 1, n_mask.clamp_min(1), n_mask)
            state = StepState(
                step=step, total_iter=self.total_iter, gamma=self.schedule, unknown=unknown,
                log_probs=log_probs, chosen=chosen, keys=keys, seed=seeds, uniform=hash_uniform,
            )  # fmt: skip
            # Known and committed tokens are +inf whatever the sampler says: never re-masked.
            scores = self.sampler.scores(state).to(device).masked_fill(~unknown, float("inf"))
            # Re-mask the n_mask lowest-scored of the still-unknown tokens.
            order = scores.argsort(dim=1)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(num, device=device).expand(batch, num))
            unknown = rank < n_mask.unsqueeze(1)
            current = sampled.masked_fill(unknown, mask_token_id)
            if steps is not None:
                steps.masks.append(unknown.clone())
                steps.tokens.append(sampled)
        return current, steps
