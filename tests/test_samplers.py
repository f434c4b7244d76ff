"""Samplers: known tokens untouched by every one (enforced by the loop), same seed same output,
the default's outputs those of the paper's rule, Halton's order, configs and per-step images."""

from __future__ import annotations

import hydra
import pytest
import torch
from conftest import compose_config, tiny_transformer_config
from torch import Tensor

from maskgit.decoding import IterativeDecoder, gumbel, hash_uniform
from maskgit.models.transformer import BidirectionalTransformer
from maskgit.samplers import (
    ConfidenceSampler,
    HaltonSampler,
    RandomSampler,
    Sampler,
    halton_order,
    make_sampler,
)
from maskgit.schedules import cosine

K, N = 64, 256
NAMES = ("confidence", "lab", "margin", "entropy", "random", "halton")


@pytest.fixture(scope="module")
def transformer() -> BidirectionalTransformer:
    torch.manual_seed(0)
    return BidirectionalTransformer(**tiny_transformer_config(K)).eval()


def decode(transformer, tokens, mask, sampler=None, seed=0, steps=False, **settings):
    decoder = IterativeDecoder(
        **{
            "schedule": cosine,
            "total_iter": 6,
            "sampler": sampler,
            "precision": "32",
            "top_k": None,
            **settings,
        }
    )
    return decoder(
        transformer.logits_at, tokens, mask, transformer.mask_token_id, None, seed, steps
    )


def random_case(seed: int, batch: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, K, (batch, N), generator=generator)
    share = torch.rand(batch, 1, generator=generator) * 0.9 + 0.05
    mask = torch.rand(batch, N, generator=generator) < share
    return tokens, mask


class Adversary(Sampler):
    """Scores the known and committed positions lowest: it asks to re-mask them."""

    def scores(self, state):
        return torch.where(state.unknown, 1.0, -1e9).expand_as(state.unknown).clone()


@pytest.mark.parametrize("name", [*NAMES, "adversary"])
def test_no_sampler_ever_changes_a_known_token(transformer, name):
    sampler = Adversary() if name == "adversary" else make_sampler(name)
    for case in range(4):  # random masks of 5-95 % of the tokens
        tokens, mask = random_case(case)
        out, steps = decode(transformer, tokens, mask, sampler, seed=case, steps=True)
        assert torch.equal(out[~mask], tokens[~mask]), (name, case)
        assert bool((out < K).all())  # every token filled, no [MASK] left
        for before, after in zip(steps.masks, steps.masks[1:]):
            assert not bool((after & ~before).any())  # a committed token is never re-masked


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(transformer, name):
    tokens, mask = random_case(7)
    first, _ = decode(transformer, tokens, mask, make_sampler(name), seed=3)
    again, _ = decode(transformer, tokens, mask, make_sampler(name), seed=3)
    other, _ = decode(transformer, tokens, mask, make_sampler(name), seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # the seed drives the token sampling


def paper_rule_reference(transformer, tokens, mask, seed, total_iter=6, temperature=4.5):
    """The paper's decoding written out independently: predict, sample by Gumbel-max, keep
    the most confident (log-probability + Gumbel noise * temperature * (1 - t/T))."""
    batch, num = tokens.shape
    keys = torch.arange(batch)
    n_missing = mask.sum(1)
    unknown, current = mask.clone(), tokens.masked_fill(mask, transformer.mask_token_id)
    for step in range(1, total_iter + 1):
        if not unknown.any():
            break
        log_probs = torch.log_softmax(transformer.logits_at(current, unknown).float(), -1)
        rows, cols = unknown.nonzero().unbind(1)
        u = hash_uniform(seed, keys[rows], step, 0, log_probs.shape[-1], cols)
        chosen = (log_probs + gumbel(u).to(log_probs.dtype)).argmax(-1)
        confidence = torch.full((batch, num), float("inf"))
        confidence[unknown] = log_probs.gather(1, chosen[:, None]).squeeze(1)
        sampled = current.clone()
        sampled[unknown] = chosen
        if step == total_iter:
            n_mask = torch.zeros_like(n_missing)
        else:
            ratio = torch.tensor(step / total_iter, dtype=torch.float64)
            n_mask = torch.floor(cosine(ratio) * n_missing.double() + 1e-9).long()
            n_unknown = unknown.sum(1)
            n_mask = torch.minimum(n_mask, n_unknown - 1).clamp_min(0)
            n_mask = torch.where(n_unknown > 1, n_mask.clamp_min(1), n_mask)
        scale = temperature * (1 - step / total_iter)
        if scale > 0:
            confidence = confidence + scale * gumbel(hash_uniform(seed, keys, step, 1, num)).float()
        rank = confidence.argsort(1).argsort(1)
        unknown = rank < n_mask[:, None]
        current = sampled.masked_fill(unknown, transformer.mask_token_id)
    return current


def test_the_default_sampler_gives_the_papers_outputs(transformer):
    for case in range(3):
        tokens, mask = random_case(case)
        expected = paper_rule_reference(transformer, tokens, mask, seed=case)
        for sampler in (None, ConfidenceSampler(4.5, "paper")):
            out, _ = decode(transformer, tokens, mask, sampler, seed=case)
            assert torch.equal(out, expected), case


def test_halton_order_is_a_spread_permutation():
    order = halton_order(16)
    assert sorted(order) == list(range(256))
    # Spread at every prefix: the first 8 positions put 2 in each quadrant, the first 8 and
    # 32 fall in as many different 4x4 blocks as they can (a random order rarely does).
    quadrants = [sum((p // 16 >= 8, p % 16 >= 8) == q for p in order[:8]) for q in
                 ((False, False), (False, True), (True, False), (True, True))]  # fmt: skip
    assert quadrants == [2, 2, 2, 2]
    for prefix in (8, 32):
        blocks = {(p // 64, p % 16 // 4) for p in order[:prefix]}
        assert len(blocks) == min(prefix, 16), prefix


def test_halton_commits_the_holes_positions_in_its_order(transformer):
    tokens, mask = random_case(11, batch=1)
    _, steps = decode(transformer, tokens, mask, HaltonSampler(), steps=True, total_iter=4)
    rank = {position: index for index, position in enumerate(halton_order(16))}
    committed = steps.masks[0][0] & ~steps.masks[1][0]
    still = steps.masks[1][0]
    # Every position committed at step 1 comes before every one still masked, in the order.
    assert max(rank[p] for p in committed.nonzero().flatten().tolist()) < min(
        rank[p] for p in still.nonzero().flatten().tolist()
    )


def test_random_sampler_orders_by_the_seed(transformer):
    tokens, mask = random_case(5, batch=1)
    _, a = decode(transformer, tokens, mask, RandomSampler(), seed=0, steps=True, sample=False)
    _, b = decode(transformer, tokens, mask, RandomSampler(), seed=1, steps=True, sample=False)
    assert not torch.equal(a.masks[1], b.masks[1])


@pytest.mark.parametrize("name", ["halton", "random", "entropy"])
def test_sampler_group_selects_the_sampler_and_step_images_work(name, tiny_maskgit):
    cfg = compose_config("evaluate", [f"sampler={name}", "total_iter=3"])
    decoder = hydra.utils.instantiate(cfg.decoding)
    expected = {"halton": HaltonSampler, "random": RandomSampler, "entropy": ConfidenceSampler}
    assert isinstance(decoder.sampler, expected[name])
    images = torch.rand(2, 3, 64, 64)
    mask = torch.ones(2, 1, 64, 64)
    mask[:, :, 16:40, 20:44] = 0
    result = tiny_maskgit.inpaint(images, mask, decoder=decoder, return_steps=True)
    assert len(result.step_images) == 3 and len(result.step_masks) == 4
    known = mask.bool().expand_as(images)
    assert torch.equal(result.images[known], images[known])


def test_decoding_lab_keeps_the_labs_rule_and_unknown_names_are_named():
    decoder = hydra.utils.instantiate(compose_config("evaluate", ["decoding=lab"]).decoding)
    assert decoder.sampler.noise == "lab" and decoder.sample is False
    with pytest.raises(ValueError, match="unknown sampler 'best'"):
        make_sampler("best")
