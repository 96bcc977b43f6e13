"""DINOv3 ConvNeXt: the backbone model, its AutoBackbone wrapper and outputs.

Module and parameter names are the official ones (`dinov3/models/convnext.py`), so an official `.pth` state dict is this
model's state dict except for `norms.3.*`, the official alias of `norm`, which `dinov3_hf.convert` drops and restores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling

from ..padding import grid_masks, image_grids, image_tokens, mask_extents
from ..pretrained import Dinov3HfPreTrainedModel
from .configuration import NUM_STAGES, Dinov3HfConvNextConfig

# The input side shrinks by 4 (stem) then 2, 2, 2 (downsampling): the stages run at strides 4, 8, 16, 32, and
# 32 px give a 1x1 stride-32 map.
STAGE_STRIDES = (4, 8, 16, 32)
MIN_INPUT_SIZE = STAGE_STRIDES[-1]


@dataclass
class Dinov3HfConvNextModelOutput(BaseModelOutputWithPooling):
    r"""Same fields as `Dinov3HfViTModelOutput`, with the global average pool in place of CLS and no registers.

    last_hidden_state: final LayerNorm of [pool ; stride-32 tokens], shape (B, 1 + h*w, C).
    pooler_output: the normed pool, (B, C).
    register_tokens: None (a ConvNeXt has no registers).
    patch_tokens: the normed stride-32 tokens, (B, h*w, C), row-major over the (h, w) grid.
    prenorm_hidden_state: the stride-32 tokens before the final norm, (B, h*w, C) (official `x_prenorm`, no pool).
    hidden_states: when requested, the input pixels ("stem") and the 4 stage outputs, NCHW, as in transformers.
    patch_mask: with a `pixel_mask` input (a padded mixed-size batch), (B, H // 32, W // 32) booleans, True on each
        image's own stride-32 tokens (its top-left (h // 32, w // 32) block, h x w its real pixels); None otherwise.
        The other positions hold no meaningful values; `unpad()` gives each image's own output.

    The stride-32 grid is (H // 32, W // 32) of the input (`config.output_stride`).
    """

    register_tokens: torch.Tensor | None = None
    patch_tokens: torch.Tensor | None = None
    prenorm_hidden_state: torch.Tensor | None = None
    patch_mask: torch.Tensor | None = None

    def unpad(self) -> list[Dinov3HfConvNextModelOutput]:
        """One output per image, as the model returns for that image alone (batch 1, `patch_mask` None): the pool
        and its own stride-32 tokens, row-major over its own grid, in every token field, and each hidden state
        cropped to its own pixels. Without `patch_mask` each field is sliced per image."""
        outputs = []
        for b in range(self.last_hidden_state.shape[0]):
            tokens = partial(image_tokens, patch_mask=self.patch_mask, image=b)
            hidden_states = None
            if self.hidden_states is not None and self.patch_mask is None:
                hidden_states = tuple(h[b : b + 1] for h in self.hidden_states)
            elif self.hidden_states is not None:  # stage maps at stride s: (rows * 32 // s, cols * 32 // s)
                ((rows, cols),) = mask_extents(self.patch_mask[b : b + 1])
                hidden_states = tuple(
                    h[b : b + 1, :, : rows * STAGE_STRIDES[-1] // stride, : cols * STAGE_STRIDES[-1] // stride]
                    for h, stride in zip(self.hidden_states, (1, *STAGE_STRIDES))
                )
            outputs.append(
                Dinov3HfConvNextModelOutput(
                    last_hidden_state=tokens(self.last_hidden_state),
                    pooler_output=self.pooler_output[b : b + 1],
                    patch_tokens=tokens(self.patch_tokens),
                    prenorm_hidden_state=tokens(self.prenorm_hidden_state),
                    hidden_states=hidden_states,
                )
            )
        return outputs


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over C of [B, C, H, W], as official: (x - mean) / sqrt(biased var + eps) * weight + bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability `rate`, scale the kept ones by 1 / (1 - rate)."""
    if rate == 0.0 or not training:
        return x
    keep = 1 - rate
    mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep) * mask


class ConvNextBlock(GradientCheckpointingLayer):
    """x = x + drop_path(gamma * pwconv2(GELU(pwconv1(norm(dwconv(x)))))), the MLP part in channels-last layout.

    `valid` ([B, 1, H, W] booleans, for a padded batch) zeroes the other positions of the depthwise conv's input, so
    that at each image's bottom and right border the 7x7 conv sees zeros, as its own zero padding at an image alone.
    """

    def __init__(self, dim: int, layer_norm_eps: float, layerscale_init: float, drop_path_rate: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layerscale_init))
        self.layerscale_init = layerscale_init
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dwconv(x if valid is None else torch.where(valid, x, 0.0)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + drop_path(y.permute(0, 3, 1, 2), self.drop_path_rate, self.training)


class Dinov3HfConvNextPreTrainedModel(Dinov3HfPreTrainedModel):
    config: Dinov3HfConvNextConfig
    config_class = Dinov3HfConvNextConfig
    base_model_prefix = "dinov3"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ConvNextBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Official initialisation: trunc-normal convs and linears with zero biases, unit norms, gamma = init value."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, ChannelsFirstLayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ConvNextBlock):
            init.constant_(module.gamma, module.layerscale_init)


class Dinov3HfConvNextModel(Dinov3HfConvNextPreTrainedModel):
    """DINOv3 ConvNeXt backbone. `forward` takes [B, C, H, W] of any size >= 32 px (sizes are floored by the
    strided convs), or a list of such tensors."""

    def __init__(self, config: Dinov3HfConvNextConfig):
        super().__init__(config)
        dims, eps = config.hidden_sizes, config.layer_norm_eps
        stem = nn.Sequential(
            nn.Conv2d(config.num_channels, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0], eps)
        )
        self.downsample_layers = nn.ModuleList(
            [stem]
            + [
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i - 1], eps), nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)
                )
                for i in range(1, NUM_STAGES)
            ]
        )
        total = sum(config.depths)  # drop-path rates linear from 0 to drop_path_rate (Python, so meta-device safe)
        rates = [config.drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        starts = [sum(config.depths[:i]) for i in range(NUM_STAGES)]
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(
                    ConvNextBlock(dims[i], eps, config.layerscale_init, rates[starts[i] + j])
                    for j in range(config.depths[i])
                )
            )
            for i in range(NUM_STAGES)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.downsample_layers[0][0]

    def run_stages(
        self, pixel_values: torch.Tensor, last: int = NUM_STAGES - 1, grids: list[tuple[int, int]] | None = None
    ) -> list[torch.Tensor]:
        """Outputs (NCHW) of stages 0..`last`, stage i being downsample_layers[i] then stages[i].

        `grids`: for a padded batch, each image's own stride-32 grid at its top left; every block then zeroes the
        padding of its depthwise conv's input. The strided convs need no mask: with each image's size a multiple of
        32, every output position of a real region reads real positions only.
        """
        channels = self.config.num_channels
        if pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"Expected pixel_values of shape [batch, {channels}, height, width], got {tuple(pixel_values.shape)}. "
                f"Convert the images to {channels}-channel tensors (for example with the image processor, which turns "
                "grayscale and RGBA into RGB)."
            )
        height, width = pixel_values.shape[-2:]
        if height < MIN_INPUT_SIZE or width < MIN_INPUT_SIZE:
            raise ValueError(
                f"The image ({height}x{width}) is smaller than the ConvNeXt's total stride of {MIN_INPUT_SIZE}; "
                f"resize it to at least {MIN_INPUT_SIZE} pixels per side."
            )
        x = pixel_values.to(self.downsample_layers[0][0].weight.dtype)
        outputs = []
        for i in range(last + 1):
            x = self.downsample_layers[i](x)
            if grids is None:
                x = self.stages[i](x)
            else:
                scale = STAGE_STRIDES[-1] // STAGE_STRIDES[i]
                valid = grid_masks([(h * scale, w * scale) for h, w in grids], *x.shape[-2:], device=x.device)
                for block in self.stages[i]:
                    x = block(x, valid[:, None])
            outputs.append(x)
        return outputs

    def forward(
        self,
        pixel_values: torch.Tensor | Sequence[torch.Tensor],
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> Dinov3HfConvNextModelOutput | list[Dinov3HfConvNextModelOutput] | tuple:
        r"""
        pixel_values: [B, C, H, W], or a list of such tensors (crops of different sizes), which gives one output each.
        output_hidden_states: also return the input and the 4 stage outputs (NCHW, before any norm).
        pixel_mask: (B, H, W), 1 on each image's real pixels (a top-left h x w block, h and w multiples of 32), 0 on
            the padding, as the image processor returns with `do_pad=True`: a mixed-size batch in one forward. Each
            image gets the output of a forward on its real pixels alone (up to float rounding), the pool averaging
            its own positions; the output's `patch_mask` marks its tokens and `unpad()` splits it per image.

        last_hidden_state = norm([mean_hw(x) ; flatten_hw(x)]) with x the stride-32 map.
        """
        grids = None if pixel_mask is None else image_grids(pixel_mask, pixel_values, self.config.output_stride)
        if isinstance(pixel_values, (list, tuple)):
            return [self.forward(x, output_hidden_states, return_dict=True) for x in pixel_values]
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        stages = self.run_stages(pixel_values, grids=grids)
        x = stages[-1]
        tokens = x.flatten(2).transpose(1, 2)
        patch_mask = None if grids is None else grid_masks(grids, *x.shape[-2:], device=x.device)
        if patch_mask is None:
            pool = x.mean((-2, -1))
        else:  # the mean over each image's own positions
            pool = torch.where(patch_mask[:, None], x, 0.0).sum((-2, -1)) / patch_mask.sum((-2, -1))[:, None]
        normed = self.norm(torch.cat([pool.unsqueeze(1), tokens], dim=1))
        output = Dinov3HfConvNextModelOutput(
            last_hidden_state=normed,
            pooler_output=normed[:, 0],
            patch_tokens=normed[:, 1:],
            prenorm_hidden_state=tokens,
            hidden_states=(pixel_values, *stages) if output_hidden_states else None,
            patch_mask=patch_mask,
        )
        return output if return_dict else output.to_tuple()

    def get_intermediate_layers(
        self,
        pixel_values: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of selected stages, with the official semantics.

        n: an int selects the last n stages; a sequence selects 0-based stage indices (negative ones count from the
        end). Per stage: pool = mean over H, W of the stage map; the map is resized to (H // patch_size,
        W // patch_size) (bilinear, antialiased) when `config.patch_size` is set. norm: apply the final LayerNorm to
        pool and map of the last stage only (earlier stages have no norm, as official). reshape: maps as
        [B, C, h, w], else [B, h*w, C].
        Returns a tuple over stages of `patches`, or of `(patches, pool)` with `return_class_token`.
        """
        if isinstance(n, int):
            indices = list(range(NUM_STAGES - n, NUM_STAGES))
        else:
            indices = [i % NUM_STAGES if i < 0 else i for i in n]
        bad = [i for i in indices if not 0 <= i < NUM_STAGES]
        if bad or (isinstance(n, int) and not 1 <= n <= NUM_STAGES):
            raise ValueError(f"Stage selection n={n} is out of range for a ConvNeXt with {NUM_STAGES} stages.")
        stages = self.run_stages(pixel_values, last=max(indices))
        height, width = pixel_values.shape[-2:]
        patch = self.config.patch_size
        results = []
        for i in indices:
            fmap = stages[i]
            pool = fmap.mean((-2, -1))
            if patch is not None:
                fmap = F.interpolate(fmap, size=(height // patch, width // patch), mode="bilinear", antialias=True)
            patches = fmap.flatten(2).transpose(1, 2)
            if norm and i == NUM_STAGES - 1:
                pool, patches = self.norm(pool), self.norm(patches)
            if reshape:
                patches = patches.transpose(1, 2).reshape(fmap.shape).contiguous()
            results.append((patches, pool) if return_class_token else patches)
        return tuple(results)


class Dinov3HfConvNextBackbone(BackboneMixin, Dinov3HfConvNextModel):
    """AutoBackbone view of the ConvNeXt, as transformers' DINOv3ConvNextBackbone: `stem` is the input pixels and
    `stage1`..`stage4` the NCHW stage outputs at strides 4..32 (no norm);
    `num_features = [num_channels, *hidden_sizes]`.
    """

    has_attentions = False

    def __init__(self, config: Dinov3HfConvNextConfig):
        super().__init__(config)
        self.num_features = [config.num_channels, *config.hidden_sizes]

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        indices = [i % len(self.stage_names) for i in self.out_indices]  # negative indices count from the end
        last = NUM_STAGES if output_hidden_states else max(indices)
        stages = [pixel_values, *self.run_stages(pixel_values, last=last - 1)]
        output = BackboneOutput(
            feature_maps=tuple(stages[i] for i in indices),
            hidden_states=tuple(stages) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()
