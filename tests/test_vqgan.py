"""VQGAN tokenizer: shapes, token order, straight-through gradients, training, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE, tiny_tokenizer_config
from torch import Tensor
from torch.utils.data import DataLoader

from maskgit.checkpoints import (
    LAB_PIXEL_MEAN,
    LAB_PIXEL_STD,
    MASKGIT_FORMAT,
    CheckpointError,
    load_tokenizer,
    save_atomic,
)
from maskgit.data.datasets import ImageFolderDataset
from maskgit.models.discriminator import PatchDiscriminator
from maskgit.models.vqgan import VQGAN
from maskgit.modules.maskgit import MaskGitModule
from maskgit.modules.tokenizer import VQGANModule


def tiny_vqgan(seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(**tiny_tokenizer_config())


def lab_state_dict(shared: Path) -> dict[str, Tensor]:
    """Random tensors with the keys, shapes and order of the lab's VQGAN state_dict."""
    layout = json.loads((shared / "reference" / "vqgan_state_dict.json").read_text())
    gen = torch.Generator().manual_seed(0)
    return {e["key"]: torch.randn(e["shape"], generator=gen) for e in layout}


def test_encode_decode_shapes_and_ranges() -> None:
    vqgan = tiny_vqgan().eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z_q, indices, loss = vqgan.encode(images)
        decoded = vqgan.decode_indices(indices)
    assert z_q.shape == (2, 8, 16, 16)
    assert indices.shape == (2, 16, 16)
    assert indices.dtype == torch.long
    assert int(indices.min()) >= 0 and int(indices.max()) < vqgan.num_codebook_vectors
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert decoded.shape == (2, 3, 64, 64)
    # z_q holds exactly the chosen (normalised) codes, so decoding indices decodes z_q.
    codes = vqgan.codebook.codes()
    torch.testing.assert_close(z_q, codes[indices].permute(0, 3, 1, 2), atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(decoded, vqgan.decode(z_q), atol=1e-5, rtol=1e-5)


def test_indices_follow_lab_flat_order() -> None:
    vqgan = tiny_vqgan().eval()
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = vqgan.encode_latents(images)
        _, flat, _ = vqgan.codebook(latents)
        _, grid, _ = vqgan.encode(images)
        # Nearest code by cosine similarity, computed per position without any reshaping.
        sims = torch.einsum("bchw,kc->bhwk", F.normalize(latents, dim=1), vqgan.codebook.codes())
    nearest = sims.argmax(-1)
    assert flat.shape == (3 * 256,)
    for b, h, w in [(0, 0, 0), (0, 3, 11), (1, 0, 15), (2, 15, 0), (2, 15, 15), (1, 7, 2)]:
        lab_index = b * 256 + h * 16 + w
        assert grid[b, h, w] == flat[lab_index] == nearest[b, h, w]
    assert torch.equal(grid.flatten(), flat)
    assert torch.equal(grid, nearest)


def test_straight_through_gradient_reaches_encoder() -> None:
    vqgan = tiny_vqgan()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    recon, _, _ = vqgan(images)
    F.mse_loss(recon, images).backward()  # no quantization loss: only the decoder path
    grad = vqgan.encoder.get_submodule("model.0").weight.grad
    assert grad is not None
    assert grad.abs().sum() > 0
    assert vqgan.codebook.embedding.weight.grad is None


def _reconstruction_loss(module: VQGANModule, images: Tensor) -> float:
    module.eval()
    with torch.no_grad():
        recon, _, _ = module(images)
    module.train()
    return F.l1_loss(recon, images).item() + F.mse_loss(recon, images).item()


def test_training_steps_lower_reconstruction_loss() -> None:
    torch.manual_seed(0)
    photos = ImageFolderDataset(SAMPLE / "train", image_size=64)
    images = torch.stack([photos[i]["image"] for i in range(16)])
    module = VQGANModule(vqgan=tiny_tokenizer_config(), lr=3e-3, betas=(0.9, 0.99))
    before = _reconstruction_loss(module, images)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=15, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    # Decoded once up front: the steps, not JPEG decoding, should take the time.
    batches = DataLoader([{"image": image} for image in images], batch_size=8, shuffle=True)
    trainer.fit(module, batches)
    after = _reconstruction_loss(module, images)
    assert trainer.global_step == 15
    assert after < 0.75 * before, (before, after)


def test_lab_state_dict_loads_strictly(tmp_path: Path, shared_dir: Path) -> None:
    state = lab_state_dict(shared_dir)
    path = tmp_path / "lab_vqgan.pt"
    torch.save(state, path)
    vqgan = load_tokenizer(path)
    assert sum(p.numel() for p in vqgan.parameters()) == 70_775_299
    assert len(vqgan.state_dict()) == len(state) == 315
    for key in ("encoder.model.0.weight", "codebook.embedding.weight", "post_quant_conv.bias"):
        assert torch.equal(vqgan.state_dict()[key], state[key])
    # A raw lab file carries no normalisation: the lab's training transform is assumed.
    info = json.loads((shared_dir / "reference" / "lab_model_info.json").read_text())
    assert list(LAB_PIXEL_MEAN) == info["normalization"]["train"]["mean"]
    assert list(LAB_PIXEL_STD) == info["normalization"]["train"]["std"]
    torch.testing.assert_close(vqgan.pixel_mean.flatten(), torch.tensor(LAB_PIXEL_MEAN))


def test_lab_state_dict_mismatch_names_every_key(tmp_path: Path, shared_dir: Path) -> None:
    state = lab_state_dict(shared_dir)
    dropped, reshaped = "decoder.model.3.block.2.weight", "encoder.model.5.block.0.gn.bias"
    assert dropped in state and reshaped in state
    del state[dropped]
    state["encoder.model.99.weight"] = torch.zeros(3)
    state[reshaped] = state[reshaped][:-1]
    path = tmp_path / "lab_vqgan_bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_tokenizer(path)
    message = str(info.value)
    assert str(path) in message
    for key in (dropped, "encoder.model.99.weight", reshaped):
        assert key in message


def test_truncated_checkpoint_names_path(tmp_path: Path, tiny_tokenizer_path: Path) -> None:
    data = tiny_tokenizer_path.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


def test_missing_checkpoint_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nothing_here.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


def test_maskgit_checkpoint_is_not_a_tokenizer(tmp_path: Path, tiny_maskgit: MaskGitModule) -> None:
    transformer_state = {
        f"transformer.{k}": v for k, v in tiny_maskgit.transformer.state_dict().items()
    }
    lightning_style = {
        "state_dict": transformer_state,
        "hyper_parameters": dict(tiny_maskgit.hparams),
    }
    compact = {"format": MASKGIT_FORMAT, "hyper_parameters": {}, "state_dict": transformer_state}
    for name, checkpoint in (("lightning.ckpt", lightning_style), ("compact.pt", compact)):
        path = tmp_path / name
        save_atomic(checkpoint, path)
        with pytest.raises(CheckpointError, match="MaskGIT") as info:
            load_tokenizer(path)
        assert str(path) in str(info.value)
    # The raw lab transformer state_dict is no tokenizer either.
    raw = tmp_path / "raw_transformer.pt"
    torch.save(tiny_maskgit.transformer.state_dict(), raw)
    with pytest.raises(CheckpointError, match="not a tokenizer checkpoint"):
        load_tokenizer(raw)


# --- leak-free tokenizing (encoder=local) ---------------------------------------------


def tiny_local_vqgan(seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    config = {**tiny_tokenizer_config(), "encoder": "local", "enc_token_res_blocks": 1}
    return VQGAN(**config).eval()


def far_from_hole(pixel_mask: Tensor, ring: int = 1) -> Tensor:
    """[B,16,16] True where no pixel within ``ring`` tokens of the token is missing."""
    token_has_hole = F.max_pool2d(1 - pixel_mask, 4).bool().float()
    near = F.max_pool2d(token_has_hole, 2 * ring + 1, stride=1, padding=ring)
    return near[:, 0] == 0


def tokens_with_two_fills(vqgan: VQGAN) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    mask = torch.ones(2, 1, 64, 64)
    mask[0, :, 20:41, 8:30] = 0
    mask[1, :, 40:64, 30:64] = 0
    other = torch.where(mask.bool(), images, torch.rand(images.shape, generator=gen) * 2 - 1)
    with torch.no_grad():
        a, b = vqgan.encode(images)[1], vqgan.encode(other)[1]
    return a, b, far_from_hole(mask)


def test_local_encoder_tokens_far_from_the_hole_ignore_the_hidden_pixels():
    vqgan = tiny_local_vqgan()
    assert vqgan.encoder.margin <= 4  # a token sees at most one token-width beyond itself
    a, b, far = tokens_with_two_fills(vqgan)
    assert far.sum() > 100 and (~far).sum() > 20
    assert torch.equal(a[far], b[far])
    assert not torch.equal(a[~far], b[~far])  # the hole's own tokens do see the fill


def test_the_global_encoder_leaks_the_hidden_pixels_into_far_tokens():
    torch.manual_seed(0)
    vqgan = VQGAN(**tiny_tokenizer_config()).eval()  # non-local block + GroupNorm
    a, b, far = tokens_with_two_fills(vqgan)
    assert not torch.equal(a[far], b[far])


def test_shipped_local_tokenizer_config_is_leak_free():
    import yaml
    from conftest import CONF

    config = yaml.safe_load((CONF / "tokenizer" / "local.yaml").read_text())
    encoder = VQGAN(**config).encoder
    assert encoder.margin <= 4
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in encoder.modules())


def test_local_encoder_needs_one_channel_entry_per_resolution():
    config = {**tiny_tokenizer_config(), "encoder": "local", "enc_channels": [8, 16, 16, 16]}
    with pytest.raises(ValueError, match="one enc_channels entry per resolution"):
        VQGAN(**config)
    with pytest.raises(ValueError, match=r"tokenizer\.encoder must be"):
        VQGAN(**{**tiny_tokenizer_config(), "encoder": "vit"})


def test_known_token_agreement_metric_separates_the_ring_from_far_tokens():
    from maskgit.inpainting import hide_missing
    from maskgit.metrics.tokens import KnownTokenAgreement, token_regions

    mask = torch.ones(1, 1, 64, 64)
    mask[:, :, 24:40, 24:40] = 0  # tokens 6..9 missing
    ring, far = token_regions(mask, 16)
    assert int(ring.sum()) == 6 * 6 - 4 * 4 and int(far.sum()) == 256 - 36
    images = torch.rand(2, 3, 64, 64)
    masks = mask.expand(2, -1, -1, -1)
    for vqgan, far_expected in ((tiny_local_vqgan(), 1.0), (tiny_vqgan(), None)):
        metric = KnownTokenAgreement()
        full = vqgan.tokenize(images)
        metric.update(vqgan.tokenize(hide_missing(images, masks)), full, masks)
        scores = metric.compute()
        if far_expected is not None:
            assert float(scores["far"]) == far_expected
        else:  # the global encoder changes far tokens too
            assert float(scores["far"]) < 1.0


# --- the patch discriminator of the adversarial phase -----------------------------------------


def test_spectral_discriminator_has_no_batch_norm_and_unit_spectral_norm() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=16, n_layers=2, norm="spectral").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in disc.modules())
    x = torch.rand(4, 3, 32, 32)
    for _ in range(20):  # power iterations run in training-mode forwards
        disc(x)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    plain = PatchDiscriminator(channels=16, n_layers=2, norm="none")
    sigmas = [float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2))
              for m in plain.model if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    assert any(abs(sigma - 1.0) > 0.05 for sigma in sigmas)  # what spectral norm changed


def test_discriminator_features_end_in_its_logits() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=8, n_layers=2, norm="batch").eval()
    x = torch.rand(2, 3, 32, 32)
    logits, features = disc.features(x)
    assert torch.equal(logits, disc(x))
    assert len(features) == 3  # one per LeakyReLU: the stem and each of the 2 layers
    assert [f.shape[1] for f in features] == [8, 16, 32]


def test_discriminator_norm_and_regulariser_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"model\.disc_norm"):
        PatchDiscriminator(norm="layer")
    with pytest.raises(ValueError, match=r"model\.lecam_decay"):
        VQGANModule(vqgan=tiny_tokenizer_config(), gan_weight=0.1, lecam_decay=1.0)
    with pytest.raises(ValueError, match=r"model\.lecam_weight=0\.1 needs the GAN"):
        VQGANModule(vqgan=tiny_tokenizer_config(), lecam_weight=0.1)
