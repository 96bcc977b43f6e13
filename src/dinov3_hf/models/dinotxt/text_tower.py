"""The dino.txt text tower: a causal CLIP-style transformer pooled at the EOT token."""

from __future__ import annotations

import torch
from torch import nn

from ..vit.layers.block import SelfAttentionBlock
from .configuration import Dinov3HfDinoTxtConfig


class TextTransformer(nn.Module):
    """input_ids [B, T] (T <= context length) -> token + position embeddings -> causal pre-norm blocks -> ln_final ->
    the hidden state at argmax(input_ids) per row, [B, text_hidden_size]: the first EOT (49407, the largest id), which
    is a literal `<|endoftext|>` in the text if it has one, as in the official text tower's "argmax" pooling.

    The blocks are the ViT's `SelfAttentionBlock` with causal attention, a GELU MLP and no LayerScale (the official
    text blocks have the same structure under other names; `dinov3_hf.convert.dinotxt` maps them).
    """

    def __init__(self, config: Dinov3HfDinoTxtConfig):
        super().__init__()
        dim = config.text_hidden_size
        self.context_length = config.text_context_length
        self.token_embedding = nn.Embedding(config.text_vocab_size, dim)
        self.positional_embedding = nn.Parameter(torch.zeros(config.text_context_length, dim))
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                dim,
                config.text_num_attention_heads,
                ffn_type="mlp",
                ffn_hidden=int(dim * config.text_ffn_ratio),
                qkv_bias=False,
                proj_bias=True,
                ffn_bias=True,
                layer_norm_eps=config.layer_norm_eps,
                layerscale_init=None,
                causal=True,
            )
            for _ in range(config.text_num_hidden_layers)
        )
        self.ln_final = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2 or input_ids.shape[1] > self.context_length:
            raise ValueError(
                f"input_ids must be [batch, length] with length <= {self.context_length} (the text context), got "
                f"shape {tuple(input_ids.shape)}. Tokenize with truncation=True (max_length={self.context_length})."
            )
        x = self.token_embedding(input_ids) + self.positional_embedding[: input_ids.shape[1]]
        xs = [x]
        for block in self.blocks:
            xs = block(xs, [None])
        x = self.ln_final(xs[0])
        return x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(dim=-1)]
