"""Simple feature pyramid of ViTDet (Li et al. 2022, "Exploring Plain Vision Transformer Backbones for Object
Detection", arXiv 2203.16527, Sec. 3 and Fig. 2c): multi-scale maps from the single-scale maps of a plain ViT.

Per level of stride s (in pixels; the ViT map has stride p = patch_size), from a source map of D channels:
  s = p / 4: ConvTranspose(D -> D/2, 2x2, stride 2) -> LayerNorm -> GELU -> ConvTranspose(D/2 -> D/4, 2x2, stride 2)
  s = p / 2: ConvTranspose(D -> D/2, 2x2, stride 2)
  s = p:     identity
  s = 2p:    MaxPool(2x2, stride 2)
  s = 4p:    MaxPool(2x2, stride 2) twice (a level of its own; ViTDet instead subsamples its stride-2p output)
then Conv(1x1, -> C, no bias) -> LayerNorm -> Conv(3x3, padding 1, no bias) -> LayerNorm, C = `pyramid_channels`,
every LayerNorm over channels (ViTDet's `norm="LN"`). A (h, w) patch grid gives (h * p / s, w * p / s) maps for
s <= p and (h // (s / p), w // (s / p)) for s > p (max-pooling floors odd sizes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..convnext.modeling import ChannelsFirstLayerNorm

PYRAMID_NORM_EPS = 1e-6  # ViTDet's LayerNorm epsilon


class Dinov3HfViTFeaturePyramid(nn.Module):
    """One branch per stride in `strides` (pixels); `forward` maps a list of NCHW source maps at stride
    `patch_size` (one for all levels, or one per level) to one map per stride, `channels` channels each."""

    def __init__(self, in_channels: int, patch_size: int, strides: list[int], channels: int):
        super().__init__()
        self.strides = list(strides)
        self.patch_size = patch_size
        self.levels = nn.ModuleList(
            self.level(in_channels, int(math.log2(stride / patch_size)), channels) for stride in strides
        )

    @staticmethod
    def level(dim: int, log2_scale: int, channels: int) -> nn.Sequential:
        """The branch for stride `patch_size * 2**log2_scale`: resampling, then the 1x1 and 3x3 convs with norms."""
        if log2_scale == -2:
            resample = [
                nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                ChannelsFirstLayerNorm(dim // 2, PYRAMID_NORM_EPS),
                nn.GELU(),
                nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
            ]
            dim //= 4
        elif log2_scale == -1:
            resample = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
            dim //= 2
        else:
            resample = [nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(log2_scale)]
        return nn.Sequential(
            *resample,
            nn.Conv2d(dim, channels, kernel_size=1, bias=False),
            ChannelsFirstLayerNorm(channels, PYRAMID_NORM_EPS),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            ChannelsFirstLayerNorm(channels, PYRAMID_NORM_EPS),
        )

    def forward(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        grid_h, grid_w = sources[0].shape[-2:]
        largest = self.strides[-1]
        if min(grid_h, grid_w) * self.patch_size < largest:
            raise ValueError(
                f"The input's {grid_h}x{grid_w} patch grid ({grid_h * self.patch_size}x{grid_w * self.patch_size} "
                f"pixels) is smaller than the pyramid's largest stride {largest}; pass images of at least {largest} "
                f"pixels on each side."
            )
        if len(sources) == 1:
            sources = sources * len(self.levels)
        return [level(source) for level, source in zip(self.levels, sources, strict=True)]
