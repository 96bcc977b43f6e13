"""The ViT-Adapter of Meta's ADE20K segmentor (`dinov3/eval/segmentation/models/backbone/dinov3_adapter.py`,
`DINOv3_Adapter`, and `dinov3/eval/segmentation/models/utils/`), as a transformers backbone.

A convolutional spatial prior module (SPM) gives tokens at strides 8 / 16 / 32; deformable "extractors" update them
from four ViT layers (no injectors: the ViT is untouched); the tokens, a stride-4 map and the ViT maps are summed
into four BatchNormed maps of D channels at strides 4 / 8 / 16 / 32 (arXiv 2508.10104, Sec. 6.3.2). Module and
parameter names are the official ones (`level_embed`, `spm.*`, `interactions.{i}.extractor.*`,
`interactions.3.extra_extractors.{0,1}.*`, `up`, `norm1..4`); the ViT is `backbone.*` (our ViT's keys are the
official ones). Inference only: drop path and gradient checkpointing of the official module are training tools.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from ..vit.configuration import Dinov3HfViTConfig
from ..vit.modeling import Dinov3HfViTModel
from .ms_deform_attn import MSDeformAttn

# the adapter's input sizes must be multiples of this (SPM strides and the 21-way token split below)
ADAPTER_SIZE_MULTIPLE = 32


def four_even_intervals(depth: int) -> list[int]:
    """The official `BackboneLayersSet.FOUR_EVEN_INTERVALS` (`dinov3/eval`), the ViT blocks the segmentation builder
    gives the adapter: `[k * (depth // 4) - 1 for k = 1..4]`, except ViT-L (24 blocks), which the official code pins to
    the paper's [4, 11, 17, 23]. 7B (40 blocks): [9, 19, 29, 39]; ViT-S/B (12): [2, 5, 8, 11]."""
    if depth == 24:
        return [4, 11, 17, 23]
    return [k * (depth // 4) - 1 for k in range(1, 5)]


@strict
class Dinov3HfViTAdapterConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of [`Dinov3HfViTAdapterBackbone`]; defaults are those of the released 7B segmentor
    (`dinov3/eval/segmentation/models/__init__.py` builds `DINOv3_Adapter(vit, interaction_indexes=[9, 19, 29, 39])`).

    Args:
        vit_config: the ViT ([`Dinov3HfViTConfig`] or its dict); None gives the `vit7b16` preset.
        interaction_indexes: the 4 ViT blocks (0-based) whose normed patch tokens feed strides 4, 8, 16, 32.
        conv_inplane: SPM width (64, 128, 256, 256 channels at strides 4, 8, 16, 32).
        deform_num_heads / n_points / deform_ratio: the extractors' deformable attention (value width ratio * D).
        cffn_ratio: ConvFFN hidden width ratio; layer_norm_eps: the extractors' LayerNorms (1e-6).
    """

    model_type = "dinov3_hf_vit_adapter"

    def __init__(
        self,
        vit_config: Dinov3HfViTConfig | dict[str, Any] | None = None,
        interaction_indexes: list[int] | tuple[int, ...] = (9, 19, 29, 39),
        conv_inplane: int = 64,
        deform_num_heads: int = 16,
        n_points: int = 4,
        deform_ratio: float = 0.5,
        cffn_ratio: float = 0.25,
        layer_norm_eps: float = 1e-6,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if vit_config is None:
            vit_config = Dinov3HfViTConfig.from_preset("vit7b16")
        elif isinstance(vit_config, dict):
            vit_config = Dinov3HfViTConfig(**{k: v for k, v in vit_config.items() if k != "model_type"})
        self.vit_config = vit_config
        self.interaction_indexes = [int(i) for i in interaction_indexes]
        self.conv_inplane = conv_inplane
        self.deform_num_heads = deform_num_heads
        self.n_points = n_points
        self.deform_ratio = deform_ratio
        self.cffn_ratio = cffn_ratio
        self.layer_norm_eps = layer_norm_eps
        self.stage_names = ["stem", "stage1", "stage2", "stage3", "stage4"]
        if out_features is None and out_indices is None:
            out_indices = [1, 2, 3, 4]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        self.validate_adapter()

    def validate_adapter(self) -> None:
        """Class validator: raise a ValueError naming the inconsistent field and how to set it."""
        depth, indexes = self.vit_config.num_hidden_layers, self.interaction_indexes
        if len(indexes) != 4 or any(not 0 <= i < depth for i in indexes):
            raise ValueError(
                f"interaction_indexes={indexes} must be 4 block indices of the ViT, in [0, {depth - 1}] for its "
                f"num_hidden_layers={depth}. Pass interaction_indexes={four_even_intervals(depth)} (the official "
                "rule, `four_even_intervals`) to the config, or to `build_official_head_model` / `from_backbone` "
                "(`dinov3-hf convert --interaction-indexes`)."
            )
        value_dim = int(self.vit_config.hidden_size * self.deform_ratio)
        if value_dim % self.deform_num_heads:
            raise ValueError(
                f"The extractors' value width int(hidden_size * deform_ratio) = {value_dim} is not divisible by "
                f"deform_num_heads={self.deform_num_heads}; change deform_num_heads or deform_ratio."
            )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["vit_config"] = self.vit_config.to_dict()
        return output

    @property
    def hidden_size(self) -> int:
        return self.vit_config.hidden_size

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return self.vit_config.image_mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        return self.vit_config.image_std


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SpatialPriorModule(nn.Module):
    """Conv stem: `stem` (3 conv-BN-ReLU, the first stride 2, then max-pool s2) -> stride 4 (c), `conv2` / `conv3` /
    `conv4` (conv-BN-ReLU s2) -> strides 8 / 16 / 32 (2c, 4c, 4c), each projected to D by a 1x1 `fc1..fc4`.
    Returns the stride-4 map [B, D, H/4, W/4] and the other three as row-major tokens [B, h w, D]."""

    def __init__(self, inplanes: int, embed_dim: int):
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn_relu(3, inplanes, 2),
            *_conv_bn_relu(inplanes, inplanes, 1),
            *_conv_bn_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        tokens = [fc(c).flatten(2).transpose(1, 2) for fc, c in ((self.fc2, c2), (self.fc3, c3), (self.fc4, c4))]
        return (self.fc1(c1), *tokens)


class DWConv(nn.Module):
    """One depthwise 3x3 conv (zero padding 1, bias) applied separately to the three token grids: with
    n = N // 21, the first 16n tokens are the (2h, 2w) grid, the next 4n the (h, w) grid, the last n the (h/2, w/2)
    grid (h, w = the ViT's patch grid)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        batch, length, channels = x.shape
        n = length // 21
        grids = ((0, 16 * n, 2 * h, 2 * w), (16 * n, 20 * n, h, w), (20 * n, length, h // 2, w // 2))
        outs = []
        for start, stop, gh, gw in grids:
            part = x[:, start:stop].transpose(1, 2).reshape(batch, channels, gh, gw)
            outs.append(self.dwconv(part).flatten(2).transpose(1, 2))
        return torch.cat(outs, dim=1)


class ConvFFN(nn.Module):
    """fc1 (D -> hidden) -> DWConv -> GELU (erf) -> fc2 (hidden -> D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Extractor(nn.Module):
    """c <- c + MSDeformAttn(query_norm(c), ref, feat_norm(f), one level (h, w)); c <- c + ConvFFN(ffn_norm(c))."""

    def __init__(self, config: Dinov3HfViTAdapterConfig):
        super().__init__()
        dim, eps = config.hidden_size, config.layer_norm_eps
        self.query_norm = nn.LayerNorm(dim, eps=eps)
        self.feat_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = MSDeformAttn(dim, 1, config.deform_num_heads, config.n_points, ratio=config.deform_ratio)
        self.ffn = ConvFFN(dim, int(dim * config.cffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def forward(
        self, c: torch.Tensor, reference_points: torch.Tensor, feat: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        c = c + self.attn(self.query_norm(c), reference_points, self.feat_norm(feat), [(h, w)])
        return c + self.ffn(self.ffn_norm(c), h, w)


class InteractionBlockWithCls(nn.Module):
    """One extractor, plus (last block only) two `extra_extractors` on the same ViT layer."""

    def __init__(self, config: Dinov3HfViTAdapterConfig, extra_extractor: bool):
        super().__init__()
        self.extractor = Extractor(config)
        if extra_extractor:
            self.extra_extractors = nn.Sequential(Extractor(config), Extractor(config))

    def forward(
        self, c: torch.Tensor, reference_points: torch.Tensor, feat: torch.Tensor, h: int, w: int
    ) -> torch.Tensor:
        c = self.extractor(c, reference_points, feat, h, w)
        for extractor in getattr(self, "extra_extractors", ()):
            c = extractor(c, reference_points, feat, h, w)
        return c


def reference_points(shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Cell centres ((j + 0.5) / W_l, (i + 0.5) / H_l) of each grid, row-major, concatenated: [1, N, 1, 2]
    (`linspace(0.5, n - 0.5, n) / n` as `dinov3/eval/segmentation/models/backbone/dinov3_adapter.py`)."""
    points = []
    for h, w in shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    return torch.cat(points)[None, :, None]


class Dinov3HfViTAdapterBackbone(BackboneMixin, PreTrainedModel):
    """ViT-Adapter backbone: four maps of D channels at strides 4, 8, 16, 32 (`channels == [D] * 4`).

    Forward (inputs with H, W multiples of 32; h, w = H / 16, W / 16):
    1. SPM -> c1 (stride 4 map), c2, c3, c4 tokens + `level_embed[0..2]`; c = concat(c2, c3, c4).
    2. ViT `get_intermediate_layers(interaction_indexes, norm=True)` patch tokens f_0..f_3 (class tokens unused).
    3. For i = 0..3: c <- interactions[i](c, f_i) (extractor, then for i = 3 the two extra extractors).
    4. Split c into maps (2h, 2w), (h, w), (h/2, w/2); c1 <- up(c2) + c1; add f_0..f_3 as maps bilinearly resized
       (align_corners=False) to strides 4, 8, 16, 32; BatchNorm each (`norm1..4`, running statistics in eval).
    """

    config: Dinov3HfViTAdapterConfig
    config_class = Dinov3HfViTAdapterConfig
    base_model_prefix = "adapter"
    main_input_name = "pixel_values"
    has_attentions = False

    def __init__(self, config: Dinov3HfViTAdapterConfig):
        super().__init__(config)
        dim = config.hidden_size
        self.backbone = Dinov3HfViTModel(config.vit_config)
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(config.conv_inplane, dim)
        last = len(config.interaction_indexes) - 1
        self.interactions = nn.Sequential(
            *(InteractionBlockWithCls(config, extra_extractor=i == last) for i in range(last + 1))
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.BatchNorm2d(dim) for _ in range(4))
        self.num_features = [dim] * 5
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Random init for new models (the official weights come from the checkpoint): normal(0, 0.02) weights and
        level embedding, zero biases, BatchNorm at identity."""
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, Dinov3HfViTAdapterBackbone):
            nn.init.normal_(module.level_embed, std=0.02)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple:
        height, width = pixel_values.shape[-2:]
        if height % ADAPTER_SIZE_MULTIPLE or width % ADAPTER_SIZE_MULTIPLE:
            fit = [-(-s // ADAPTER_SIZE_MULTIPLE) * ADAPTER_SIZE_MULTIPLE for s in (height, width)]
            raise ValueError(
                f"The ViT-Adapter needs input height and width that are multiples of {ADAPTER_SIZE_MULTIPLE}; got "
                f"{height}x{width}. Pad or resize the image, e.g. to {fit[0]}x{fit[1]}."
            )
        h, w = height // 16, width // 16
        c1, c2, c3, c4 = self.spm(pixel_values)
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)
        with torch.no_grad():  # the official adapter runs the ViT frozen
            layers = self.backbone.get_intermediate_layers(pixel_values, n=self.config.interaction_indexes, norm=True)
        refs = reference_points([(height // 8, width // 8), (h, w), (height // 32, width // 32)], c.device)
        for interaction, feat in zip(self.interactions, layers):
            c = interaction(c, refs.to(c.dtype), feat, h, w)
        batch, _, dim = c.shape
        sizes = [(2 * h, 2 * w), (h, w), (h // 2, w // 2)]
        c2, c3, c4 = (
            part.transpose(1, 2).reshape(batch, dim, gh, gw)
            for part, (gh, gw) in zip(c.split([gh * gw for gh, gw in sizes], dim=1), sizes)
        )
        c1 = self.up(c2) + c1
        maps = [c1, c2, c3, c4]
        for i, feat in enumerate(layers):
            vit_map = feat.transpose(1, 2).reshape(batch, dim, h, w)
            maps[i] = maps[i] + F.interpolate(vit_map, size=maps[i].shape[-2:], mode="bilinear", align_corners=False)
        norms = (self.norm1, self.norm2, self.norm3, self.norm4)
        outs = {f"stage{i + 1}": norm(m) for i, (norm, m) in enumerate(zip(norms, maps))}
        feature_maps = tuple(outs[name] for name in self.out_features)
        output = BackboneOutput(feature_maps=feature_maps)
        return output if return_dict is not False else output.to_tuple()
