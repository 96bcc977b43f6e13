"""Monocular depth estimation with the official linear depth probe (official_dinov3.md §5.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import DepthEstimatorOutput

from .base import Dinov3HfHeadPreTrainedModel
from .configuration import Dinov3HfDepthEstimationConfig
from .losses import SigLoss, logits_to_depth
from .segmentation import concat_feature_maps, dense_labels


class Dinov3HfForDepthEstimation(Dinov3HfHeadPreTrainedModel):
    """DINOv3 backbone + the official linear depth head ("linear" bins, "linear" norm, SigLoss).

    Features of `config.layers` (+ the broadcast class token per layer with `use_cls_token`), concatenated ->
    BatchNorm2d -> Conv2d(C, n_bins, 1) = bin logits at patch resolution -> weights = (ReLU(logits) + 0.1) / sum over
    bins -> depth = sum(weights * linspace(min_depth, max_depth, n_bins)) -> bilinear upsampling to the input size.
    `predicted_depth` is (B, H, W) in the units of `min_depth` / `max_depth` (metres).
    """

    config: Dinov3HfDepthEstimationConfig
    config_class = Dinov3HfDepthEstimationConfig
    _head_size_fields = ("n_bins",)

    def __init__(self, config: Dinov3HfDepthEstimationConfig):
        super().__init__(config)
        channels = config.head_in_channels
        self.batchnorm = nn.BatchNorm2d(channels) if config.use_batchnorm else nn.Identity()
        self.conv_depth = nn.Conv2d(channels, config.n_bins, kernel_size=1)
        self.loss_fn = SigLoss(warmup_steps=config.sigloss_warmup_steps)
        self.post_init()

    def bin_logits(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Bin logits (B, n_bins, h, w) at the feature resolution, and the backbone maps they came from."""
        use_cls = self.config.use_cls_token
        layers = self.backbone_feature_maps(pixel_values, self.config.layers, return_class_token=use_cls)
        if use_cls:
            maps = [torch.cat([fmap, cls[:, :, None, None].expand_as(fmap)], dim=1) for fmap, cls in layers]
        else:
            maps = list(layers)
        logits = self.conv_depth(self.batchnorm(concat_feature_maps(maps)))
        return logits, tuple(maps)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DepthEstimatorOutput | tuple:
        r"""
        labels: (B, H, W) ground-truth depth at the size of `pixel_values`; pixels <= 0 or non-finite are ignored.
        output_hidden_states: return the (concatenated-per-layer) backbone feature maps as `hidden_states`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if labels is not None:
            labels = dense_labels(labels, pixel_values, "depth labels")
        logits, maps = self.bin_logits(pixel_values)
        config = self.config
        depth = logits_to_depth(logits, config.min_depth, config.max_depth, config.bins_strategy, config.norm_strategy)
        depth = F.interpolate(depth, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        loss = self.loss_fn(depth, labels.to(depth.device, depth.dtype)) if labels is not None else None
        output = DepthEstimatorOutput(
            loss=loss, predicted_depth=depth, hidden_states=maps if output_hidden_states else None
        )
        return output if return_dict else output.to_tuple()
