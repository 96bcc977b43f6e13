"""Image-to-patch-token embedding."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Conv2d(kernel = stride = patch_size): [B, C, H, W] -> tokens [B, (H//p)*(W//p), D] in row-major order.

    Sizes that are not multiples of the patch size are floored, as in the official model.
    """

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected pixel_values of shape [batch, {self.in_channels}, height, width], got "
                f"{tuple(pixel_values.shape)}. Convert the images to {self.in_channels}-channel tensors "
                "(for example with the image processor, which turns grayscale and RGBA into RGB)."
            )
        height, width = pixel_values.shape[-2:]
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(
                f"The image ({height}x{width}) is smaller than one {self.patch_size}x{self.patch_size} patch; "
                f"resize it to at least {self.patch_size} pixels per side."
            )
        x = self.proj(pixel_values)
        grid_h, grid_w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), grid_h, grid_w
