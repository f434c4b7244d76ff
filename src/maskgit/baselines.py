"""Inpainting methods evaluate.py can run on the same inputs (``method=``).

``maskgit`` is the model; the others give the FID table its scale: ``vqgan_recon`` (the
ground truth encoded and decoded: the tokenizer's upper bound), ``opencv_telea`` /
``opencv_ns`` (classical inpainting) and ``masked_input`` (the holes left grey: a floor).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from maskgit.checkpoints import load_tokenizer
from maskgit.decoding import IterativeDecoder
from maskgit.inpainting import InpaintResult, masked_input, paste
from maskgit.loading import load_maskgit, tokenizer_of


class Inpainter(nn.Module):
    """(images [B,3,H,W] in [0,1], pixel masks [B,1,H,W] 1 = known, dataset keys [B]) -> result."""

    name = "inpainter"

    def forward(
        self, images: Tensor, pixel_mask: Tensor, keys: Tensor, seed: int, return_steps: bool
    ) -> InpaintResult:
        raise NotImplementedError


class MaskGitInpainter(Inpainter):
    name = "maskgit"

    def __init__(
        self, ckpt: str, decoder: IterativeDecoder, tokenizer_ckpt: str | None = None
    ) -> None:
        super().__init__()
        self.model = load_maskgit(ckpt, tokenizer_ckpt).eval()
        self.decoder = decoder

    def forward(self, images, pixel_mask, keys, seed, return_steps):
        return self.model.inpaint(images, pixel_mask, keys, self.decoder, seed, return_steps)


class VQGANReconstruction(Inpainter):
    """Encode/decode the ground truth: what a perfect transformer could reach."""

    name = "vqgan_recon"

    def __init__(
        self,
        ckpt: str | None = None,
        tokenizer_ckpt: str | None = None,
        paste: bool = True,
        paste_feather: int = 0,
    ):
        super().__init__()
        self.tokenizer = (
            load_tokenizer(tokenizer_ckpt) if tokenizer_ckpt else tokenizer_of(ckpt)
        ).eval()
        self.paste = paste
        self.paste_feather = paste_feather

    @torch.inference_mode()
    def forward(self, images, pixel_mask, keys, seed, return_steps):
        tokens = self.tokenizer.tokenize(images)
        decoded = self.tokenizer.detokenize(tokens)
        feather = self.paste_feather
        output = paste(images, decoded, pixel_mask, feather) if self.paste else decoded
        return InpaintResult(
            images=output, tokens=tokens, token_mask=torch.zeros_like(tokens).bool()
        )


class OpenCVInpainter(Inpainter):
    """cv2.inpaint (Telea's fast marching or Navier-Stokes), image by image on the CPU."""

    def __init__(self, algorithm: str = "telea", radius: float = 3.0) -> None:
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
        self.name = f"opencv_{algorithm}"

    @torch.inference_mode()
    def forward(self, images, pixel_mask, keys, seed, return_steps):
        outputs = []
        for image, mask in zip(images.cpu(), pixel_mask.cpu()):
            rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            holes = ((1 - mask[0].numpy()) * 255).astype(np.uint8)
            filled = self.cv2.inpaint(rgb, holes, self.radius, self.flag)
            outputs.append(torch.from_numpy(filled).permute(2, 0, 1).float() / 255)
        output = torch.stack(outputs).to(images.device)
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
