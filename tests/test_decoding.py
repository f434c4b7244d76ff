"""Iterative decoding: known tokens, schedule counts, sweet spot, batching, seeds, inpaint()."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SAMPLE, tiny_transformer_config
from torch import Tensor

import maskgit.precision
from maskgit.data.images import load_image, load_mask
from maskgit.decoding import IterativeDecoder
from maskgit.inpainting import feathered_weight, hide_missing, paste
from maskgit.masking import pixel_to_token_mask
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.schedules import cosine, linear

K = 64  # codes of the tiny transformer; [MASK] = K
N = 256  # 16x16 tokens


@pytest.fixture(scope="module")
def transformer() -> BidirectionalTransformer:
    torch.manual_seed(0)
    return BidirectionalTransformer(**tiny_transformer_config(K)).eval()


def random_tokens(batch: int, seed: int = 0) -> Tensor:
    return torch.randint(0, K, (batch, N), generator=torch.Generator().manual_seed(seed))


def mask_with_counts(counts: list[int], seed: int = 1) -> Tensor:
    """[B,N] token masks with exactly counts[b] missing tokens at random positions."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(counts), N, dtype=torch.bool)
    for row, count in enumerate(counts):
        mask[row, torch.randperm(N, generator=gen)[:count]] = True
    return mask


def decode(transformer, tokens, mask, *, seed=0, keys=None, steps=False, **settings):
    decoder = IterativeDecoder(**{"schedule": cosine, "total_iter": 8, **settings})
    return decoder(
        transformer.logits_at, tokens, mask, transformer.mask_token_id, keys, seed, steps
    )


def test_known_tokens_never_change_and_revealed_tokens_stay(transformer):
    tokens = random_tokens(3)
    mask = mask_with_counts([40, 128, 250])
    out, steps = decode(transformer, tokens, mask, steps=True)
    assert torch.equal(out[~mask], tokens[~mask])
    assert len(steps.masks) == 9 and len(steps.tokens) == 8
    assert torch.equal(steps.masks[0], mask)
    for before, after, predicted in zip(steps.masks, steps.masks[1:], steps.tokens):
        assert torch.equal(predicted[~mask], tokens[~mask])
        assert not (after & ~before).any(), "a revealed token was masked again"
        revealed = before & ~after
        # A token revealed at a step keeps that step's prediction to the end.
        assert torch.equal(out[revealed], predicted[revealed])
    assert not steps.masks[-1].any()


def test_masked_count_follows_cosine_schedule(transformer):
    total = 8
    mask = mask_with_counts([100])
    _, steps = decode(transformer, random_tokens(1), mask, steps=True, total_iter=total)
    counts = [int(m.sum()) for m in steps.masks]
    expected = [math.floor(math.cos(math.pi / 2 * t / total) * 100) for t in range(total)] + [0]
    assert expected[:3] == [100, 98, 92]
    assert counts == expected


def test_every_step_reveals_at_least_one_token(transformer):
    # floor(gamma * 3) would keep 2 masked for several steps; each step must still reveal one.
    _, steps = decode(transformer, random_tokens(1), mask_with_counts([3]), steps=True)
    assert [int(m.sum()) for m in steps.masks] == [3, 2, 1, 0]


@pytest.mark.parametrize("sweet_spot", [1, 3, 5])
def test_sweet_spot_stops_after_that_many_steps(transformer, sweet_spot):
    mask = mask_with_counts([100, 30])
    out, steps = decode(transformer, random_tokens(2), mask, steps=True, sweet_spot=sweet_spot)
    assert len(steps.masks) == sweet_spot + 1
    assert len(steps.tokens) == sweet_spot
    assert not steps.masks[-1].any()
    # Before the last step the counts are those of the full T=8 schedule.
    for t in range(1, sweet_spot):
        assert int(steps.masks[t][0].sum()) == math.floor(math.cos(math.pi / 2 * t / 8) * 100)
    assert torch.equal(out, steps.tokens[-1])


def test_one_step_is_one_shot(transformer):
    tokens = random_tokens(2)
    mask = mask_with_counts([200, 17])
    out, steps = decode(transformer, tokens, mask, steps=True, total_iter=1)
    assert len(steps.masks) == 2 and len(steps.tokens) == 1
    assert not steps.masks[1].any()
    assert torch.equal(out, steps.tokens[0])
    assert (out < K).all()


@pytest.mark.parametrize("sample", [True, False])
def test_batch_decodes_like_one_by_one(transformer, sample):
    counts = [5, 60, 180, 256]
    tokens = random_tokens(len(counts), seed=3)
    mask = mask_with_counts(counts, seed=4)
    keys = torch.tensor([11, 2, 37, 5])
    batched, _ = decode(transformer, tokens, mask, keys=keys, seed=7, sample=sample)
    for row in range(len(counts)):
        alone, _ = decode(
            transformer, tokens[row : row + 1], mask[row : row + 1],
            keys=keys[row : row + 1], seed=7, sample=sample,
        )  # fmt: skip
        assert torch.equal(batched[row], alone[0]), f"row {row} differs"


def test_key_not_batch_position_drives_randomness(transformer):
    tokens = random_tokens(1).expand(2, N).clone()
    mask = mask_with_counts([120]).expand(2, N).clone()
    same, _ = decode(transformer, tokens, mask, keys=torch.tensor([4, 4]))
    assert torch.equal(same[0], same[1])
    other, _ = decode(transformer, tokens, mask, keys=torch.tensor([4, 9]))
    assert not torch.equal(other[0], other[1])


def test_seed_reproducible_and_changes_samples(transformer):
    tokens = random_tokens(2)
    mask = mask_with_counts([150, 150])
    first, _ = decode(transformer, tokens, mask, seed=1)
    again, _ = decode(transformer, tokens, mask, seed=1)
    other, _ = decode(transformer, tokens, mask, seed=2)
    assert torch.equal(first, again)
    # 300 sampled tokens over 64 near-uniform codes: equal outputs would be a broken seed.
    assert (first[mask] != other[mask]).float().mean() > 0.5


def test_argmax_without_noise_ignores_the_seed(transformer):
    tokens = random_tokens(1)
    mask = mask_with_counts([90])
    settings = {"sample": False, "choice_temperature": 0.0}
    a, _ = decode(transformer, tokens, mask, seed=1, **settings)
    b, _ = decode(transformer, tokens, mask, seed=2, **settings)
    assert torch.equal(a, b)


def test_lab_noise_argmax_runs(transformer):
    tokens = random_tokens(2)
    mask = mask_with_counts([100, 9])
    out, steps = decode(
        transformer, tokens, mask, steps=True, noise="lab", sample=False, schedule=linear
    )
    assert torch.equal(out[~mask], tokens[~mask])
    assert ((out >= 0) & (out < K)).all()
    expected = [math.floor((1 - t / 8) * 100) for t in range(8)] + [0]
    assert [int(m[0].sum()) for m in steps.masks] == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"total_iter": 0}, "total_iter"),
        ({"total_iter": 4, "sweet_spot": 5}, "sweet_spot"),
        ({"sweet_spot": 0}, "sweet_spot"),
        ({"noise": "loud"}, "noise"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "decoding.top_k"),
        ({"paste_feather": -1}, "decoding.paste_feather"),
        ({"top_k": True}, "decoding.top_k"),
    ],
)
def test_invalid_settings_raise(settings, message):
    with pytest.raises(ValueError, match=message):
        IterativeDecoder(schedule=cosine, **settings)


def test_image_without_missing_tokens_passes_through(transformer):
    tokens = random_tokens(2)
    mask = mask_with_counts([0, 70])
    out, steps = decode(transformer, tokens, mask, steps=True)
    assert torch.equal(out[0], tokens[0])
    assert all(not m[0].any() for m in steps.masks)
    nothing, steps = decode(transformer, tokens, torch.zeros_like(mask), steps=True)
    assert torch.equal(nothing, tokens)
    assert len(steps.masks) == 1 and steps.tokens == []


def test_mask_id_never_in_output(transformer):
    tokens = random_tokens(3)
    mask = mask_with_counts([256, 128, 1])
    # The input holds [MASK] ids under the mask: they must all be replaced.
    tokens = tokens.masked_fill(mask, transformer.mask_token_id)
    for sweet_spot in (None, 2):
        out, _ = decode(transformer, tokens, mask, sweet_spot=sweet_spot)
        assert (out != transformer.mask_token_id).all()
        assert (out < K).all()


def sample_batch(count: int = 3) -> tuple[Tensor, Tensor]:
    files = sorted((SAMPLE / "val").iterdir())[:count]
    images = torch.stack([load_image(f, 64) for f in files])
    masks = torch.stack([load_mask(SAMPLE / "val_masks" / f"{f.stem}.png", 64) for f in files])
    return images, masks


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_inpaint_keeps_known_pixels_exactly(tiny_maskgit, precision):
    model = tiny_maskgit.eval()
    model.decoder.precision = precision
    images, masks = sample_batch()
    assert (masks == 0).any() and (masks == 1).any()
    result = model.inpaint(images, masks, keys=torch.arange(3), return_steps=True)
    known = masks.expand_as(images) == 1
    assert torch.equal(result.images[known], images[known])
    assert not torch.equal(result.images, images)  # the holes were filled with something
    token_mask = pixel_to_token_mask(masks, 16)
    assert torch.equal(result.token_mask, token_mask)
    # Known tokens are the tokenizer's tokens of the input with its holes hidden.
    reference = model.tokenizer.tokenize(hide_missing(images, masks))
    assert torch.equal(result.tokens[~token_mask], reference[~token_mask])
    steps = model.decoder.num_steps
    assert len(result.step_masks) == steps + 1 and len(result.step_images) == steps
    for step_image in result.step_images:
        assert torch.equal(step_image[known], images[known])


def test_inpaint_never_looks_at_the_missing_pixels(tiny_maskgit):
    model = tiny_maskgit.eval()
    images, masks = sample_batch()
    noisy = images.clone()
    hole = masks.expand_as(images) == 0
    noisy[hole] = torch.rand(int(hole.sum()))
    first = model.inpaint(images, masks, keys=torch.arange(3))
    second = model.inpaint(noisy, masks, keys=torch.arange(3))
    assert torch.equal(first.tokens, second.tokens)
    assert torch.equal(first.images, second.images)


@pytest.mark.parametrize(
    ("make_mask", "message"),
    [
        (lambda m: m[:, 0], r"expected shape \[3, 1, 64, 64\]"),
        (lambda m: m * 255, r"values must lie in \[0, 1\].*255"),
    ],
)
def test_inpaint_names_a_bad_mask(tiny_maskgit, make_mask, message):
    images, masks = sample_batch()
    with pytest.raises(ValueError, match=message):
        tiny_maskgit.eval().inpaint(images, make_mask(masks))


def test_hide_missing_fills_holes_with_the_known_mean_colour():
    images = torch.rand(2, 3, 8, 8)
    masks = torch.ones(2, 1, 8, 8)
    masks[:, :, 2:5, 3:7] = 0
    hidden = hide_missing(images, masks)
    known = masks.expand_as(images) == 1
    assert torch.equal(hidden[known], images[known])
    mean = images[0, 1][masks[0, 0] == 1].mean()
    torch.testing.assert_close(hidden[0, 1, 3, 4], mean)
    # Partly known pixels are hidden too, and nothing of a hole (not even NaN) gets through.
    masks[:, :, 0, 0] = 0.5
    images[:, :, 2:5, 3:7] = float("nan")
    hidden = hide_missing(images, masks)
    assert torch.isfinite(hidden).all()
    assert torch.equal(hidden[:, :, 0, 0], hidden[:, :, 3, 4])


def test_inpaint_without_paste_is_the_decoded_image(tiny_maskgit):
    model = tiny_maskgit.eval()
    images, masks = sample_batch(2)
    decoder = IterativeDecoder(cosine, total_iter=2, paste=False, precision="32")
    result = model.inpaint(images, masks, decoder=decoder)
    assert torch.allclose(result.images, model.tokenizer.detokenize(result.tokens))
    pasted = model.inpaint(images, masks, decoder=IterativeDecoder(cosine, total_iter=2))
    assert torch.equal(pasted.tokens, result.tokens)


def test_inpaint_without_decoder_raises(tiny_maskgit):
    tiny_maskgit.decoder = None
    images, masks = sample_batch(1)
    with pytest.raises(ValueError, match="decoder"):
        tiny_maskgit.inpaint(images, masks)


# --- execution options: bf16 autocast and torch.compile ---------------------------------------


def test_bf16_precision_runs_the_model_in_bf16_and_keeps_known_tokens(transformer, monkeypatch):
    # "auto" is fp32 on a CPU without bf16 units (stubbed: this one may have them).
    monkeypatch.setattr(maskgit.precision, "cpu_has_bf16_units", lambda: False)
    seen: list[torch.dtype] = []
    # A matmul's output: autocast keeps layer norms (and so the residual stream) in fp32.
    qkv = transformer.blocks[0].Attention.qkv
    hook = qkv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        tokens, mask = random_tokens(2), mask_with_counts([60, 200])
        out, _ = decode(transformer, tokens, mask, precision="bf16")
        assert set(seen) == {torch.bfloat16}
        seen.clear()
        reference, _ = decode(transformer, tokens, mask, precision="auto")
        assert set(seen) == {torch.float32}
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16-mixed Trainer
            forced, _ = decode(transformer, tokens, mask, precision="32")
        assert set(seen) == {torch.float32}
        assert torch.equal(forced, reference)
    finally:
        hook.remove()
    assert torch.equal(out[~mask], tokens[~mask])
    assert not (out[mask] == transformer.mask_token_id).any()
    assert (out[mask] == reference[mask]).float().mean() > 0.5  # same model, rounded


def test_precision_must_be_known():
    with pytest.raises(ValueError, match="precision must be"):
        IterativeDecoder(cosine, precision="fp8")


@pytest.mark.slow
def test_compiled_blocks_give_the_eager_logits():
    torch.manual_seed(0)
    eager = BidirectionalTransformer(**tiny_transformer_config(K)).eval()
    compiled = BidirectionalTransformer(**tiny_transformer_config(K)).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks()
    assert compiled.blocks._compiled_call_impl is not None  # really compiled, not eager
    tokens, mask = random_tokens(2), mask_with_counts([60, 200])
    with torch.inference_mode():
        torch.testing.assert_close(
            compiled.logits_at(tokens, mask), eager.logits_at(tokens, mask), rtol=1e-4, atol=1e-4
        )
    out, _ = decode(compiled, tokens, mask, compile=True)
    assert torch.equal(out[~mask], tokens[~mask])
    assert state_keys_unchanged(compiled, eager)


def state_keys_unchanged(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return list(a.state_dict()) == list(b.state_dict())


def test_top_k_one_samples_the_argmax(transformer):
    tokens = random_tokens(2)
    mask = mask_with_counts([120, 30])
    # fp32: bf16 logits tie often, and tied tokens all stay candidates.
    argmax, _ = decode(transformer, tokens, mask, sample=False, precision="32")
    top1, _ = decode(transformer, tokens, mask, sample=True, top_k=1, precision="32")
    sampled, _ = decode(transformer, tokens, mask, sample=True, precision="32")
    assert torch.equal(top1, argmax)
    assert not torch.equal(sampled, argmax)  # so top_k=1 is what made them equal


def test_top_k_samples_only_among_the_k_most_likely(transformer):
    tokens = random_tokens(1)
    mask = mask_with_counts([256])  # one step over an all-masked grid: a known input
    out, _ = decode(
        transformer, tokens, mask, total_iter=1, top_k=3, choice_temperature=0.0, precision="32"
    )
    inputs = tokens.masked_fill(mask, transformer.mask_token_id)
    with torch.no_grad():
        allowed = transformer.logits_at(inputs, mask).topk(3, dim=-1).indices
    assert (allowed == out[mask][:, None]).any(-1).all()


def test_feathered_paste_ramps_over_the_known_pixels_next_to_the_hole():
    mask = torch.ones(1, 1, 16, 16)
    mask[..., 6:10, 6:10] = 0
    weight = feathered_weight(mask, 2)
    assert torch.equal(weight[..., 6:10, 6:10], torch.ones(1, 1, 4, 4))
    assert weight[0, 0, 5, 8] == pytest.approx(2 / 3)  # 1 pixel from the hole
    assert weight[0, 0, 4, 4] == pytest.approx(1 / 3)  # 2 pixels (Chebyshev)
    assert weight[0, 0, 3, 8] == 0 and weight[0, 0, 0, 0] == 0
    known, generated = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    out = paste(known, generated, mask, feather=2)
    far = (weight == 0).expand_as(known)
    hole = (mask == 0).expand_as(known)
    assert torch.equal(out[far], known[far])
    assert torch.equal(out[hole], generated[hole])
    assert torch.equal(paste(known, generated, mask), paste(known, generated, mask, feather=0))
