"""Multi-head self-attention: written out (``manual``) and fused (``sdpa``).

Both share one parameter layout (``qkv`` [3*dim, dim], ``proj`` [dim, dim]) so a checkpoint
trained with one runs with the other; in eval mode they give the same outputs.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

AttentionImpl = Literal["manual", "sdpa"]


class MultiHeadSelfAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_dropout: float = 0.1,
        proj_dropout: float = 0.0,
        impl: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
        if impl not in ("manual", "sdpa"):
            raise ValueError(f"attention impl must be 'manual' or 'sdpa', got {impl!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dropout = attn_dropout
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        # [B,N,3*D] -> 3 x [B,heads,N,head_dim]
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.impl == "sdpa":
            dropout = self.attn_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            out = self._manual_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, d)  # concatenate heads
        return self.proj_drop(self.proj(out))

    def _manual_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        weights = F.softmax(scores, dim=-1)
        weights = F.dropout(weights, p=self.attn_dropout, training=self.training)
        return weights @ v
