"""Stage-2 training: the MVTM loss, token masks, optimizer groups, NaN handling, checkpoints."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import SAMPLE, tiny_tokenizer_config, tiny_transformer_config
from faults import PoisonAt
from torch import Tensor, nn
from torch.utils.data import DataLoader

from maskgit.checkpoints import TOKENIZER_FORMAT, CheckpointError, load_tokenizer, save_atomic
from maskgit.data.images import load_image
from maskgit.data.masks import GeneratedMasks
from maskgit.fingerprint import TokenizerMismatchError, tokenizer_fingerprint
from maskgit.inpainting import hide_missing
from maskgit.loading import TokenizerNotFoundError, load_maskgit
from maskgit.masking import pixel_to_token_mask
from maskgit.models.vqgan import VQGAN
from maskgit.modules.maskgit import MaskGitModule, NonFiniteLossError, mvtm_loss

K = 64  # codebook size of the tiny tokenizer
N = 256  # 16x16 tokens


def make_module(tokenizer: Path, **kwargs) -> MaskGitModule:
    torch.manual_seed(0)
    return MaskGitModule(
        tokenizer_ckpt=str(tokenizer), transformer=tiny_transformer_config(K), **kwargs
    )


def save_tokenizer(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = tiny_tokenizer_config()
    state = VQGAN(**config).state_dict()
    save_atomic({"format": TOKENIZER_FORMAT, "config": config, "state_dict": state}, path)
    return path


def random_batch(batch: int = 2, seed: int = 0, share: float = 0.5) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, K, (batch, N), generator=gen)
    mask = torch.rand(batch, N, generator=gen) < share
    return tokens, mask


def sample_tokens(module: MaskGitModule, count: int = 8) -> Tensor:
    files = sorted((SAMPLE / "train").iterdir())[:count]
    images = torch.stack([load_image(f, 64) for f in files])
    return module.tokenizer.tokenize(images).flatten(1)


def token_batches(tokens: Tensor, batch_size: int = 4) -> DataLoader:
    return DataLoader([{"tokens": t} for t in tokens], batch_size=batch_size)


def quiet_trainer(max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, **kwargs,
    )  # fmt: skip


# --- the loss ---------------------------------------------------------------------------


def test_loss_ignores_targets_at_unmasked_positions(tiny_maskgit):
    module = tiny_maskgit.eval()  # no dropout: the same input gives the same loss
    transformer = module.transformer
    a, b = 3, 7
    with torch.no_grad():
        # Tokens a and b look identical as inputs, but as targets they differ by a bias of 2.
        transformer.tok_emb.weight[b] = transformer.tok_emb.weight[a]
        transformer.bias[:, b] += 2.0
    tokens, mask = random_batch()
    free = int((~mask[0]).nonzero()[0])
    held = int(mask[0].nonzero()[0])
    tokens[0, free] = a
    tokens[0, held] = a

    with torch.no_grad():
        loss, _ = module.mvtm_step(tokens, mask)
        changed = tokens.clone()
        changed[0, free] = b  # an unmasked target changes, its input does not
        same, _ = module.mvtm_step(changed, mask)
        # Had the loss covered every position, that change would show:
        inputs = tokens.masked_fill(mask, module.mask_token_id)
        logits = transformer(inputs)
        per_token = nn.functional.cross_entropy(logits[0], tokens[0], reduction="none")
        per_token_changed = nn.functional.cross_entropy(logits[0], changed[0], reduction="none")
        masked_target = tokens.clone()
        masked_target[0, held] = b
        other, _ = module.mvtm_step(masked_target, mask)

    assert torch.equal(loss, same)
    assert not torch.isclose(per_token[free], per_token_changed[free])
    assert not torch.isclose(loss, other)  # a masked target does count


def test_logits_have_the_codebook_as_class_axis(tiny_maskgit):
    module = tiny_maskgit.eval()
    tokens, mask = random_batch(batch=3, seed=1)
    inputs = tokens.masked_fill(mask, module.mask_token_id)
    with torch.no_grad():
        logits = module.transformer.logits_at(inputs, mask)
        full = module.transformer(inputs)
    assert module.tokenizer.num_codebook_vectors == K
    assert logits.shape == (int(mask.sum()), K)
    assert full.shape == (3, N, K)
    # logits_at gives the rows of the full prediction at the masked positions, in order.
    torch.testing.assert_close(logits, full[mask], rtol=1e-5, atol=1e-5)

    targets = tokens[mask]
    loss = mvtm_loss(logits, targets)
    # Independent cross-entropy: -log softmax over the K codes at the target, averaged.
    dense = logits.double()
    log_softmax = dense - torch.log(torch.exp(dense).sum(dim=1, keepdim=True))
    expected = -log_softmax[torch.arange(len(targets)), targets].mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    # Label smoothing spreads eps over the K codes (not over K+1 with [MASK]).
    eps = 0.1
    smoothed = ((1 - eps) * -log_softmax[torch.arange(len(targets)), targets]).mean()
    smoothed = smoothed + eps * (-log_softmax.mean(dim=1)).mean()
    torch.testing.assert_close(
        mvtm_loss(logits, targets, eps).double(), smoothed, rtol=1e-5, atol=1e-6
    )
    # The loss mvtm_step reports is that cross-entropy.
    with torch.no_grad():
        step_loss, accuracy = module.mvtm_step(tokens, mask)
    torch.testing.assert_close(step_loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert accuracy == (logits.argmax(1) == targets).float().mean()

    # Raising one row's logit of a non-target class lowers that row's target probability.
    row = 0
    other = (int(targets[row]) + 1) % K
    bumped = logits.clone()
    bumped[row, other] += 5.0
    assert mvtm_loss(bumped, targets) > loss + 1e-3
    # Raising the target's own logit lowers the loss.
    bumped = logits.clone()
    bumped[row, targets[row]] += 5.0
    assert mvtm_loss(bumped, targets) < loss - 1e-3


def test_mask_token_is_never_a_prediction_nor_a_target(tiny_maskgit):
    module = tiny_maskgit.eval()
    transformer = module.transformer
    assert module.mask_token_id == K
    # [MASK] has an input embedding (row K) and a bias column, but no output logit.
    assert transformer.tok_emb.weight.shape[0] == K + 1
    assert transformer.bias.shape == (N, K + 1)
    tokens, mask = random_batch(seed=2)
    inputs = tokens.masked_fill(mask, module.mask_token_id)
    with torch.no_grad():
        before = transformer.logits_at(inputs, mask)
        transformer.bias[:, K] += 100.0  # a [MASK] logit this large would win everywhere
        after = transformer.logits_at(inputs, mask)
    assert before.shape[-1] == K
    # The [MASK] bias column takes no part in the prediction.
    assert torch.equal(after, before)

    # Targets are the original tokens, never the [MASK] id put into the inputs ...
    tokens = sample_tokens(module, count=2)
    assert int(tokens.max()) < K
    _, mask = random_batch(seed=3)
    with torch.no_grad():
        loss, _ = module.mvtm_step(tokens, mask)
    assert torch.isfinite(loss)
    # ... and a [MASK] id as a target is refused, not trained on.
    tokens[mask] = module.mask_token_id
    with pytest.raises((IndexError, RuntimeError)):
        module.mvtm_step(tokens, mask)


def test_tiny_model_fits_a_small_real_batch(tiny_maskgit):
    module = tiny_maskgit
    tokens = sample_tokens(module, count=8)
    gen = torch.Generator().manual_seed(0)
    mask = module.training_token_mask(tokens, None, gen)
    targets = tokens[mask]
    # The best context-free guess (the targets' own code frequencies) scores their entropy.
    freq = torch.bincount(targets, minlength=K).double() / len(targets)
    unigram = -(freq[freq > 0] * freq[freq > 0].log()).sum().item()
    module.eval()  # dropout off: the loss curve is deterministic (gradients still flow)
    optimizer = torch.optim.AdamW(module.transformer.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, _ = module.mvtm_step(tokens, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = sum(losses[-3:]) / 3
    assert losses[0] == pytest.approx(math.log(K), abs=0.3)  # starts near uniform
    assert final < 0.6 * losses[0], losses[::5]
    assert final < unigram, (final, unigram)
    # Only the transformer trained: the frozen tokenizer got no gradients.
    assert all(p.grad is None for p in module.tokenizer.parameters())


# --- token masks ------------------------------------------------------------------------


def test_inpainting_masks_become_the_training_token_masks(tiny_tokenizer_path):
    module = make_module(tiny_tokenizer_path, inpaint_mask_fraction=1.0)
    masks = GeneratedMasks(kind="mixed", hole_range=(0.1, 0.5), seed=0)
    pixel = torch.stack([masks.mask(i, str(i), 64) for i in range(4)])
    tokens = torch.randint(0, K, (4, N))
    got = module.training_token_mask(tokens, pixel, torch.Generator().manual_seed(0))
    # A token is masked where any of its 4x4 pixels is missing.
    missing = (pixel[:, 0] < 0.5).reshape(4, 16, 4, 16, 4).any(dim=4).any(dim=2)
    assert torch.equal(got, missing.flatten(1))
    assert torch.equal(got, pixel_to_token_mask(pixel, 16).flatten(1))

    # A hole-free image gives no loss: it keeps a random (non-empty) mask instead.
    pixel[1] = 1.0
    got = module.training_token_mask(tokens, pixel, torch.Generator().manual_seed(0))
    assert got[1].any()
    assert torch.equal(got[0], missing[0].flatten())

    # Without the inpainting share, the pixel masks are ignored.
    plain = make_module(tiny_tokenizer_path, inpaint_mask_fraction=0.0)
    a = plain.training_token_mask(tokens, pixel, torch.Generator().manual_seed(5))
    b = plain.training_token_mask(tokens, None, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_inpainting_rows_see_the_image_with_its_hole_hidden(tiny_tokenizer_path):
    # Inference tokenizes the image with its hole hidden; training with inpainting masks
    # shows the transformer the same known tokens, and keeps the whole image's as targets.
    module = make_module(tiny_tokenizer_path, inpaint_mask_fraction=1.0).eval()
    files = sorted((SAMPLE / "train").iterdir())[:4]
    images = torch.stack([load_image(f, 64) for f in files])
    masks = GeneratedMasks(kind="mixed", hole_range=(0.2, 0.5), seed=0)
    pixel = torch.stack([masks.mask(i, str(i), 64) for i in range(4)])
    tokens = module.tokenizer.tokenize(images).flatten(1)
    token_mask = module.training_token_mask(tokens, pixel, torch.Generator().manual_seed(0))
    token_mask[3] = torch.rand(N, generator=torch.Generator().manual_seed(1)) < 0.5  # MVTM row
    batch = {"image": images, "mask": pixel}
    visible = module.visible_tokens(batch, tokens, token_mask)
    hidden = module.tokenizer.tokenize(hide_missing(images, pixel)).flatten(1)
    assert torch.equal(visible[:3], hidden[:3])
    assert torch.equal(visible[3], tokens[3])  # a random MVTM mask: the whole image's tokens
    known = ~token_mask[:3]
    assert not torch.equal(hidden[:3][known], tokens[:3][known])  # the hole reaches them
    # Cached tokens without images are used as they are.
    assert torch.equal(module.visible_tokens({"mask": pixel}, tokens, token_mask), tokens)

    captured = {}

    def spy(inputs, mask):
        captured["inputs"] = inputs
        return original(inputs, mask)

    original = module.transformer.logits_at
    module.transformer.logits_at = spy
    module.mvtm_step(tokens, token_mask, visible)
    expected = visible.masked_fill(token_mask, module.mask_token_id)
    assert torch.equal(captured["inputs"], expected)
    assert not torch.equal(expected, tokens.masked_fill(token_mask, module.mask_token_id))


# --- optimizer ----------------------------------------------------------------------------


def test_weight_decay_only_on_linear_weights(tiny_tokenizer_path):
    module = make_module(
        tiny_tokenizer_path, weight_decay=0.5, lr=0.1, warmup_steps=1, lr_decay_steps=100
    )
    config = module.configure_optimizers()
    optimizer = config["optimizer"]
    transformer = module.transformer
    linear_weights = {id(m.weight) for m in transformer.modules() if isinstance(m, nn.Linear)}
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == linear_weights
    excluded = {id(p) for p in no_decay["params"]}
    for name in ("tok_emb.weight", "pos_emb", "bias", "LN.weight", "LN.bias"):
        assert id(transformer.get_parameter(name)) in excluded, name
    for name, param in transformer.named_parameters():
        if "LayerNorm" in name or name.endswith(".bias"):
            assert id(param) in excluded, name
    # Every transformer parameter once, no tokenizer parameter.
    all_params = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(all_params) == sorted(id(p) for p in transformer.parameters())

    # With zero gradients AdamW only decays: linear weights shrink, the rest stay.
    before = {n: p.detach().clone() for n, p in transformer.named_parameters()}
    for param in transformer.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    for name, param in transformer.named_parameters():
        if id(param) in linear_weights:
            torch.testing.assert_close(param.detach(), before[name] * (1 - lr * 0.5))
        else:
            assert torch.equal(param.detach(), before[name]), name


# --- non-finite losses ----------------------------------------------------------------------


def test_non_finite_loss_stops_training_naming_the_step(tiny_tokenizer_path):
    module = make_module(tiny_tokenizer_path, warmup_steps=1, lr_decay_steps=10)
    tokens = torch.randint(0, K, (8, N))
    trainer = quiet_trainer(max_steps=4, callbacks=[PoisonAt(2)])
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 2"):
        trainer.fit(module, train_dataloaders=token_batches(tokens, 2))
    assert trainer.global_step == 2


def test_skip_nonfinite_skips_the_batch(tiny_tokenizer_path, caplog):
    module = make_module(tiny_tokenizer_path, skip_nonfinite=True)
    batch = {"tokens": torch.randint(0, K, (2, N))}
    assert isinstance(module.training_step(batch, 0), Tensor)
    with torch.no_grad():
        module.transformer.pos_emb.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="maskgit.modules.maskgit"):
        assert module.training_step(batch, 3) is None
    assert "batch 3" in caplog.text and "skipped" in caplog.text
    # The same batch without skip_nonfinite is an error.
    module.hparams.skip_nonfinite = False
    with pytest.raises(NonFiniteLossError, match="skip_nonfinite"):
        module.training_step(batch, 3)


# --- checkpoints ---------------------------------------------------------------------------


@pytest.fixture()
def trained_checkpoint(tmp_path) -> tuple[Path, Path, MaskGitModule]:
    """(Lightning checkpoint, its tokenizer file, the module) after 2 training steps."""
    tokenizer = save_tokenizer(tmp_path / "tok" / "tiny_tokenizer_ckpt_test.pt", seed=0)
    module = make_module(tokenizer, warmup_steps=1, lr_decay_steps=10)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(module, train_dataloaders=token_batches(torch.randint(0, K, (4, N)), 2))
    path = tmp_path / "run" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path, tokenizer, module


def test_checkpoint_references_the_tokenizer(trained_checkpoint):
    path, tokenizer, module = trained_checkpoint
    data = torch.load(path, map_location="cpu", weights_only=True)  # as resuming reads it
    assert data["global_step"] == 2
    assert not [k for k in data["state_dict"] if k.startswith("tokenizer.")]
    assert any(k.startswith("transformer.") for k in data["state_dict"])
    fingerprint = tokenizer_fingerprint(load_tokenizer(tokenizer))
    assert data["tokenizer"] == {"path": str(tokenizer), "fingerprint": fingerprint}

    loaded = load_maskgit(path)
    assert not loaded.training
    assert loaded.tokenizer_fingerprint == fingerprint
    for key, value in module.transformer.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[key], value), key
    tokens, mask = random_batch(seed=4)
    inputs = tokens.masked_fill(mask, K)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.transformer.logits_at(inputs, mask),
            module.eval().transformer.logits_at(inputs, mask),
        )


def test_checkpoint_without_its_tokenizer_names_it(trained_checkpoint, tmp_path):
    path, tokenizer, _ = trained_checkpoint
    shutil.move(tokenizer, tmp_path / "elsewhere.pt")
    with pytest.raises(TokenizerNotFoundError) as error:
        load_maskgit(path)
    assert str(tokenizer) in str(error.value)
    assert "tokenizer_ckpt=" in str(error.value)
    # Pointing at the moved file works.
    assert load_maskgit(path, tokenizer_ckpt=str(tmp_path / "elsewhere.pt")) is not None


def test_a_retrained_decoder_keeps_the_maskgit_over_its_tokenizer(trained_checkpoint):
    # Decoder-only fine-tuning (experiment=decoder_cats) changes no token: the MaskGIT trained
    # over the tokenizer loads with the new decoder and decodes through it.
    path, tokenizer, _ = trained_checkpoint
    before = load_maskgit(path)
    data = torch.load(tokenizer, map_location="cpu")
    for key, value in data["state_dict"].items():
        if key.startswith(("decoder.", "post_quant_conv.")):
            data["state_dict"][key] = value + 0.05
    torch.save(data, tokenizer)
    after = load_maskgit(path)
    assert after.tokenizer_fingerprint == before.tokenizer_fingerprint
    tokens = torch.randint(0, K, (2, 4, 4))
    assert not torch.allclose(
        after.tokenizer.detokenize(tokens), before.tokenizer.detokenize(tokens)
    )


def test_checkpoint_recording_the_whole_weights_fingerprint_still_loads(trained_checkpoint):
    # Checkpoints written before decoder fine-tuning existed hashed every tokenizer weight.
    path, tokenizer, module = trained_checkpoint
    data = torch.load(path, map_location="cpu", weights_only=True)
    data["tokenizer"]["fingerprint"] = tokenizer_fingerprint(load_tokenizer(tokenizer), whole=True)
    assert data["tokenizer"]["fingerprint"] != module.tokenizer_fingerprint
    torch.save(data, path)
    assert load_maskgit(path) is not None
    assert MaskGitModule.load_from_checkpoint(path, map_location="cpu") is not None


def test_checkpoint_with_another_tokenizer_is_refused(trained_checkpoint, tmp_path):
    path, tokenizer, _ = trained_checkpoint
    other = save_tokenizer(tmp_path / "other.pt", seed=1)
    assert issubclass(TokenizerMismatchError, CheckpointError)
    with pytest.raises(TokenizerMismatchError, match="fingerprint"):
        load_maskgit(path, tokenizer_ckpt=str(other))
    # The same for a different tokenizer found at the recorded path.
    shutil.copy(other, tokenizer)
    with pytest.raises(TokenizerMismatchError, match="fingerprint"):
        load_maskgit(path)
    # And for Lightning's own loading (resuming): one check, one error type.
    with pytest.raises(TokenizerMismatchError, match="fingerprint"):
        MaskGitModule.load_from_checkpoint(path, map_location="cpu")
