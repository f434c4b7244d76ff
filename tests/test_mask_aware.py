"""The tokenizer's mask-aware head: known pixels exact, tokens unchanged, trained end to end
on the sample (tiny configs), exported and used by decoding."""

from __future__ import annotations

import copy
import math

import torch
from conftest import FID_WEIGHTS, tiny_tokenizer_config, tiny_transformer_config
from test_train_entry import data_root, run_train  # noqa: F401

from maskgit.baselines import VQGANReconstruction
from maskgit.checkpoints import load_tokenizer
from maskgit.decoding import IterativeDecoder
from maskgit.evaluation import trajectory_settings
from maskgit.export import main as export
from maskgit.fingerprint import tokenizer_fingerprint
from maskgit.inpainting import inpaint
from maskgit.masking import pixel_to_token_mask
from maskgit.models.mask_aware import MaskAwareHead
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.models.vqgan import VQGAN
from maskgit.provenance import settings_digest, weights_digest
from maskgit.schedules import cosine

HEAD = {"channels": 8, "dilations": [1, 2]}


def photo_and_mask(batch: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator)
    mask = torch.ones(batch, 1, size, size)
    mask[:, :, 16:40, 8:50] = 0
    return images, mask


def test_the_head_keeps_every_known_pixel_and_starts_as_a_hard_paste():
    head = MaskAwareHead(**HEAD)
    images, mask = photo_and_mask()
    decoded = torch.rand_like(images)
    out = head(decoded, images, mask)
    known = mask.bool().expand_as(out)
    assert torch.equal(out[known], images[known])
    assert torch.allclose(out[~known], decoded[~known])  # zero-initialised: the decoded pixels
    with torch.no_grad():
        head.out.weight.normal_(0, 0.1)
    moved = head(decoded, images, mask)
    assert torch.equal(moved[known], images[known]) and not torch.allclose(
        moved[~known], decoded[~known]
    )
    # The missing pixels of the photo are never looked at.
    scrambled = torch.where(known, images, torch.rand_like(images))
    assert torch.equal(head(decoded, scrambled, mask), moved)


def test_a_head_leaves_the_tokens_and_the_fingerprint_as_they_were():
    torch.manual_seed(0)
    plain = VQGAN(**tiny_tokenizer_config()).eval()
    with_head = VQGAN(**tiny_tokenizer_config(), mask_aware_head=HEAD).eval()
    missing, unexpected = with_head.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("mask_aware.") for k in missing)
    images, _ = photo_and_mask()
    assert torch.equal(plain.tokenize(images), with_head.tokenize(images))
    assert tokenizer_fingerprint(plain) == tokenizer_fingerprint(with_head)


def test_a_new_head_reuses_the_decoding_trajectories():
    # The head composites pixels after the tokens are chosen: the trajectory cache key
    # ignores its weights (a new head reads the trajectories kept for the old one), not the
    # weights that decide tokens.
    torch.manual_seed(0)
    tokenizer = VQGAN(**tiny_tokenizer_config(), mask_aware_head=HEAD)
    other_head = copy.deepcopy(tokenizer)
    with torch.no_grad():
        other_head.mask_aware.out.weight.normal_()
    other_decoder = copy.deepcopy(tokenizer)
    with torch.no_grad():
        next(other_decoder.decoder.parameters()).add_(1.0)
    settings = {"method": "maskgit", "method_config": {}, "weights": "", "seed": 0}

    def key(module: torch.nn.Module) -> str:
        return settings_digest(trajectory_settings(settings, module))

    assert weights_digest(tokenizer) != weights_digest(other_head)  # run.json tells them apart
    assert key(tokenizer) == key(other_head)
    assert key(tokenizer) != key(other_decoder)


def test_train_export_and_decode_with_the_head(tiny_tokenizer_path, data_root, tmp_path):  # noqa: F811
    # The base as shipped tokenizers are: a compact fp16 file (export keeps its weights).
    base_file = tmp_path / "base.safetensors"
    export(["tokenizer", str(tiny_tokenizer_path), str(base_file)])
    overrides = [
        "experiment=mask_aware_cats_local", "tokenizer=tiny", f"tokenizer_ckpt={base_file}",
        f"data_root={data_root}", "data.num_workers=0", "data.batch_size=4", "data.val_limit=2",
        "model.head.channels=8", "model.head.dilations=[1,2]", "model.warmup_steps=1",
        "trainer.max_steps=3", "+trainer.limit_val_batches=1", "+trainer.num_sanity_val_steps=0",
        "trainer.val_check_interval=1.0", f"paths.log_dir={tmp_path}/logs", "run_name=test",
    ]  # fmt: skip
    run_train(overrides, tmp_path / "out")
    checkpoint = tmp_path / "logs" / "checkpoints" / "test" / "last.ckpt"
    exported = tmp_path / "tokenizer_mask_aware.safetensors"
    export(["tokenizer", str(checkpoint), str(exported)])
    tokenizer = load_tokenizer(exported)
    base = load_tokenizer(base_file)
    assert tokenizer.mask_aware is not None
    # Only the head trained: the tokens are those of the tokenizer it was trained over.
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(base)
    head_moved = any(p.abs().sum() > 0 for p in tokenizer.mask_aware.out.parameters())
    assert head_moved

    # Decoding uses the head: known pixels exact, the same tokens as without it.
    torch.manual_seed(0)
    transformer = BidirectionalTransformer(**tiny_transformer_config()).eval()
    images, mask = photo_and_mask()
    with_head = inpaint(
        tokenizer.float(),
        transformer,
        IterativeDecoder(cosine, total_iter=2, precision="32"),
        images,
        mask,
    )
    without = inpaint(tokenizer.float(), transformer,
                      IterativeDecoder(cosine, total_iter=2, precision="32", mask_aware_head=False), images, mask)  # fmt: skip
    known = mask.bool().expand_as(images)
    assert torch.equal(with_head.tokens, without.tokens)
    assert torch.equal(with_head.images[known], images[known])
    assert not torch.allclose(with_head.images[~known], without.images[~known])

    # The tokenizer's ceiling through the head: the photo's own tokens in the hole, the known
    # ones as inference makes them; every known pixel exact, the hole refined by the head.
    ceiling = VQGANReconstruction(tokenizer_ckpt=str(exported), mask_aware_head=True).float()
    plain = VQGANReconstruction(tokenizer_ckpt=str(exported), mask_aware_head=False).float()
    keys = torch.arange(len(images))
    through_head = ceiling(images, mask, keys, seed=0, return_steps=False)
    pasted = plain(images, mask, keys, seed=0, return_steps=False)
    hole = pixel_to_token_mask(mask, through_head.tokens.shape[-1])
    assert torch.equal(through_head.tokens[hole], pasted.tokens[hole])
    assert torch.equal(through_head.images[known], images[known])
    assert not torch.allclose(through_head.images[~known], pasted.images[~known])


def test_adversarial_head_trains_and_keeps_pixels_and_tokens(
    tiny_tokenizer_path,
    data_root,  # noqa: F811
    tmp_path,
):
    # The head with a patch discriminator (LeCam, feature matching, adaptive weight), chosen
    # by the FID of its fills when the Inception weights are there, by val/l1_hole without.
    base_file = tmp_path / "base.safetensors"
    export(["tokenizer", str(tiny_tokenizer_path), str(base_file)])
    fid = FID_WEIGHTS.is_file()
    overrides = [
        "experiment=mask_aware_cats_local_gan", "tokenizer=tiny", f"tokenizer_ckpt={base_file}",
        f"data_root={data_root}", "data.num_workers=0", "data.batch_size=4", "data.val_limit=4",
        "model.head.channels=8", "model.head.dilations=[1,2]", "model.warmup_steps=2",
        "model.lr=1e-2", "model.lr_decay_steps=3", "trainer.max_steps=3",
        "+trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0", "trainer.val_check_interval=1.0",
        "trainer.log_every_n_steps=1", f"paths.log_dir={tmp_path}/logs", "run_name=test",
        f"metrics.fid.enabled={str(fid).lower()}", f"metrics.fid.weights_path={FID_WEIGHTS}",
        "metrics.fid.required=true",
    ]  # fmt: skip
    out = tmp_path / "out"
    run_train(overrides, out)
    header, *rows = (out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    names = header.split(",")
    for name in ("train/g_adv", "train/d_loss", "train/lecam", "train/feature_matching",
                 "train/gan_weight", "train/l1_hole") + (("val/fid",) if fid else ()):  # fmt: skip
        values = [
            float(r.split(",")[names.index(name)]) for r in rows if r.split(",")[names.index(name)]
        ]
        assert values and all(math.isfinite(v) for v in values), name
    learning_rates = [float(r.split(",")[names.index("lr-AdamW")]) for r in rows
                      if r.split(",")[names.index("lr-AdamW")]]  # fmt: skip
    assert len(set(learning_rates)) > 1  # the head's schedule is stepped by hand

    checkpoint = tmp_path / "logs" / "checkpoints" / "test" / "last.ckpt"
    exported = tmp_path / "tokenizer_gan_head.safetensors"
    export(["tokenizer", str(checkpoint), str(exported)])
    tokenizer, base = load_tokenizer(exported).float(), load_tokenizer(base_file)
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(base)
    assert not any(k.startswith("discriminator") for k in tokenizer.state_dict())
    images, mask = photo_and_mask()
    decoded = tokenizer.detokenize(tokenizer.tokenize(images))
    out_images = tokenizer.mask_aware(decoded, images, mask)
    known = mask.bool().expand_as(images)
    assert torch.equal(out_images[known], images[known])
    assert not torch.allclose(out_images[~known], decoded[~known])  # the head moved
