"""Bidirectional (BERT-style) transformer over VQGAN tokens with a ``[MASK]`` token.

Parameter names follow the lab's checkpoint (``tok_emb``, ``pos_emb``, ``blocks.N.Attention``,
``Token_Prediction``, ``LN``, ``bias``) so its 189-tensor state_dict loads strictly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from maskgit.models.attention import AttentionImpl, MultiHeadSelfAttention


class EncoderBlock(nn.Module):
    """Post-LayerNorm transformer block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_heads: int,
        dropout: float,
        attn_dropout: float,
        proj_dropout: float,
        attn_impl: AttentionImpl,
    ) -> None:
        super().__init__()
        self.Attention = MultiHeadSelfAttention(
            dim, num_heads, attn_dropout, proj_dropout, attn_impl
        )
        self.LayerNorm1 = nn.LayerNorm(dim, eps=1e-12)
        self.MLP = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )
        self.LayerNorm2 = nn.LayerNorm(dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.LayerNorm1(x + self.dropout(self.Attention(x)))
        return self.LayerNorm2(x + self.MLP(x))


class BidirectionalTransformer(nn.Module):
    def __init__(
        self,
        num_image_tokens: int = 256,
        num_codebook_vectors: int = 1024,
        dim: int = 768,
        n_layers: int = 15,
        hidden_dim: int = 1536,
        num_heads: int = 16,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        proj_dropout: float = 0.0,
        attn_impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.num_image_tokens = num_image_tokens
        self.num_codebook_vectors = num_codebook_vectors
        self.mask_token_id = num_codebook_vectors
        self.tok_emb = nn.Embedding(num_codebook_vectors + 1, dim)
        self.pos_emb = nn.Parameter(
            nn.init.trunc_normal_(torch.zeros(num_image_tokens, dim), 0.0, 0.02)
        )
        self.blocks = nn.Sequential(
            *[
                EncoderBlock(
                    dim, hidden_dim, num_heads, dropout, attn_dropout, proj_dropout, attn_impl
                )
                for _ in range(n_layers)
            ]
        )
        self.Token_Prediction = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=1e-12)
        )
        self.bias = nn.Parameter(torch.zeros(num_image_tokens, num_codebook_vectors + 1))
        self.LN = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def set_attention_impl(self, impl: AttentionImpl) -> None:
        if impl not in ("manual", "sdpa"):
            raise ValueError(f"attention impl must be 'manual' or 'sdpa', got {impl!r}")
        for block in self.blocks:
            block.Attention.impl = impl

    def compile_blocks(self, **kwargs) -> None:
        """``torch.compile`` the encoder blocks (fixed [B,N,dim] shapes; the gathers around
        them stay eager), once. Training and decoding both run through them."""
        if not getattr(self, "_blocks_compiled", False):
            self.blocks.compile(**kwargs)
            self._blocks_compiled = True

    def hidden_states(self, tokens: Tensor) -> Tensor:
        """tokens [B,N] (ids in [0, K], K = [MASK]) -> features [B,N,dim]."""
        x = self.tok_emb(tokens) + self.pos_emb[: tokens.shape[1]]
        return self.blocks(self.drop(self.LN(x)))

    def head(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """Logits over the K real codes (the [MASK] class is dropped: never a prediction).

        ``positions`` [M] (flat token positions of ``hidden`` [M,dim]) selects the rows of
        the learned bias when only some positions are predicted.
        """
        features = self.Token_Prediction(hidden)
        k = self.num_codebook_vectors
        bias = self.bias[:, :k] if positions is None else self.bias[positions, :k]
        return features @ self.tok_emb.weight[:k].t() + bias

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B,N] -> logits [B,N,K]."""
        return self.head(self.hidden_states(tokens))

    def logits_at(self, tokens: Tensor, where: Tensor) -> Tensor:
        """Logits only at positions where ``where`` [B,N] is True -> [M,K] (row-major order).

        The output head (a dim x K matmul per token) dominates small models; decoding needs it
        only on the still-masked tokens.
        """
        hidden = self.hidden_states(tokens)
        positions = where.nonzero()[:, 1]
        return self.head(hidden[where], positions)
