"""dino.txt as a transformers model: frozen DINOv3 ViT + vision head, CLIP-style text tower, contrastive scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..heads.base import Dinov3HfHeadPreTrainedModel
from ..vit.layers.layer_scale import LayerScale
from .configuration import Dinov3HfDinoTxtConfig
from .text_tower import TextTransformer
from .vision_head import VisionHead


@dataclass
class Dinov3HfDinoTxtVisionOutput(ModelOutput):
    r"""
    image_embeds: [CLS ; mean patch] of the vision head output, (B, 2D), not normalised.
    patch_tokens: the vision head's patch tokens, (B, N, D), row-major over the (H // p, W // p) patch grid (their
        cosine with the second half of a text embedding is the open-vocabulary segmentation score).
    """

    image_embeds: torch.Tensor | None = None
    patch_tokens: torch.Tensor | None = None


@dataclass
class Dinov3HfDinoTxtOutput(ModelOutput):
    r"""
    logits_per_image: exp(logit_scale) * cos(image_i, text_j), (n_images, n_texts).
    logits_per_text: its transpose, (n_texts, n_images).
    image_embeds: L2-normalised image embeddings, (n_images, embed_dim).
    text_embeds: L2-normalised text embeddings, (n_texts, embed_dim).
    """

    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


class Dinov3HfDinoTxtModel(Dinov3HfHeadPreTrainedModel):
    """dino.txt (`dinov3/eval/text/`): image and text embeddings in one space, and their scaled cosine scores.

    The backbone is frozen by default (`config.freeze_backbone`, LiT); `from_backbone(backbone, **config_fields)`
    builds a new vision head and text tower on a pretrained backbone. `attention_mask` is accepted and not needed:
    the text attention is causal and the text embedding is read at the EOT token, so padding after it has no effect.
    """

    config: Dinov3HfDinoTxtConfig
    config_class = Dinov3HfDinoTxtConfig
    pipeline_tag = "zero-shot-image-classification"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")

    def __init__(self, config: Dinov3HfDinoTxtConfig):
        super().__init__(config)
        self.vision_head = VisionHead(config)
        self.text_model = TextTransformer(config)
        self.text_projection = nn.Linear(config.text_hidden_size, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Trunc-normal(0.02) linears with zero biases, N(0, 0.02) token / N(0, 0.01) position embeddings, unit
        LayerNorms, LayerScale at its init value, logit_scale = ln(1/0.07). The backbone keeps its own init."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, TextTransformer):
            init.normal_(module.positional_embedding, std=0.01)
        elif isinstance(module, Dinov3HfDinoTxtModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init)

    # -- towers -----------------------------------------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor) -> Dinov3HfDinoTxtVisionOutput:
        """Backbone (final-normed [CLS | registers | patches]) -> vision head -> [CLS ; mean patch] and patch tokens."""
        with self._backbone_context():
            backbone = self.backbone(pixel_values, return_dict=True)
        tokens = self.vision_head(backbone.last_hidden_state)
        patches = tokens[:, self.backbone.num_prefix_tokens :]
        image_embeds = torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)
        return Dinov3HfDinoTxtVisionOutput(image_embeds=image_embeds, patch_tokens=patches)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Image embeddings (B, embed_dim) = [CLS ; mean patch] of the vision head output, not normalised."""
        return self.encode_image(pixel_values).image_embeds

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Text embeddings (B, embed_dim) = text_projection(text tower output at the EOT token), not normalised."""
        return self.text_projection(self.text_model(input_ids))

    def clamp_logit_scale_(self) -> None:
        """Keep logit_scale in [0, config.logit_scale_max] (done after every training step)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.config.logit_scale_max)

    # -- scores -----------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Dinov3HfDinoTxtOutput | tuple:
        r"""
        input_ids: (n_texts, T) token ids from [`Dinov3HfDinoTxtTokenizer`], T <= the text context (77).
        pixel_values: (n_images, 3, H, W) from the image processor.
        attention_mask: accepted for the pipelines' sake and unused (see the class docstring).
        """
        if input_ids is None or pixel_values is None:
            raise ValueError(
                "dino.txt scores images against texts: pass both input_ids and pixel_values (use get_image_features "
                "or get_text_features for one side alone)."
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        image_embeds = F.normalize(self.get_image_features(pixel_values), dim=-1)
        text_embeds = F.normalize(self.get_text_features(input_ids), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_embeds @ text_embeds.t()
        output = Dinov3HfDinoTxtOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )
        return output if return_dict else output.to_tuple()
