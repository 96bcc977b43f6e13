"""Pre-norm transformer block with LayerScale and the official sample-subset stochastic depth."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from .attention import SelfAttention, apply_to_list
from .ffn import FFN_TYPES
from .layer_scale import LayerScale

TokenList = list[torch.Tensor]


class SelfAttentionBlock(GradientCheckpointingLayer):
    """x = x + ls1(attn(norm1(x))); x = x + ls2(ffn(norm2(x))), on a list of crops.

    Norms, projections and the FFN run once on the tokens of all crops; attention runs per crop.
    In training with drop_path_rate p > 0, each residual branch runs on a random subset of
    max(int(B * (1 - p)), 1) samples of each crop, and is added back scaled by B / subset.
    `ropes` entries of None run attention without RoPE (the dino.txt vision head); `causal` masks attention to
    earlier tokens (the dino.txt text tower); `layerscale_init=None` drops LayerScale. `config` picks the attention
    implementation (see `SelfAttention`); keyword arguments of `forward` go to the attention function. A list passed
    as `attentions` gets the call's attention probabilities appended (one entry: per crop [B, heads, T, T] or None).
    `key_masks` (per crop, see `SelfAttention`) hide the padding of a mixed-size batch as attention keys; these masks
    and the per-image RoPE of such a batch are per sample, so they do not combine with the sample-subset stochastic
    depth in training.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_type: str,
        ffn_hidden: int,
        qkv_bias: bool = True,
        mask_k_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        layer_norm_eps: float = 1e-5,
        layerscale_init: float | None = 1e-5,
        drop_path_rate: float = 0.0,
        causal: bool = False,
        config: PretrainedConfig | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = SelfAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            mask_k_bias=mask_k_bias,
            proj_bias=proj_bias,
            causal=causal,
            config=config,
        )
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = FFN_TYPES[ffn_type](dim, ffn_hidden, bias=ffn_bias)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.drop_path_rate = drop_path_rate

    def _attn_branch(
        self,
        xs: TokenList,
        ropes: list,
        attentions: list | None,
        key_masks: list | None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenList:
        outs, probs = self.attn(apply_to_list(self.norm1, xs), ropes, key_masks=key_masks, **kwargs)
        if attentions is not None:
            attentions.append(probs)
        return apply_to_list(self.ls1, outs)

    def _ffn_branch(self, xs: TokenList) -> TokenList:
        return apply_to_list(lambda t: self.ls2(self.mlp(self.norm2(t))), xs)

    def _residual(self, xs: TokenList, branch: Callable[[TokenList], TokenList]) -> TokenList:
        if not (self.training and self.drop_path_rate > 0):
            return [x + y for x, y in zip(xs, branch(xs))]
        keep = [max(int(x.shape[0] * (1 - self.drop_path_rate)), 1) for x in xs]
        subsets = [torch.randperm(x.shape[0], device=x.device)[:k] for x, k in zip(xs, keep)]
        ys = branch([x[idx] for x, idx in zip(xs, subsets)])
        return [
            torch.index_add(x, 0, idx, y.to(x.dtype), alpha=x.shape[0] / k)
            for x, idx, y, k in zip(xs, subsets, ys, keep)
        ]

    def forward(
        self,
        xs: TokenList,
        ropes: list,
        attentions: list | None = None,
        key_masks: list | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenList:
        if key_masks is not None and self.training and self.drop_path_rate > 0:
            raise ValueError(
                "Padded mixed-size batches (pixel_mask) do not run with stochastic depth in training "
                f"(drop_path_rate={self.drop_path_rate}); set drop_path_rate=0, call model.eval(), or pass each image "
                "size as its own batch."
            )
        xs = self._residual(xs, lambda t: self._attn_branch(t, ropes, attentions, key_masks, **kwargs))
        return self._residual(xs, self._ffn_branch)
