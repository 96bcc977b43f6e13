"""Monocular depth estimation with the official linear depth probe or the official DPT head (`dinov3/eval/depth/`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import DepthEstimatorOutput

from .base import Dinov3HfHeadPreTrainedModel
from .configuration import Dinov3HfDepthEstimationConfig
from .dpt import center_pad, dpt_head_from_config
from .losses import SigLoss, logits_to_depth
from .segmentation import concat_feature_maps, dense_labels


class Dinov3HfForDepthEstimation(Dinov3HfHeadPreTrainedModel):
    """DINOv3 backbone + an official depth head, chosen by `config.head_type`.

    "linear" (the official linear probe): features of `config.layers` (+ the broadcast class token per layer with
    `use_cls_token`), concatenated -> BatchNorm2d -> Conv2d(C, n_bins, 1) (`batchnorm`, `conv_depth`) = bin logits at
    patch resolution.
    "dpt" (the official DPT depther, e.g. `dinov3_vit7b16_dd` and CHMv2): the four maps of `config.layers` with their
    class tokens -> `dpt_head` ([`DPTHead`], whose state dict has the official key names) = bin logits at the
    (centre-padded) input resolution.
    Then weights over the bins (`norm_strategy`) -> depth = sum(weights * bins) -> bilinear resizing to the input
    size (dpt: after cropping the centre padding). `predicted_depth` is (B, H, W) in the units of `min_depth` /
    `max_depth` (metres).
    """

    config: Dinov3HfDepthEstimationConfig
    config_class = Dinov3HfDepthEstimationConfig
    pipeline_tag = "depth-estimation"
    _head_size_fields = ("n_bins", "dpt_channels", "dpt_hidden_channels")

    def __init__(self, config: Dinov3HfDepthEstimationConfig):
        super().__init__(config)
        if config.head_type == "dpt":
            self.dpt_head = dpt_head_from_config(config)
            for module in self.dpt_head.modules():  # marks the modules that get the DPT initialisation
                module._dpt_init = True
        else:
            channels = config.head_in_channels
            self.batchnorm = nn.BatchNorm2d(channels) if config.use_batchnorm else nn.Identity()
            self.conv_depth = nn.Conv2d(channels, config.n_bins, kernel_size=1)
        self.loss_fn = SigLoss(warmup_steps=config.sigloss_warmup_steps)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Linear head: N(0, 0.01) (base class). DPT head: convs Kaiming-normal (fan_out, ReLU) with zero biases, as
        the official mmcv-style ConvModule init; readout Linear layers N(0, 0.02)."""
        if getattr(module, "_dpt_init", False):
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    init.zeros_(module.bias)
                return
            if isinstance(module, nn.Linear):
                init.normal_(module.weight, mean=0.0, std=0.02)
                init.zeros_(module.bias)
                return
        super()._init_weights(module)

    def bin_logits(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Bin logits (B, n_bins, h, w) and the backbone maps they came from. Linear head: at the feature resolution;
        DPT head: at the input resolution for even patch grids (pass an input padded to a multiple of the patch size,
        as `forward` does with `dpt.center_pad`)."""
        use_cls = self.config.use_cls_token
        if self.config.head_type == "dpt":
            layers = self.backbone_feature_maps(pixel_values, self.config.layers, return_class_token=True)
            return self.dpt_head(list(layers)), tuple(fmap for fmap, _ in layers)
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
        config = self.config
        height, width = pixel_values.shape[-2:]
        if config.head_type == "dpt":  # official CenterPadding to a multiple of the patch size
            padded, (top, left) = center_pad(pixel_values, config.backbone_config.patch_size)
        else:
            padded, (top, left) = pixel_values, (0, 0)
        logits, maps = self.bin_logits(padded)
        depth = logits_to_depth(
            logits, config.min_depth, config.max_depth, config.bins_strategy, config.norm_strategy,
            mixlog_scale=config.mixlog_scale,
        )
        if torch.compiler.is_exporting() or depth.shape[-2:] != padded.shape[-2:]:  # exported: any grid parity
            depth = F.interpolate(depth, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        depth = depth[:, 0, top : top + height, left : left + width]
        loss = self.loss_fn(depth, labels.to(depth.device, depth.dtype)) if labels is not None else None
        output = DepthEstimatorOutput(
            loss=loss, predicted_depth=depth, hidden_states=maps if output_hidden_states else None
        )
        return output if return_dict else output.to_tuple()
