"""The dino.txt vision head: transformer blocks without RoPE on the backbone's tokens, then a LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from ..vit.layers.block import SelfAttentionBlock
from .configuration import Dinov3HfDinoTxtConfig


class VisionHead(nn.Module):
    """tokens [B, 1 + R + N, D] -> ln_final(blocks(tokens)), same shape.

    The blocks are the ViT's `SelfAttentionBlock` (SwiGLU, LayerScale, qkv without bias) run without RoPE; their
    parameter names are the official `visual_model.head.*` ones.
    """

    def __init__(self, config: Dinov3HfDinoTxtConfig):
        super().__init__()
        backbone = config.backbone_config
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                backbone.hidden_size,
                backbone.num_attention_heads,
                ffn_type="swiglu",
                ffn_hidden=config.vision_head_ffn_hidden_size,
                qkv_bias=False,
                proj_bias=True,
                ffn_bias=True,
                layer_norm_eps=config.layer_norm_eps,
                layerscale_init=config.vision_head_layerscale_init,
                drop_path_rate=config.vision_head_drop_path_rate,
            )
            for _ in range(config.vision_head_layers)
        )
        self.ln_final = nn.LayerNorm(backbone.hidden_size, eps=config.layer_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        xs = [tokens]
        for block in self.blocks:
            xs = block(xs, [None])
        return self.ln_final(xs[0])
