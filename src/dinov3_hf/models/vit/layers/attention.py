"""Multi-head self-attention with a fused qkv projection, masked key bias and RoPE on patch tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope


class LinearKMaskedBias(nn.Linear):
    """qkv projection whose key third of the bias is multiplied by a 0 mask: the key bias is always zero.

    The mask is the persistent buffer `bias_mask` = [1]*D + [0]*D + [1]*D, as in official checkpoints.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=True)
        self.register_buffer("bias_mask", self.default_bias_mask(), persistent=True)

    def default_bias_mask(self) -> torch.Tensor:
        third = self.out_features // 3
        mask = torch.ones(self.out_features)
        mask[third : 2 * third] = 0
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask.to(self.bias.dtype))


class SelfAttention(nn.Module):
    """softmax(q k^T / sqrt(head_dim)) v per head, with RoPE applied to q and k of the patch tokens.

    Takes a list of token tensors (crops of different resolutions): the projections run once on all tokens,
    attention runs per crop with that crop's (sin, cos), or without RoPE where it is None. `causal=True` lets
    token i attend to tokens j <= i only (the dino.txt text tower).
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, mask_k_bias: bool, proj_bias: bool, causal: bool = False
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        if qkv_bias and mask_k_bias:
            self.qkv = LinearKMaskedBias(dim, 3 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def attend(self, qkv: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """qkv [B, T, 3D] -> attention output [B, T, D]."""
        batch, tokens, _ = qkv.shape
        qkv = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is None:
            q, k, v = qkv.unbind(0)
        else:  # rotate q and k in one call
            (q, k), v = apply_rope(qkv[:2], *rope).unbind(0), qkv[2]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return out.transpose(1, 2).reshape(batch, tokens, -1)

    def forward(
        self, xs: list[torch.Tensor], ropes: list[tuple[torch.Tensor, torch.Tensor] | None]
    ) -> list[torch.Tensor]:
        qkvs = apply_to_list(self.qkv, xs)
        outs = [self.attend(qkv, rope) for qkv, rope in zip(qkvs, ropes)]
        return apply_to_list(self.proj, outs)


def apply_to_list(fn, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Apply a token-wise fn once to the concatenation of all tokens in xs, and split the result back."""
    if len(xs) == 1:
        return [fn(xs[0])]
    flat = torch.cat([x.flatten(0, -2) for x in xs])
    out = fn(flat)
    sizes = [x[..., 0].numel() for x in xs]
    return [y.view(*x.shape[:-1], y.shape[-1]) for x, y in zip(xs, out.split(sizes))]
