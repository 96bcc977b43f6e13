"""Semantic segmentation with the official linear probe (`dinov3/eval/segmentation/`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SemanticSegmenterOutput

from .base import Dinov3HfHeadPreTrainedModel
from .configuration import Dinov3HfSemanticSegmentationConfig
from .losses import segmentation_loss


def concat_feature_maps(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Resize every [B, C_i, h_i, w_i] map bilinearly to the first one's size and concatenate the channels."""
    size = maps[0].shape[-2:]
    resized = [
        m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps
    ]
    return torch.cat(resized, dim=1)


def dense_labels(labels: torch.Tensor, pixel_values: torch.Tensor, what: str) -> torch.Tensor:
    """Check that per-pixel labels (B, H, W) or (B, 1, H, W) match the images (B, C, H, W); return them as (B, H, W)."""
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    batch, (height, width) = pixel_values.shape[0], pixel_values.shape[-2:]
    if labels.ndim != 3 or labels.shape[0] != batch or tuple(labels.shape[-2:]) != (height, width):
        raise ValueError(
            f"The {what} have shape {tuple(labels.shape)} but pixel_values have shape {tuple(pixel_values.shape)}: "
            f"pass one {height}x{width} map per image, shape ({batch}, {height}, {width}). Resize the label maps "
            "like the images (nearest neighbour for class maps), or compare predictions at the label size with the "
            "image processor's post-processing instead."
        )
    return labels


class Dinov3HfForSemanticSegmentation(Dinov3HfHeadPreTrainedModel):
    """DINOv3 backbone + the official linear segmentation head.

    Features of `config.layers` (`get_intermediate_layers(reshape=True, norm=True)`; ConvNeXt: its stage maps),
    resized bilinearly to the first's size and concatenated -> Dropout2d(0.1) -> BatchNorm2d(C) ->
    Conv2d(C, num_labels, 1). `logits` are at the feature resolution (patch grid; ConvNeXt: the first selected
    stage's stride); the loss upsamples them bilinearly to the labels, and
    `Dinov3HfImageProcessor.post_process_semantic_segmentation` to any size.
    """

    config: Dinov3HfSemanticSegmentationConfig
    config_class = Dinov3HfSemanticSegmentationConfig
    pipeline_tag = "image-segmentation"
    _head_size_fields = ("num_labels",)

    def __init__(self, config: Dinov3HfSemanticSegmentationConfig):
        super().__init__(config)
        channels = config.head_in_channels
        self.dropout = nn.Dropout2d(config.classifier_dropout)
        self.batchnorm = nn.BatchNorm2d(channels) if config.use_batchnorm else nn.Identity()
        self.classifier = nn.Conv2d(channels, config.num_labels, kernel_size=1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        r"""
        labels: (B, H, W) class indices at the size of `pixel_values`; `config.loss_ignore_index` (255) is ignored.
        output_hidden_states: return the selected backbone feature maps as `hidden_states`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if labels is not None:
            labels = self.check_labels(labels, pixel_values)
        maps = self.backbone_feature_maps(pixel_values, self.config.layers)
        features = concat_feature_maps(maps)
        logits = self.classifier(self.batchnorm(self.dropout(features)))
        loss = None
        if labels is not None:
            loss = segmentation_loss(logits, labels.to(logits.device), self.config.loss_ignore_index)
        hidden_states = tuple(maps) if output_hidden_states else None
        output = SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)
        return output if return_dict else output.to_tuple()

    def check_labels(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        labels = dense_labels(labels, pixel_values, "segmentation labels")
        if labels.is_floating_point():
            raise ValueError(f"Segmentation labels must be integer class indices, got dtype {labels.dtype}.")
        ignore = self.config.loss_ignore_index
        scored = labels[labels != ignore]
        if scored.numel() and (scored.min() < 0 or scored.max() >= self.config.num_labels):
            raise ValueError(
                f"Segmentation labels must lie in [0, {self.config.num_labels - 1}] (num_labels="
                f"{self.config.num_labels}) or equal loss_ignore_index={ignore}; got values in "
                f"[{scored.min().item()}, {scored.max().item()}]. For ADE20K-style maps where 0 means 'other', "
                "shift the labels by -1 and map 0 to the ignore index (reduce_labels)."
            )
        return labels
