"""Meta's released ADE20K segmentor (hub entry `dinov3_vit7b16_ms`): ViT-Adapter + Mask2Former (arXiv 2508.10104,
Sec. 6.3.2), as transformers' `Mask2FormerForUniversalSegmentation` on our ViT-Adapter backbone.

The official head (`dinov3/eval/segmentation/models/heads/mask2former_head.py`: `MSDeformAttnPixelDecoder` and
`MultiScaleMaskedTransformerDecoder`) is, module for module, transformers' `Mask2FormerPixelDecoder` and
`Mask2FormerTransformerModule` with `decoder_layers = 9 + 1` (transformers builds `decoder_layers - 1` layers), 16
heads, FFN 4096, 100 queries, the adapter's four D-channel maps as input (`feature_strides` 4, 8, 16, 32) and the
class head as `class_predictor`. Key names of the official file are translated by
`dinov3_hf.convert.segmentation_head`.

Inference follows `dinov3/eval/segmentation/inference.py` (see `semantic_scores`, `slide_inference`,
`make_inference`), not transformers' image-processor route (which resizes mask logits to 384 x 384 first).
Everything runs in the input dtype; the official module runs the ViT under CUDA bf16 autocast, the pixel decoder and
deformable cores in fp32 and the rest in the autocast dtype of the caller (fp32 in the official evaluation config).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
from transformers.models.mask2former.modeling_mask2former import Mask2FormerForUniversalSegmentationOutput

from ..vit.configuration import Dinov3HfViTConfig
from ..vit.modeling import Dinov3HfViTModel
from .vit_adapter import Dinov3HfViTAdapterBackbone, Dinov3HfViTAdapterConfig


class Dinov3HfAdapterMask2FormerConfig(Mask2FormerConfig):
    r"""Configuration of [`Dinov3HfAdapterMask2FormerForUniversalSegmentation`]; defaults are the release values
    (`dinov3/hub/segmentors.py`: 7B ViT, interaction indexes [9, 19, 29, 39], hidden 2048, 150 ADE20K classes).

    Args:
        backbone_config: the adapter ([`Dinov3HfViTAdapterConfig`] or its dict) or a [`Dinov3HfViTConfig`] (wrapped
            in an adapter with `interaction_indexes`); None gives the 7B release.
        interaction_indexes: the adapter's ViT blocks when `backbone_config` is a ViT config.
        hidden_dim: width of the pixel decoder, mask features and queries (`feature_size`, `mask_feature_size`).
        dim_feedforward: FFN width of the pixel-decoder encoder and of the decoder (4096 in the official head).
        decoder_layers: transformers' count, the official decoder layers + 1 (9 + 1).
        Other fields are transformers' `Mask2FormerConfig` fields.
    """

    model_type = "dinov3_hf_adapter_mask2former"
    backbones_supported = [Dinov3HfViTAdapterConfig.model_type]

    def __init__(
        self,
        backbone_config: Dinov3HfViTAdapterConfig | Dinov3HfViTConfig | dict[str, Any] | None = None,
        interaction_indexes: list[int] | None = None,
        hidden_dim: int = 2048,
        dim_feedforward: int = 4096,
        num_attention_heads: int = 16,
        encoder_layers: int = 6,
        decoder_layers: int = 10,
        num_queries: int = 100,
        **kwargs: Any,
    ):
        if isinstance(backbone_config, dict):
            fields = {k: v for k, v in backbone_config.items() if k not in ("model_type", "transformers_version")}
            backbone_config = Dinov3HfViTAdapterConfig(**fields)
        elif backbone_config is None or isinstance(backbone_config, Dinov3HfViTConfig):
            adapter = {} if interaction_indexes is None else {"interaction_indexes": interaction_indexes}
            backbone_config = Dinov3HfViTAdapterConfig(vit_config=backbone_config, **adapter)
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = 150
        for key in ("feature_size", "mask_feature_size"):
            kwargs.setdefault(key, hidden_dim)
        kwargs.setdefault("encoder_feedforward_dim", dim_feedforward)
        super().__init__(
            backbone_config=backbone_config,
            hidden_dim=hidden_dim,
            dim_feedforward=dim_feedforward,
            num_attention_heads=num_attention_heads,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            num_queries=num_queries,
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["backbone_config"] = self.backbone_config.to_dict()
        return output

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return self.backbone_config.image_mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        return self.backbone_config.image_std

    @property
    def output_stride(self) -> int:
        """Input sizes must be multiples of this (the adapter's stride-32 level)."""
        return 32


class Dinov3HfAdapterMask2FormerForUniversalSegmentation(Mask2FormerForUniversalSegmentation):
    """Mask2Former on the ViT-Adapter (`model.pixel_level_module.encoder` is a [`Dinov3HfViTAdapterBackbone`], the
    ViT under its `backbone`). Forward as transformers' Mask2Former: `class_queries_logits` [B, Q, num_labels + 1],
    `masks_queries_logits` [B, Q, H/4, W/4], auxiliary logits of the 9 earlier predictions."""

    config: Dinov3HfAdapterMask2FormerConfig
    config_class = Dinov3HfAdapterMask2FormerConfig

    @property
    def vit(self) -> Dinov3HfViTModel:
        return self.model.pixel_level_module.encoder.backbone

    @property
    def adapter(self) -> Dinov3HfViTAdapterBackbone:
        return self.model.pixel_level_module.encoder

    @classmethod
    def from_backbone(
        cls,
        backbone: Dinov3HfViTModel | str | os.PathLike,
        config: Dinov3HfAdapterMask2FormerConfig | None = None,
        **fields: Any,
    ) -> "Dinov3HfAdapterMask2FormerForUniversalSegmentation":
        """A new head (random adapter and decoder) on the weights of `backbone` (a ViT, or a folder / Hub id that
        `Dinov3HfViTModel.from_pretrained` reads), in eval mode. The config is `config`'s head and adapter fields
        (default the release) on `backbone`'s ViT, with `fields` (config fields, e.g. `interaction_indexes`) on top."""
        if isinstance(backbone, (str, os.PathLike)):
            backbone = Dinov3HfViTModel.from_pretrained(backbone)
        template = (config or cls.config_class(backbone_config=backbone.config, **fields)).to_dict()
        adapter = {**template.pop("backbone_config"), "vit_config": backbone.config.to_dict()}
        if "interaction_indexes" in fields:
            adapter["interaction_indexes"] = fields.pop("interaction_indexes")
        for key in ("model_type", "transformers_version", "architectures"):
            template.pop(key, None)
        model = cls(cls.config_class(**{**template, **fields, "backbone_config": adapter}))
        model.vit.load_state_dict(backbone.state_dict())
        return model.to(backbone.dtype).eval()

    # -- inference, as dinov3/eval/segmentation/inference.py -------------------------------------------------------

    @staticmethod
    def scores_from_outputs(
        outputs: Mask2FormerForUniversalSegmentationOutput,
        size: tuple[int, int],
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Semantic scores [B, num_labels, *size]: S[b, c] = sum_q softmax(class logits[b, q])[c] *
        sigmoid(mask logits[b, q] resized bilinearly, align_corners=False, to `size`), the no-object column dropped
        after the softmax. `dtype` casts both factors before the product (Meta's slide mode uses bf16)."""
        masks = F.interpolate(outputs.masks_queries_logits, size=size, mode="bilinear", align_corners=False)
        classes = outputs.class_queries_logits.softmax(-1)[..., :-1]
        masks = masks.sigmoid()
        if dtype is not None:
            classes, masks = classes.to(dtype), masks.to(dtype)
        return torch.einsum("bqc,bqhw->bchw", classes, masks)

    def semantic_scores(
        self, pixel_values: torch.Tensor, size: tuple[int, int] | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """`scores_from_outputs` of one forward, at `size` (default the input size)."""
        size = tuple(pixel_values.shape[-2:]) if size is None else tuple(size)
        return self.scores_from_outputs(self(pixel_values), size, dtype)

    @torch.no_grad()
    def slide_inference(
        self,
        pixel_values: torch.Tensor,
        crop_size: int | tuple[int, int] = 896,
        stride: int | tuple[int, int] = 596,
        dtype: torch.dtype | None = torch.bfloat16,
    ) -> torch.Tensor:
        """Scores [B, num_labels, H, W] averaged over windows (`slide_inference` of
        dinov3/eval/segmentation/inference.py): if the crop exceeds both sides it becomes min(H, W) square;
        n_h = max(H - h_c + h_s - 1, 0) // h_s + 1 windows per column (rows likewise), window i spans
        [max(min(i h_s + h_c, H) - h_c, 0), min(i h_s + h_c, H)); each window's scores at its own size (`dtype`: Meta
        casts to bf16 before the product) are summed in the input dtype and divided by the window count per pixel."""
        hc, wc = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
        hs, ws = (stride, stride) if isinstance(stride, int) else stride
        batch, _, height, width = pixel_values.shape
        if hc > height and wc > width:
            hc = wc = min(height, width)
        n_h = max(height - hc + hs - 1, 0) // hs + 1
        n_w = max(width - wc + ws - 1, 0) // ws + 1
        total = pixel_values.new_zeros(batch, self.config.num_labels, height, width)
        count = pixel_values.new_zeros(1, 1, height, width)
        for i in range(n_h):
            for j in range(n_w):
                y2 = min(i * hs + hc, height)
                x2 = min(j * ws + wc, width)
                y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
                total[:, :, y1:y2, x1:x2] += self.semantic_scores(pixel_values[:, :, y1:y2, x1:x2], dtype=dtype)
                count[:, :, y1:y2, x1:x2] += 1
        return total / count

    @torch.no_grad()
    def make_inference(
        self,
        pixel_values: torch.Tensor,
        rescale_to: tuple[int, int],
        mode: str = "slide",
        crop_size: int | tuple[int, int] = 896,
        stride: int | tuple[int, int] = 596,
        whole_size: tuple[int, int] = (512, 512),
    ) -> torch.Tensor:
        """Scores [B, num_labels, *rescale_to] (`make_inference`): "slide" resizes the `slide_inference` scores
        bilinearly to `rescale_to`; "whole" resizes the input to `whole_size` (Meta hard-codes 512 x 512), then
        takes the fp32 scores of one forward at `rescale_to`."""
        if mode == "slide":
            scores = self.slide_inference(pixel_values, crop_size, stride)
            return F.interpolate(scores, size=tuple(rescale_to), mode="bilinear", align_corners=False)
        if mode == "whole":
            resized = F.interpolate(pixel_values, size=tuple(whole_size), mode="bilinear", align_corners=False)
            return self.semantic_scores(resized, size=tuple(rescale_to))
        raise ValueError(f"mode must be 'slide' or 'whole', got {mode!r}.")

    def post_process_semantic_segmentation(
        self,
        outputs: Mask2FormerForUniversalSegmentationOutput,
        target_sizes: list[tuple[int, int]] | None = None,
    ) -> list[torch.Tensor]:
        """Per image an int64 label map (0..num_labels-1; for ADE20K label c is dataset class c + 1): argmax of
        `scores_from_outputs` with the mask logits resized straight to the target size (Meta's procedure), default
        the mask-logit size (stride 4)."""
        masks = outputs.masks_queries_logits
        if target_sizes is not None and len(target_sizes) != masks.shape[0]:
            raise ValueError(
                f"Got {len(target_sizes)} target sizes for a batch of {masks.shape[0]}; pass one per image."
            )
        maps = []
        for b in range(masks.shape[0]):
            size = tuple(masks.shape[-2:]) if target_sizes is None else tuple(int(s) for s in target_sizes[b])
            one = Mask2FormerForUniversalSegmentationOutput(
                class_queries_logits=outputs.class_queries_logits[b : b + 1], masks_queries_logits=masks[b : b + 1]
            )
            maps.append(self.scores_from_outputs(one, size)[0].argmax(0))
        return maps


__all__ = ["Dinov3HfAdapterMask2FormerConfig", "Dinov3HfAdapterMask2FormerForUniversalSegmentation"]
