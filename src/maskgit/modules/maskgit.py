"""Stage 2: masked visual token modelling (MVTM) over a frozen VQGAN tokenizer."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from maskgit.checkpoints import (
    TokenizerNotFoundError,
    checkpoint_source,
    load_state_dict_strict,
    load_tokenizer,
    read_maskgit,
    require_fit,
    resolve_path,
)
from maskgit.config import plain_config
from maskgit.decoding import IterativeDecoder
from maskgit.fingerprint import require_same_tokenizer, tokenizer_fingerprint
from maskgit.inpainting import InpaintResult, hide_missing, inpaint, tokenize_fp32
from maskgit.masking import pixel_to_token_mask, random_token_mask
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.modules.lr_schedule import warmup_cosine
from maskgit.schedules import Schedule, get_schedule

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def mvtm_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy over the K codebook classes at the masked positions.

    logits [M,K] (class axis last, rows = masked tokens), targets [M] in [0,K).
    """
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def build_schedule(config: Any) -> Schedule:
    if isinstance(config, str):
        return get_schedule(config)
    return hydra.utils.instantiate(config)


def check_training_options(
    inpaint_mask_fraction: float,
    label_smoothing: float,
    lr: float,
    warmup_steps: int,
    min_lr_ratio: float,
    lr_decay_steps: int | None,
) -> None:
    """Ranges of the numeric training options, checked at start-up with their names."""
    checks = [
        ("model.inpaint_mask_fraction", inpaint_mask_fraction, 0 <= inpaint_mask_fraction <= 1, "[0, 1]"),
        ("model.label_smoothing", label_smoothing, 0 <= label_smoothing < 1, "[0, 1)"),
        ("model.lr", lr, lr > 0, "> 0"),
        ("model.warmup_steps", warmup_steps, warmup_steps >= 0, ">= 0"),
        ("model.min_lr_ratio", min_lr_ratio, 0 <= min_lr_ratio <= 1, "[0, 1]"),
        ("model.lr_decay_steps", lr_decay_steps, lr_decay_steps is None or lr_decay_steps >= 1, ">= 1 or null"),
    ]  # fmt: skip
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name} must be {allowed}, got {value}")


class MaskGitModule(L.LightningModule):
    """MaskGIT transformer over a frozen tokenizer (loaded from ``tokenizer_ckpt``).

    Checkpoints hold the transformer only, plus the tokenizer's path and fingerprint; loading
    one finds that tokenizer again (or fails naming it) and refuses a different one.
    """

    def __init__(
        self,
        tokenizer_ckpt: str,
        transformer: dict,
        mask_schedule: Any = "cosine",
        decoding: dict | None = None,
        inpaint_mask_fraction: float = 0.0,
        label_smoothing: float = 0.0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        min_lr_ratio: float = 0.1,
        lr_decay_steps: int | None = None,
        skip_nonfinite: bool = False,
        compile: bool = False,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        check_training_options(
            inpaint_mask_fraction=inpaint_mask_fraction, label_smoothing=label_smoothing,
            lr=lr, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
            lr_decay_steps=lr_decay_steps,
        )  # fmt: skip
        transformer = plain_config(transformer)
        mask_schedule = plain_config(mask_schedule)
        decoding = plain_config(decoding)
        betas = plain_config(betas)
        self.save_hyperparameters()
        path = resolve_path(tokenizer_ckpt)
        if path is None:
            raise TokenizerNotFoundError(
                f"tokenizer checkpoint {tokenizer_ckpt!r} not found; train one with "
                "`python train.py experiment=tokenizer` or set tokenizer_ckpt=<path>"
            )
        self.tokenizer = load_tokenizer(path).eval().requires_grad_(False)
        transformer = {
            **transformer,
            "num_image_tokens": self._token_count(image_size, transformer),
        }
        self.transformer = BidirectionalTransformer(**transformer)
        if self.transformer.num_codebook_vectors != self.tokenizer.num_codebook_vectors:
            raise ValueError(
                f"transformer.num_codebook_vectors={self.transformer.num_codebook_vectors} but the "
                f"tokenizer {path} has {self.tokenizer.num_codebook_vectors} codes"
            )
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.mask_schedule = build_schedule(mask_schedule)
        self.decoder: IterativeDecoder | None = (
            hydra.utils.instantiate(decoding) if decoding else None
        )
        if compile:
            self.transformer.compile_blocks()

    def _token_count(self, image_size: int | None, transformer: dict) -> int:
        """The token grid follows from the image size and the tokenizer's downsampling: one
        setting (``data.image_size``), not two to keep in step."""
        given = transformer.get("num_image_tokens")
        if image_size is None:
            if given is None:
                raise ValueError(
                    "model.image_size (data.image_size) or transformer.num_image_tokens is needed"
                )
            return given
        factor = self.tokenizer.downsample_factor
        if image_size % factor:
            raise ValueError(
                f"data.image_size={image_size} is not a multiple of the tokenizer's "
                f"downsampling factor {factor}"
            )
        tokens = (image_size // factor) ** 2
        if given is not None and given != tokens:
            raise ValueError(
                f"transformer.num_image_tokens={given}, but data.image_size={image_size} with the "
                f"tokenizer's downsampling {factor} gives {tokens} tokens; leave "
                "transformer.num_image_tokens unset (null): it follows from the image size"
            )
        return tokens

    # The tokenizer stays frozen in eval mode whatever the trainer does.
    def train(self, mode: bool = True) -> MaskGitModule:
        super().train(mode)
        self.tokenizer.eval()
        return self

    @property
    def mask_token_id(self) -> int:
        return self.transformer.mask_token_id

    @property
    def token_grid(self) -> int:
        return math.isqrt(self.transformer.num_image_tokens)

    def tokens_of(self, batch: dict[str, Tensor]) -> Tensor:
        """[B,N] token ids: cached ones when the batch has them, else encoded now."""
        if "tokens" in batch:
            return batch["tokens"].flatten(1).long()
        return tokenize_fp32(self.tokenizer, batch["image"]).flatten(1)

    def training_token_mask(
        self, tokens: Tensor, pixel_mask: Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B,N] True = masked: MVTM random masks, or inpainting-shaped ones for a share."""
        batch, num = tokens.shape
        mask = random_token_mask(batch, num, self.mask_schedule, generator).to(tokens.device)
        fraction = self.hparams.inpaint_mask_fraction
        if pixel_mask is None or fraction <= 0:
            return mask
        shaped = pixel_to_token_mask(pixel_mask, self.token_grid).flatten(1)
        use = torch.rand(batch, generator=generator).to(tokens.device) < fraction
        use &= shaped.any(1)  # a hole-free mask gives no loss; keep the random one
        return torch.where(use[:, None], shaped, mask)

    def visible_tokens(
        self, batch: dict[str, Tensor], tokens: Tensor, token_mask: Tensor
    ) -> Tensor:
        """The tokens the transformer sees at unmasked positions: for rows masked by their
        inpainting mask, those of the image with its hole hidden, as inference sees them
        (:func:`maskgit.inpainting.hide_missing`); the targets stay the whole image's tokens.
        Needs the images in the batch (the token cache serves them beside the tokens when
        ``data.train_masks`` is set); without them the tokens are used as they are."""
        pixel_mask = batch.get("mask")
        if "image" not in batch or pixel_mask is None:
            return tokens
        shaped = pixel_to_token_mask(pixel_mask, self.token_grid).flatten(1)
        rows = shaped.any(1) & (shaped == token_mask).all(1)
        if not rows.any():
            return tokens
        hidden = hide_missing(batch["image"][rows], pixel_mask[rows].to(batch["image"].dtype))
        visible = tokens.clone()
        visible[rows] = tokenize_fp32(self.tokenizer, hidden).flatten(1)
        return visible

    def mvtm_step(
        self, tokens: Tensor, token_mask: Tensor, visible: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Loss and masked-token accuracy for one batch of token grids (``visible``: what the
        transformer sees at the unmasked positions, default ``tokens``)."""
        visible = tokens if visible is None else visible
        inputs = visible.masked_fill(token_mask, self.mask_token_id)
        logits = self.transformer.logits_at(inputs, token_mask)
        targets = tokens[token_mask]
        loss = mvtm_loss(logits, targets, self.hparams.label_smoothing)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return loss, accuracy

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        tokens = self.tokens_of(batch)
        token_mask = self.training_token_mask(tokens, batch.get("mask"))
        visible = self.visible_tokens(batch, tokens, token_mask)
        loss, accuracy = self.mvtm_step(tokens, token_mask, visible)
        if not torch.isfinite(loss):
            message = (
                f"non-finite training loss ({loss.item()}) at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx})"
            )
            if self.hparams.skip_nonfinite:
                log.warning("%s: batch skipped", message)
                return None
            raise NonFiniteLossError(
                f"{message}; the run stops and its last saved checkpoint is kept. "
                "Lower model.lr, or set model.skip_nonfinite=true to skip such batches."
            )
        self.log_dict(
            {"train/loss": loss, "train/masked_acc": accuracy},
            prog_bar=True, on_step=True, on_epoch=False, batch_size=tokens.shape[0],
        )  # fmt: skip
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        tokens = self.tokens_of(batch)
        # Fixed masks per batch: validation losses of different epochs compare.
        generator = torch.Generator().manual_seed(batch_idx)
        token_mask = self.training_token_mask(tokens, batch.get("mask"), generator)
        visible = self.visible_tokens(batch, tokens, token_mask)
        loss, accuracy = self.mvtm_step(tokens, token_mask, visible)
        self.log_dict(
            {"val/loss": loss, "val/masked_acc": accuracy},
            prog_bar=True, on_epoch=True, sync_dist=True, batch_size=tokens.shape[0],
        )  # fmt: skip

    def inpaint(
        self,
        images: Tensor,
        pixel_mask: Tensor,
        keys: Tensor | None = None,
        decoder: IterativeDecoder | None = None,
        seed: int = 0,
        return_steps: bool = False,
    ) -> InpaintResult:
        decoder = decoder or self.decoder
        if decoder is None:
            raise ValueError(
                "no decoding settings: pass decoder= or build the module with decoding="
            )
        return inpaint(
            self.tokenizer, self.transformer, decoder, images, pixel_mask, keys, seed, return_steps
        )

    def configure_optimizers(self):
        # Weight decay on linear weights only: not on embeddings, biases or norms.
        decay, no_decay = [], []
        for module in self.transformer.modules():
            for name, param in module.named_parameters(recurse=False):
                is_linear_weight = isinstance(module, torch.nn.Linear) and name == "weight"
                (decay if is_linear_weight else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
        )
        total = self.hparams.lr_decay_steps or int(self.trainer.estimated_stepping_batches)
        lr_factor = warmup_cosine(self.hparams.warmup_steps, total, self.hparams.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def check_tokenizer(self, source: str, recorded: dict | None) -> None:
        """Refuse weights trained over another tokenizer than this module's (``recorded``: the
        tokenizer path and fingerprint their checkpoint records)."""
        require_same_tokenizer(
            source, recorded, self.tokenizer, repr(self.hparams.tokenizer_ckpt),
            own=self.tokenizer_fingerprint,
        )  # fmt: skip

    def load_transformer(
        self, state: dict[str, Tensor], recorded: dict | None, source: str
    ) -> None:
        """Transformer weights read by ``maskgit.checkpoints.read_maskgit``: refused when
        trained over another tokenizer, loaded strictly (every key named) otherwise."""
        self.check_tokenizer(source, recorded)
        load_state_dict_strict(self.transformer, state, source)

    def init_from(self, path: str | Path) -> None:
        """Start the transformer from another run's weights (fine-tuning): a fresh optimizer and
        LR schedule, unlike ``ckpt_path`` which resumes that run where it stopped."""
        _, state, recorded = read_maskgit(path)
        self.load_transformer(state, recorded, f"init_from={str(path)!r}")
        log.info("transformer initialised from %s", path)

    # --- checkpoints: the frozen tokenizer is referenced, not copied ---------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("tokenizer.")]:
            del state[key]
        checkpoint["tokenizer"] = {
            "path": str(self.hparams.tokenizer_ckpt),
            "fingerprint": self.tokenizer_fingerprint,
        }
        # The global RNG draws the masks, dropout and data order: a resumed run restores it
        # (in on_train_start) and continues as the uninterrupted run would.
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_tokenizer(checkpoint_source(self), checkpoint.get("tokenizer"))
        for key, value in self.tokenizer.state_dict().items():
            checkpoint["state_dict"].setdefault(f"tokenizer.{key}", value)
        require_fit(self, checkpoint["state_dict"], checkpoint_source(self))
        self._resume_rng_state = checkpoint.get("rng_state")

    def on_train_start(self) -> None:
        state = getattr(self, "_resume_rng_state", None)
        self._resume_rng_state = None
        if state:
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["cuda"])
