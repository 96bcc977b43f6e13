"""The official DPT depth head (`dinov3/eval/depth/models/dpt_head.py`).

Used by [`Dinov3HfForDepthEstimation`] when `config.head_type == "dpt"` (the `dinov3_vit7b16_dd` depther and the
CHMv2 canopy-height head `dinov3_vitl16_chmv2`). The module tree reproduces the official one, so that the state dict
of [`DPTHead`] has exactly the key names of the released `*_dpt_head-*.pth` files (the official code loads them
strictly into `depther.decoder`, a `DPTHead`):

    reassemble_blocks.readout_projects.{i}.0.{weight,bias}     Linear(2 C_i, C_i) (+ GELU), only with the CLS readout
    reassemble_blocks.batchnorm_layers.{i}.{weight,bias,running_mean,running_var,num_batches_tracked}
                                                               (Sync)BatchNorm2d(C_i), only with `use_batchnorm`
    reassemble_blocks.projects.{i}.conv.{weight,bias}          Conv2d(C_i, P_i, 1)
    reassemble_blocks.resize_layers.{0,1,3}.{weight,bias}      ConvT(P_0, 4, 4), ConvT(P_1, 2, 2), [2: Identity],
                                                               Conv2d(P_3, 3, stride 2, padding 1)
    convs.{i}.conv.weight                                      Conv2d(P_i, channels, 3, padding 1, no bias)
    fusion_blocks.{i}.res_conv_unit{1,2}.conv{1,2}.conv.weight (+ .bias with `dpt_use_bias`)
                                                               ReLU -> Conv2d(channels, channels, 3); block 0 has no
                                                               res_conv_unit1
    fusion_blocks.{i}.project.conv.{weight,bias}               Conv2d(channels, channels, 1)
    project.conv.{weight,bias}                                 Conv2d(channels, channels, 3) -> ReLU, only with
                                                               `dpt_projection_after_fusion`
    conv_depth.head.{0,2,4}.{weight,bias}                      UpConvHead: Conv3x3(C, C/2), x2 bilinear upsampling,
                                                               Conv3x3(C/2, hidden), ReLU, Conv1x1(hidden, n_bins)

The `.conv` level comes from the official mmcv-style `ConvModule` wrapper (a conv plus optional norm / activation;
the DPT head builds none of its norms, so only `.conv` holds weights). Sync BatchNorm is a plain `BatchNorm2d` here
(same parameters and buffers). This layout was read off the public module structure of the official repository
(the CHMv2-era `DPTHead` with `n_hidden_channels`, `use_bias` and `projection_after_fusion`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DPTConfig

from ..vit.configuration import Dinov3HfViTConfig

# the resize applied to each reassembled map, by position: x4, x2, x1, x0.5 (the official DPT always has four)
NUM_DPT_LAYERS = 4


class ConvModule(nn.Module):
    """A conv with an optional ReLU before it (`activation="pre"`) or after it (`"post"`); weights under `.conv`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        stride: int = 1,
        bias: bool = True,
        activation: str | None = None,
    ):
        super().__init__()
        if activation not in (None, "pre", "post"):
            raise ValueError(f"activation must be None, 'pre' or 'post', got {activation!r}.")
        self.activation = activation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "pre":
            x = torch.relu(x)
        x = self.conv(x)
        if self.activation == "post":
            x = torch.relu(x)
        return x


class Interpolate(nn.Module):
    """Parameter-free bilinear resizing by a fixed factor (a layer of `UpConvHead.head`)."""

    def __init__(self, scale_factor: float, align_corners: bool = True):
        super().__init__()
        self.scale_factor = scale_factor
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=self.align_corners)


class ReassembleBlocks(nn.Module):
    """Per layer: optional CLS readout projection, optional BatchNorm, 1x1 projection to `out_channels[i]`, resize.

    readout "project" (official `use_cls_token=True`): every patch token is concatenated with the class token and
    mapped back by `Linear(2 C, C)` + GELU; "ignore" drops the class token. The resize layers turn the four maps at
    the patch resolution (stride 16) into strides 4, 8, 16 and 32.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int],
        readout: str = "ignore",
        use_batchnorm: bool = False,
    ):
        super().__init__()
        if readout not in ("ignore", "project"):
            raise ValueError(f"readout must be 'ignore' or 'project', got {readout!r}.")
        self.readout = readout
        self.projects = nn.ModuleList(
            ConvModule(c_in, c_out, kernel_size=1, bias=True) for c_in, c_out in zip(in_channels, out_channels)
        )
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        if readout == "project":
            self.readout_projects = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * c, c), nn.GELU()) for c in in_channels
            )
        self.batchnorm_layers = nn.ModuleList(
            nn.BatchNorm2d(c) if use_batchnorm else nn.Identity() for c in in_channels
        )

    def forward(self, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        out = []
        for i, (x, cls_token) in enumerate(inputs):
            if self.readout == "project":
                batch, channels, height, width = x.shape
                tokens = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
                readout = cls_token.unsqueeze(1).expand_as(tokens)
                tokens = self.readout_projects[i](torch.cat([tokens, readout], dim=-1))
                x = tokens.transpose(1, 2).reshape(batch, channels, height, width)
            x = self.batchnorm_layers[i](x)
            x = self.projects[i](x)
            out.append(self.resize_layers[i](x))
        return out


class PreActResidualConvUnit(nn.Module):
    """x + conv2(ReLU(conv1(ReLU(x)))), 3x3 convs (biases only with `bias`)."""

    def __init__(self, channels: int, bias: bool = False):
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, padding=1, bias=bias, activation="pre")
        self.conv2 = ConvModule(channels, channels, 3, padding=1, bias=bias, activation="pre")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class FeatureFusionBlock(nn.Module):
    """[x + rcu1(skip)] -> rcu2 -> x2 bilinear upsampling (align_corners=True) -> 1x1 projection.

    The skip map is resized bilinearly (align_corners=False) to x's size when they differ (odd patch grids). The
    first block of the DPT has no skip input, hence no `res_conv_unit1`.
    """

    def __init__(self, channels: int, with_skip: bool = True, bias: bool = False):
        super().__init__()
        self.project = ConvModule(channels, channels, kernel_size=1, bias=True)
        self.res_conv_unit1 = PreActResidualConvUnit(channels, bias=bias) if with_skip else None
        self.res_conv_unit2 = PreActResidualConvUnit(channels, bias=bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            # torch.export: resize always (a no-op at equal sizes) rather than fix the graph to one parity of the grid
            if torch.compiler.is_exporting() or skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class UpConvHead(nn.Module):
    """Conv3x3(C, C/2) -> x2 bilinear (align_corners=True) -> Conv3x3(C/2, hidden) -> ReLU -> Conv1x1(hidden, out)."""

    def __init__(self, channels: int, out_channels: int, hidden_channels: int = 32):
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, stride=1, padding=1),
            Interpolate(scale_factor=2, align_corners=True),
            nn.Conv2d(channels // 2, hidden_channels, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class DPTHead(nn.Module):
    """DPT decoder: four backbone maps (+ class tokens) -> `n_bins` depth-bin logits at 32 x ceil(h / 2) resolution.

    For a patch grid h x w (h, w even) the logits are at 16 h x 16 w, the input resolution of a /16 backbone.

    Args:
        in_channels: channels of the four backbone maps.
        post_process_channels: channels after the 1x1 reassemble projections (official: [2048] * 4 for ViT-7B,
            [1024] * 4 for ViT-L, [128, 256, 512, 1024] for CHMv2).
        channels: channels of the fusion path (official 512 for ViT-7B, 256 for CHMv2).
        n_bins: output channels (depth-bin logits).
        hidden_channels: hidden channels of the `UpConvHead` (official 32; CHMv2 128).
        readout: "ignore" or "project" (the class token, official `use_cls_token`).
        use_batchnorm: BatchNorm2d on the backbone maps (official ViT-7B depther: yes; CHMv2: no).
        use_bias: biases in the residual conv units (CHMv2: yes).
        projection_after_fusion: 3x3 conv + ReLU after the last fusion block (CHMv2: no).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        post_process_channels: Sequence[int] = (128, 256, 512, 1024),
        channels: int = 256,
        n_bins: int = 256,
        hidden_channels: int = 32,
        readout: str = "ignore",
        use_batchnorm: bool = False,
        use_bias: bool = False,
        projection_after_fusion: bool = True,
    ):
        super().__init__()
        if len(in_channels) != NUM_DPT_LAYERS or len(post_process_channels) != NUM_DPT_LAYERS:
            raise ValueError(
                f"The DPT head takes exactly {NUM_DPT_LAYERS} backbone layers (resized x4, x2, x1, x0.5); got "
                f"{len(in_channels)} input layers and {len(post_process_channels)} post_process_channels."
            )
        self.reassemble_blocks = ReassembleBlocks(in_channels, post_process_channels, readout, use_batchnorm)
        self.convs = nn.ModuleList(
            ConvModule(c, channels, kernel_size=3, padding=1, bias=False) for c in post_process_channels
        )
        self.fusion_blocks = nn.ModuleList(
            FeatureFusionBlock(channels, with_skip=i > 0, bias=use_bias) for i in range(NUM_DPT_LAYERS)
        )
        self.project = (
            ConvModule(channels, channels, kernel_size=3, padding=1, bias=True, activation="post")
            if projection_after_fusion
            else nn.Identity()
        )
        self.conv_depth = UpConvHead(channels, n_bins, hidden_channels)

    def forward_features(self, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        if len(inputs) != NUM_DPT_LAYERS:
            raise ValueError(f"The DPT head expects {NUM_DPT_LAYERS} (map, class token) pairs, got {len(inputs)}.")
        maps = self.reassemble_blocks(inputs)
        maps = [conv(m) for conv, m in zip(self.convs, maps)]
        out = self.fusion_blocks[0](maps[-1])
        for i in range(1, NUM_DPT_LAYERS):
            out = self.fusion_blocks[i](out, maps[-(i + 1)])
        return self.project(out)

    def forward(self, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return self.conv_depth(self.forward_features(inputs))


def dpt_head_from_config(config) -> DPTHead:
    """The DPT head described by a [`Dinov3HfDepthEstimationConfig`] with `head_type="dpt"`."""
    return DPTHead(
        in_channels=[config.layer_channels(i) for i in config.layers],
        post_process_channels=config.post_process_channels,
        channels=config.dpt_channels,
        n_bins=config.n_bins,
        hidden_channels=config.dpt_hidden_channels,
        readout="project" if config.use_cls_token else "ignore",
        use_batchnorm=config.use_batchnorm,
        use_bias=config.dpt_use_bias,
        projection_after_fusion=config.dpt_projection_after_fusion,
    )


def center_pad(pixel_values: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad H and W up to multiples of `multiple`, splitting the padding evenly (extra pixel right / bottom), as
    the official depth encoder's `CenterPadding`; returns the padded images and the (top, left) offsets."""
    height, width = pixel_values.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return pixel_values, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    return F.pad(pixel_values, (left, pad_w - left, top, pad_h - top)), (top, left)


def transformers_dpt_config(backbone_config: Dinov3HfViTConfig, **dpt_kwargs: Any) -> DPTConfig:
    """A transformers `DPTConfig` with which `DPTForDepthEstimation` runs on our ViT, e.g. a preset config as it is.

    transformers' DPT reads every backbone feature map as a [B, 1 + N, C] sequence (class token, then the patch
    tokens), so a copy of `backbone_config` gets `reshape_hidden_states=False`; unless it already selects four stages,
    its `out_indices` become those of the official DPT: the four even intervals, stages [3, 6, 9, 12] of a 12-block
    ViT (stage i is the output of block i, i.e. the official blocks [2, 5, 8, 11] counted from 0). `backbone_config`
    itself is left unchanged; `dpt_kwargs` are further DPTConfig fields (e.g. `neck_hidden_sizes`,
    `fusion_hidden_size`).
    """
    if not isinstance(backbone_config, Dinov3HfViTConfig):
        raise TypeError(
            f"transformers' DPT reads ViT token sequences; got a {type(backbone_config).__name__}. Use a "
            "Dinov3HfViTConfig, or Dinov3HfForDepthEstimation (head_type='linear') for a ConvNeXt."
        )
    config = copy.deepcopy(backbone_config)
    config.reshape_hidden_states = False
    if len(config.out_indices) != NUM_DPT_LAYERS:
        step = config.num_hidden_layers // NUM_DPT_LAYERS
        config.set_output_features_output_indices(
            out_features=None, out_indices=[k * step for k in range(1, NUM_DPT_LAYERS + 1)]
        )
    return DPTConfig(backbone_config=config, **dpt_kwargs)
