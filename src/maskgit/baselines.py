"""Inpainting methods evaluate.py can run on the same inputs (``method=``).

``maskgit`` is the model; the others give the FID table its scale: ``vqgan_recon`` (the
ground truth encoded and decoded: the tokenizer's upper bound), ``patchmatch``,
``opencv_telea`` / ``opencv_ns`` (classical inpainting) and ``masked_input`` (the holes left
grey: a floor).

Every method's fill meets the photo the same way (``paste_feather``, the top-level option:
0 = a hard paste that keeps every known pixel exact; N > 0 blends over N known pixels), so
the table compares like with like.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from maskgit.checkpoints import load_tokenizer
from maskgit.decoding import IterativeDecoder
from maskgit.inpainting import (
    DecodedTokens,
    InpaintResult,
    decode_tokens,
    ideal_fill_tokens,
    masked_input,
    paste,
    render,
    tokenize_fp32,
)
from maskgit.loading import load_maskgit, tokenizer_of
from maskgit.masking import pixel_to_token_mask
from maskgit.provenance import input_digest
from maskgit.trajectory_cache import TrajectoryCache, batch_steps, split


class Inpainter(nn.Module):
    """(images [B,3,H,W] in [0,1], pixel masks [B,1,H,W] 1 = known, dataset keys [B]) -> result."""

    name = "inpainter"
    paste_feather = 0

    def composite(self, images: Tensor, filled: Tensor, pixel_mask: Tensor) -> Tensor:
        """The fill pasted into the photo with this method's ``paste_feather``."""
        return paste(images, filled, pixel_mask, self.paste_feather)

    def forward(
        self, images: Tensor, pixel_mask: Tensor, keys: Tensor, seed: int, return_steps: bool
    ) -> InpaintResult:
        raise NotImplementedError


class MaskGitInpainter(Inpainter):
    """MaskGIT's iterative decoding; its compositing is the decoder's (``paste``,
    ``paste_feather``), which the configs set from the same top-level option.

    With a :class:`~maskgit.trajectory_cache.TrajectoryCache` (``use_trajectories``), images
    whose trajectory another job already decoded are read from it, and new trajectories are
    decoded to the last step and kept (``decode_full``, in sweeps) so that every
    ``sweet_spot`` of the sweep reads them."""

    name = "maskgit"

    def __init__(
        self, ckpt: str, decoder: IterativeDecoder, tokenizer_ckpt: str | None = None
    ) -> None:
        super().__init__()
        self.model = load_maskgit(ckpt, tokenizer_ckpt).eval()
        self.decoder = decoder
        self.paste_feather = decoder.paste_feather
        self.trajectories: TrajectoryCache | None = None
        self.decode_full = False

    def use_trajectories(self, cache: TrajectoryCache, decode_full: bool) -> None:
        self.trajectories, self.decode_full = cache, decode_full

    def forward(self, images, pixel_mask, keys, seed, return_steps):
        if self.trajectories is None:
            return self.model.inpaint(images, pixel_mask, keys, self.decoder, seed, return_steps)
        return self._inpaint_from_trajectories(images, pixel_mask, keys, seed, return_steps)

    def _inpaint_from_trajectories(self, images, pixel_mask, keys, seed, return_steps):
        assert self.trajectories is not None
        model, decoder = self.model, self.decoder
        digests = [input_digest(i, m) for i, m in zip(images, pixel_mask)]
        keys_list = keys.tolist()
        found = [self.trajectories.get(d, k, seed) for d, k in zip(digests, keys_list)]
        todo = [row for row, trajectory in enumerate(found) if trajectory is None]
        if todo:
            # Decoding to T costs more than stopping at sweet_spot: only where others read it.
            full = self.decode_full or decoder.sweet_spot in (None, decoder.total_iter)
            run = copy.copy(decoder)
            if full:
                run.sweet_spot = None
            rows = torch.tensor(todo, device=images.device)
            decoded = decode_tokens(
                model.tokenizer, model.transformer, run, images[rows], pixel_mask[rows],
                keys[rows], seed, return_steps=True,
            )  # fmt: skip
            assert decoded.steps is not None
            for row, trajectory in zip(todo, split(decoded.steps, decoded.tokens)):
                found[row] = trajectory
                if full:
                    self.trajectories.put(digests[row], keys_list[row], seed, trajectory)
        trajectories = [t for t in found if t is not None]
        grid = model.token_grid
        tokens = torch.stack([t.stopped_at(decoder.sweet_spot) for t in trajectories])
        decoded = DecodedTokens(
            tokens.view(-1, grid, grid).to(images.device),
            pixel_to_token_mask(pixel_mask, grid, decoder.token_threshold),
        )
        if return_steps:
            steps = batch_steps(trajectories, decoder.sweet_spot)
            steps.masks = [m.to(images.device) for m in steps.masks]
            steps.tokens = [t.to(images.device) for t in steps.tokens]
            decoded.steps = steps
        return render(model.tokenizer, decoder, images, pixel_mask, decoded)


class VQGANReconstruction(Inpainter):
    """Encode/decode the ground truth: what a perfect transformer could reach.

    With ``mask_aware_head`` (and a tokenizer that has one), the hole is decoded as inference
    with a perfect transformer would decode it: the known tokens from the photo with its hole
    hidden, the hole's tokens the photo's own, through the head. That is the ceiling of
    MaskGIT with the head, as the plain reconstruction is the ceiling of a hard paste."""

    name = "vqgan_recon"

    def __init__(
        self,
        ckpt: str | None = None,
        tokenizer_ckpt: str | None = None,
        paste: bool = True,
        paste_feather: int = 0,
        mask_aware_head: bool = False,
    ):
        super().__init__()
        self.tokenizer = (
            load_tokenizer(tokenizer_ckpt) if tokenizer_ckpt else tokenizer_of(ckpt)
        ).eval()
        self.paste = paste
        self.paste_feather = paste_feather
        self.head = self.tokenizer.mask_aware if paste and mask_aware_head else None

    @torch.inference_mode()
    def forward(self, images, pixel_mask, keys, seed, return_steps):
        if self.head is None:
            tokens = tokenize_fp32(self.tokenizer, images)
            decoded = self.tokenizer.detokenize(tokens)
            output = self.composite(images, decoded, pixel_mask) if self.paste else decoded
        else:
            tokens = ideal_fill_tokens(self.tokenizer, images, pixel_mask)
            decoded = self.head(self.tokenizer.detokenize(tokens), images, pixel_mask)
            output = self.composite(images, decoded, pixel_mask)
        return InpaintResult(
            images=output, tokens=tokens, token_mask=torch.zeros_like(tokens).bool()
        )


def _uint8_pairs(images: Tensor, pixel_mask: Tensor):
    """(H,W,3 uint8 photo, H,W bool hole) per image, for the numpy-based methods."""
    for image, mask in zip(images.cpu(), pixel_mask.cpu()):
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        yield rgb, mask[0].numpy() < 1.0


def _from_uint8(filled: list[np.ndarray], like: Tensor) -> Tensor:
    return torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in filled]).to(
        like.device
    )


class OpenCVInpainter(Inpainter):
    """cv2.inpaint (Telea's fast marching or Navier-Stokes), image by image on the CPU."""

    def __init__(
        self, algorithm: str = "telea", radius: float = 3.0, paste_feather: int = 0
    ) -> None:
        super().__init__()
        try:
            import cv2
        except ImportError as error:
            raise ImportError(
                "method=opencv_* needs OpenCV: pip install -e '.[classical]'"
            ) from error
        flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
        if algorithm not in flags:
            raise ValueError(f"opencv algorithm must be 'telea' or 'ns', got {algorithm!r}")
        self.cv2 = cv2
        self.flag = flags[algorithm]
        self.radius = radius
        self.paste_feather = paste_feather
        self.name = f"opencv_{algorithm}"

    @torch.inference_mode()
    def forward(self, images, pixel_mask, keys, seed, return_steps):
        filled = [
            self.cv2.inpaint(rgb, hole.astype(np.uint8) * 255, self.radius, self.flag)
            for rgb, hole in _uint8_pairs(images, pixel_mask)
        ]
        output = self.composite(images, _from_uint8(filled, images), pixel_mask)
        empty = torch.zeros(images.shape[0], 0, dtype=torch.bool)
        return InpaintResult(images=output, tokens=empty, token_mask=empty)


class PatchMatchInpainter(Inpainter):
    """PatchMatch (Barnes et al. 2009), coarse to fine: each missing patch copies its nearest
    known patch; ``patchmatch_cython.inpaint_pyramid``, image by image on the CPU, seeded by
    (seed, image key) so a seed sweep varies it as it varies MaskGIT."""

    name = "patchmatch"

    def __init__(
        self,
        patch_size: int = 5,
        em_loops: int = 1,
        poisson_blend: bool = True,
        paste_feather: int = 0,
    ) -> None:
        super().__init__()
        try:
            from patchmatch_cython import inpaint_pyramid
        except ImportError as error:
            raise ImportError(
                "method=patchmatch needs patchmatch-cython: pip install -e '.[classical]'"
            ) from error
        self.inpaint_pyramid = inpaint_pyramid
        self.patch_size = patch_size
        self.em_loops = em_loops
        self.poisson_blend = poisson_blend
        self.paste_feather = paste_feather

    @torch.inference_mode()
    def forward(self, images, pixel_mask, keys, seed, return_steps):
        filled = [
            self.inpaint_pyramid(
                rgb, hole, patch_size=self.patch_size, em_loops=self.em_loops,
                poisson_blend=self.poisson_blend, seed=(seed * 1_000_003 + int(key)) % 2**31,
            )
            for (rgb, hole), key in zip(_uint8_pairs(images, pixel_mask), keys.tolist())
        ]  # fmt: skip
        output = self.composite(images, _from_uint8(filled, images), pixel_mask)
        empty = torch.zeros(images.shape[0], 0, dtype=torch.bool)
        return InpaintResult(images=output, tokens=empty, token_mask=empty)


class MaskedInput(Inpainter):
    """The input with its holes grey: the floor every method should beat."""

    name = "masked_input"

    def forward(self, images, pixel_mask, keys, seed, return_steps):
        empty = torch.zeros(images.shape[0], 0, dtype=torch.bool)
        return InpaintResult(
            images=masked_input(images, pixel_mask), tokens=empty, token_mask=empty
        )
