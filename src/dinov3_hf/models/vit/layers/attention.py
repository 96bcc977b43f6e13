"""Multi-head self-attention with a fused qkv projection, masked key bias and RoPE on patch tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging

from .rope import apply_rope

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

logger = logging.get_logger(__name__)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """P = softmax(q k^T * scaling + mask) (scaling defaults to 1/sqrt(head_dim)), output P v.

    q, k, v [B, heads, T, head_dim] -> (output [B, T, heads, head_dim], probabilities P [B, heads, T, T]); the
    signature of transformers' attention functions, so that it is their fallback.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = F.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


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

    The attention function is transformers' `config._attn_implementation` ("sdpa", "eager", "flex_attention"),
    read at each call; without a config it is SDPA. `output_attentions=True` runs `eager_attention` whatever the
    implementation, since only it returns the probabilities. `key_masks` (per crop a `key_padding_mask` for this
    call's implementation, or None) hide the padding of a mixed-size batch as keys. Returns (outputs, probabilities),
    one entry per crop; the probabilities are [B, heads, T, T] or None.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        mask_k_bias: bool,
        proj_bias: bool,
        causal: bool = False,
        config: PretrainedConfig | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.is_causal = causal
        self.config = config
        if qkv_bias and mask_k_bias:
            self.qkv = LinearKMaskedBias(dim, 3 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def implementation(self, output_attentions: bool = False) -> str:
        """The attention implementation of this call: the config's, or eager when probabilities are asked for."""
        implementation = "sdpa" if self.config is None else self.config._attn_implementation
        if output_attentions and implementation != "eager":
            if not torch.compiler.is_compiling():  # Dynamo cannot trace the warning's lru_cache
                logger.warning_once(
                    f"The {implementation!r} attention does not return attention probabilities; output_attentions=True "
                    "runs eager attention instead. Load the model with attn_implementation='eager' to silence this."
                )
            return "eager"
        return implementation

    def attend(
        self,
        qkv: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        key_mask: torch.Tensor | BlockMask | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """qkv [B, T, 3D] -> (attention output [B, T, D], probabilities [B, heads, T, T] or None)."""
        batch, tokens, _ = qkv.shape
        qkv = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is None:
            q, k, v = qkv.unbind(0)
        else:  # rotate q and k in one call
            (q, k), v = apply_rope(qkv[:2], *rope).unbind(0), qkv[2]
        implementation = self.implementation(kwargs.get("output_attentions", False))
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention)
        mask = causal_mask(implementation, tokens, q) if self.is_causal else key_mask
        out, probs = attention(self, q, k, v, mask, scaling=None, dropout=0.0, **kwargs)
        return out.reshape(batch, tokens, -1), probs

    def forward(
        self,
        xs: list[torch.Tensor],
        ropes: list[tuple[torch.Tensor, torch.Tensor] | None],
        key_masks: list[torch.Tensor | BlockMask | None] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        qkvs = apply_to_list(self.qkv, xs)
        key_masks = [None] * len(xs) if key_masks is None else key_masks
        outs, probs = zip(*(self.attend(qkv, rope, mask, **kwargs) for qkv, rope, mask in zip(qkvs, ropes, key_masks)))
        return apply_to_list(self.proj, list(outs)), list(probs)


def causal_mask(implementation: str, tokens: int, query: torch.Tensor) -> torch.Tensor | None:
    """The mask that lets token i attend to tokens j <= i: none for SDPA (it masks from `module.is_causal`), a
    BlockMask for flex attention, else an additive [T, T] mask (-inf above the diagonal)."""
    if implementation == "sdpa":
        return None
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        return create_block_mask(lambda b, h, q, k: q >= k, None, None, tokens, tokens, device=query.device)
    return torch.full((tokens, tokens), float("-inf"), dtype=query.dtype, device=query.device).triu(1)


def key_padding_mask(implementation: str, key_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | BlockMask:
    """The attention mask that hides the keys where `key_valid` [B, T] is False from every query: booleans
    [B, 1, 1, T] for SDPA (True attends), a BlockMask for flex attention, an additive [B, 1, 1, T] mask of `dtype`
    (0, or -inf where hidden) for eager."""
    batch, tokens = key_valid.shape
    device = key_valid.device
    if implementation == "sdpa":
        return key_valid[:, None, None, :]
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        return create_block_mask(lambda b, h, q, k: key_valid[b, k], batch, None, tokens, tokens, device=device)
    if implementation == "eager":
        mask = torch.zeros(batch, 1, 1, tokens, dtype=dtype, device=device)
        return mask.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
    raise ValueError(
        f"Padded batches (pixel_mask) support the 'sdpa', 'eager' and 'flex_attention' attention implementations, "
        f"not {implementation!r}; load the model with one of them, or run the images one at a time."
    )


def apply_to_list(fn, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Apply a token-wise fn once to the concatenation of all tokens in xs, and split the result back."""
    if len(xs) == 1:
        return [fn(xs[0])]
    flat = torch.cat([x.flatten(0, -2) for x in xs])
    out = fn(flat)
    sizes = [x[..., 0].numel() for x in xs]
    return [y.view(*x.shape[:-1], y.shape[-1]) for x, y in zip(xs, out.split(sizes))]
