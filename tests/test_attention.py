"""Self-attention (manual vs fused) and the bidirectional transformer's outputs and layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_transformer_config

from maskgit.checkpoints import LAB_TRANSFORMER, load_state_dict_strict
from maskgit.models.attention import MultiHeadSelfAttention
from maskgit.models.transformer import BidirectionalTransformer


def tiny_transformer(**overrides: object) -> BidirectionalTransformer:
    torch.manual_seed(0)
    return BidirectionalTransformer(**{**tiny_transformer_config(), **overrides})


@pytest.mark.parametrize(
    ("dim", "heads", "batch", "tokens"),
    [(32, 4, 3, 17), (768, 16, 1, 256)],
)
def test_manual_and_sdpa_attention_agree_in_eval(
    dim: int, heads: int, batch: int, tokens: int
) -> None:
    torch.manual_seed(0)
    manual = MultiHeadSelfAttention(dim, heads, attn_dropout=0.1, impl="manual").eval()
    fused = MultiHeadSelfAttention(dim, heads, attn_dropout=0.1, impl="sdpa").eval()
    fused.load_state_dict(manual.state_dict())
    # Large inputs give peaked softmaxes, where the two implementations differ most.
    x = torch.randn(batch, tokens, dim) * 3
    with torch.no_grad():
        out_manual, out_fused = manual(x), fused(x)
    assert out_manual.shape == (batch, tokens, dim)
    torch.testing.assert_close(out_manual, out_fused, atol=1e-5, rtol=1e-5)
    # Tokens attend to each other: changing one token changes the others' outputs.
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(manual(x2)[:, 1:], out_manual[:, 1:], atol=1e-4)


def test_attention_rejects_bad_shapes_and_impl() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(30, 4)
    with pytest.raises(ValueError, match="flash"):
        MultiHeadSelfAttention(32, 4, impl="flash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flash"):
        tiny_transformer().set_attention_impl("flash")  # type: ignore[arg-type]


def test_transformer_impls_agree_in_eval() -> None:
    model = tiny_transformer(attn_impl="manual").eval()
    tokens = torch.randint(0, 65, (2, 256), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        manual = model(tokens)
        model.set_attention_impl("sdpa")
        assert all(block.Attention.impl == "sdpa" for block in model.blocks)
        fused = model(tokens)
    torch.testing.assert_close(manual, fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_dropout_active_in_train_mode_only(impl: str) -> None:
    tokens = torch.randint(0, 65, (2, 256), generator=torch.Generator().manual_seed(2))
    # Attention dropout alone: both implementations must apply it themselves.
    model = tiny_transformer(dropout=0.0, attn_dropout=0.3, attn_impl=impl)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(tokens), model(tokens))
        model.eval()
        assert torch.equal(model(tokens), model(tokens))
    deterministic = tiny_transformer(dropout=0.0, attn_dropout=0.0, attn_impl=impl).train()
    with torch.no_grad():
        torch.testing.assert_close(deterministic(tokens), deterministic(tokens))


def test_logits_at_matches_forward_without_mask_class() -> None:
    model = tiny_transformer().eval()
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (3, 256), generator=gen)
    where = torch.rand(3, 256, generator=gen) < 0.3
    tokens[where] = model.mask_token_id
    with torch.no_grad():
        full = model(tokens)
        picked = model.logits_at(tokens, where)
    assert full.shape == (3, 256, model.num_codebook_vectors) == (3, 256, 64)
    assert picked.shape == (int(where.sum()), 64)
    torch.testing.assert_close(picked, full[where], atol=1e-5, rtol=1e-5)
    # The learned per-position bias must follow the selected positions, not the row index.
    with torch.no_grad():
        model.bias.copy_(torch.arange(256.0).unsqueeze(1).expand(256, 65) * 10)
        shifted = model.logits_at(tokens, where) - picked
    expected = where.nonzero()[:, 1].float().mul(10).unsqueeze(1).expand(-1, 64)
    torch.testing.assert_close(shifted, expected, atol=1e-3, rtol=1e-5)


def test_lab_transformer_state_dict_loads_strictly(shared_dir: Path) -> None:
    layout = json.loads((shared_dir / "reference" / "transformer_state_dict.json").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {e["key"]: torch.randn(e["shape"], generator=gen) for e in layout}
    model = BidirectionalTransformer(**LAB_TRANSFORMER)
    load_state_dict_strict(model, state, "lab transformer")
    assert len(model.state_dict()) == 189
    assert sum(p.numel() for p in model.parameters()) == 72_745_472
    for key in ("tok_emb.weight", "bias", "blocks.14.Attention.qkv.weight", "LN.bias"):
        assert torch.equal(model.state_dict()[key], state[key])
