"""Configuration of dino.txt (`dinov3/hub/dinotxt.py`): a frozen DINOv3 ViT, a vision head, a CLIP-style text tower."""

from __future__ import annotations

import math
from typing import Any

from ..heads.configuration import Dinov3HfHeadConfig
from ..vit.configuration import Dinov3HfViTConfig

# The released model `dinov3_vitl16_dinotxt_tet1280d20h24l`: ViT-L/16 backbone, text encoder transformer 1280-d,
# 20 heads, 24 layers. Fields not listed take the class defaults, which are the official values.
DINOTXT_PRESETS: dict[str, dict[str, Any]] = {
    "dinov3_vitl16_dinotxt_tet1280d20h24l": dict(
        backbone_preset="vitl16", text_hidden_size=1280, text_num_hidden_layers=24, text_num_attention_heads=20
    ),
}


class Dinov3HfDinoTxtConfig(Dinov3HfHeadConfig):
    r"""Configuration of [`Dinov3HfDinoTxtModel`].

    Vision: backbone (a [`Dinov3HfViTConfig`], frozen by default) -> its final-normed tokens [CLS | registers |
    patches] -> `vision_head_layers` pre-norm blocks without RoPE (backbone width and heads, SwiGLU FFN of width
    `int(D * vision_head_ffn_ratio)` * 2/3 rounded up to 64, LayerScale `vision_head_layerscale_init`, no qkv bias,
    stochastic depth `vision_head_drop_path_rate` in training) -> LayerNorm. Image embedding = [CLS ; mean patch] of
    that output, so `embed_dim` = 2 x backbone width.

    Text: token + learned position embeddings -> `text_num_hidden_layers` pre-norm causal blocks (GELU MLP of width
    `text_ffn_ratio` x hidden, no qkv bias, no LayerScale) -> LayerNorm -> the token at argmax(input_ids) (the EOT
    token, the largest id) -> Linear(text_hidden_size, embed_dim, bias=False).

    Scores: `logits_per_image = exp(logit_scale) * normalize(image) @ normalize(text)^T`, logit_scale initialised to
    `logit_scale_init` = ln(1/0.07) and kept in [0, `logit_scale_max`] by training.

    Args:
        backbone_config, freeze_backbone, head_initializer_range: as in [`Dinov3HfHeadConfig`]; the backbone must be
            a ViT.
        vision_head_layers: blocks of the vision head (>= 0).
        vision_head_ffn_ratio: SwiGLU width ratio of the vision head (see `vision_head_ffn_hidden_size`).
        vision_head_layerscale_init: initial LayerScale gamma of the vision head blocks.
        vision_head_drop_path_rate: stochastic depth of the vision head blocks in training, in [0, 1).
        text_vocab_size: rows of the token embedding.
        text_context_length: the most tokens per text (rows of the position embedding).
        text_hidden_size: width of the text tower; divisible by `text_num_attention_heads`.
        text_num_hidden_layers: blocks of the text tower.
        text_num_attention_heads: attention heads per text block.
        text_ffn_ratio: MLP width over `text_hidden_size` in the text blocks.
        layer_norm_eps: epsilon of the vision head and text tower LayerNorms.
        logit_scale_init: initial log of the score temperature, ln(1/0.07).
        logit_scale_max: upper clamp of `logit_scale` in training, ln(100).
        initializer_range: std of the trunc-normal linears and N(0, std) token embedding of a fresh model (the
            position embedding is N(0, 0.01)).
    """

    model_type = "dinov3_hf_dinotxt"

    def __init__(
        self,
        vision_head_layers: int = 2,
        vision_head_ffn_ratio: float = 4.0,
        vision_head_layerscale_init: float = 1e-5,
        vision_head_drop_path_rate: float = 0.3,
        text_vocab_size: int = 49408,
        text_context_length: int = 77,
        text_hidden_size: int = 1280,
        text_num_hidden_layers: int = 24,
        text_num_attention_heads: int = 20,
        text_ffn_ratio: float = 4.0,
        layer_norm_eps: float = 1e-5,
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = math.log(100.0),
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not self.is_vit:
            raise ValueError("dino.txt needs a ViT backbone (CLS, registers and patch tokens); got a ConvNeXt config.")
        self.vision_head_layers = int(vision_head_layers)
        self.vision_head_ffn_ratio = float(vision_head_ffn_ratio)
        self.vision_head_layerscale_init = float(vision_head_layerscale_init)
        self.vision_head_drop_path_rate = float(vision_head_drop_path_rate)
        self.text_vocab_size = int(text_vocab_size)
        self.text_context_length = int(text_context_length)
        self.text_hidden_size = int(text_hidden_size)
        self.text_num_hidden_layers = int(text_num_hidden_layers)
        self.text_num_attention_heads = int(text_num_attention_heads)
        self.text_ffn_ratio = float(text_ffn_ratio)
        self.layer_norm_eps = float(layer_norm_eps)
        self.logit_scale_init = float(logit_scale_init)
        self.logit_scale_max = float(logit_scale_max)
        self.initializer_range = float(initializer_range)
        if self.text_hidden_size % self.text_num_attention_heads:
            raise ValueError(
                f"text_hidden_size={self.text_hidden_size} is not divisible by "
                f"text_num_attention_heads={self.text_num_attention_heads}."
            )
        if self.vision_head_layers < 0 or not 0.0 <= self.vision_head_drop_path_rate < 1.0:
            raise ValueError(
                f"Need vision_head_layers >= 0 and vision_head_drop_path_rate in [0, 1); got "
                f"{self.vision_head_layers} and {self.vision_head_drop_path_rate}."
            )

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding: [CLS ; mean patch] of the vision head = 2 x backbone width."""
        return 2 * self.backbone_config.hidden_size

    @property
    def vision_head_ffn_hidden_size(self) -> int:
        """SwiGLU width: int(D * ratio) * 2/3, rounded up to a multiple of 64 (2752 for D = 1024)."""
        d = int(int(self.backbone_config.hidden_size * self.vision_head_ffn_ratio) * 2 / 3)
        return d + (-d) % 64

    @classmethod
    def from_preset(cls, name: str, backbone_config: Dinov3HfViTConfig | None = None, **overrides: Any):
        """The config of a released dino.txt model (`DINOTXT_PRESETS`), on its ViT preset unless `backbone_config`."""
        if name not in DINOTXT_PRESETS:
            raise ValueError(f"Unknown dino.txt preset {name!r}. Known presets: {', '.join(DINOTXT_PRESETS)}.")
        fields = dict(DINOTXT_PRESETS[name])
        preset = fields.pop("backbone_preset")
        backbone_config = backbone_config or Dinov3HfViTConfig.from_preset(preset)
        return cls(backbone_config=backbone_config, **{**fields, **overrides})
