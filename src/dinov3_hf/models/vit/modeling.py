"""DINOv3 Vision Transformer: the backbone model, its AutoBackbone wrapper and outputs.

Module and parameter names are the official ones (`dinov3/models/vision_transformer.py`), so an official `.pth`
state dict is this model's state dict, and `dinov3_hf.convert` only renames for the transformers layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from ..convnext.modeling import ChannelsFirstLayerNorm
from ..padding import grid_masks, image_grids, image_tokens, token_index
from ..pretrained import Dinov3HfPreTrainedModel
from .configuration import Dinov3HfViTConfig
from .feature_pyramid import Dinov3HfViTFeaturePyramid
from .layers.attention import LinearKMaskedBias, key_padding_mask
from .layers.block import SelfAttentionBlock
from .layers.layer_scale import LayerScale
from .layers.patch_embed import PatchEmbed
from .layers.rope import RopePositionEmbedding


@dataclass
class Dinov3HfViTModelOutput(BaseModelOutputWithPooling):
    r"""
    last_hidden_state: final-LayerNorm'ed sequence [CLS | registers | patches], shape (B, 1 + R + N, D).
    pooler_output: the normed CLS token, (B, D).
    register_tokens: the normed register tokens, (B, R, D).
    patch_tokens: the normed patch tokens, (B, N, D), row-major over the (H/p, W/p) grid.
    prenorm_hidden_state: the output of the last block before the final norm, (B, 1 + R + N, D).
    hidden_states: when requested, the embedding output and each block's output, all pre-norm.
    attentions: when requested, each block's attention probabilities, (B, heads, 1 + R + N, 1 + R + N).
    patch_mask: with a `pixel_mask` input (a padded mixed-size batch), (B, H // p, W // p) booleans, True on each
        image's own patches (its top-left (h // p, w // p) block, h x w its real pixels); None otherwise. The other
        tokens hold no meaningful values; `unpad()` gives each image's own output.

    The patch grid is (H // p, W // p) of the input, p = `config.patch_size`.
    """

    register_tokens: torch.Tensor | None = None
    patch_tokens: torch.Tensor | None = None
    prenorm_hidden_state: torch.Tensor | None = None
    patch_mask: torch.Tensor | None = None

    def unpad(self) -> list[Dinov3HfViTModelOutput]:
        """One output per image, as the model returns for that image alone (batch 1, `patch_mask` None): its CLS
        and registers and its own patches, row-major over its own grid, in every token field, and in `attentions`
        the rows and columns of those tokens. Without `patch_mask` each field is sliced per image."""
        outputs = []
        for b in range(len(self.last_hidden_state)):
            tokens = partial(image_tokens, patch_mask=self.patch_mask, image=b)
            index = token_index(self.patch_mask, b, self.last_hidden_state.shape[1], self.last_hidden_state.device)
            outputs.append(
                Dinov3HfViTModelOutput(
                    last_hidden_state=tokens(self.last_hidden_state),
                    pooler_output=self.pooler_output[b : b + 1],
                    register_tokens=self.register_tokens[b : b + 1],
                    patch_tokens=tokens(self.patch_tokens),
                    prenorm_hidden_state=tokens(self.prenorm_hidden_state),
                    hidden_states=None if self.hidden_states is None else tuple(map(tokens, self.hidden_states)),
                    attentions=None
                    if self.attentions is None
                    else tuple(a[b : b + 1, :, index][..., index] for a in self.attentions),
                )
            )
        return outputs


class Dinov3HfViTPreTrainedModel(Dinov3HfPreTrainedModel):
    config: Dinov3HfViTConfig
    config_class = Dinov3HfViTConfig
    base_model_prefix = "dinov3"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SelfAttentionBlock"]
    _supports_sdpa = True
    _supports_flex_attn = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Official initialisation: trunc-normal linears, uniform patch embedding, N(0, 0.02) tokens.

        Each branch initialises only the tensors `module` owns itself: transformers calls this on every module that
        owns a missing tensor (and skips the others), so a parent must not be relied on to reach its children.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
            if isinstance(module, LinearKMaskedBias):
                init.copy_(module.bias_mask, module.default_bias_mask())
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # the patch embedding and the feature pyramid's convs: U(-b, b) with b = 1 / sqrt(fan_in)
            bound = math.sqrt(1 / (module.in_channels * module.kernel_size[0] * module.kernel_size[1]))
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, ChannelsFirstLayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, RopePositionEmbedding):
            init.copy_(module.periods, module.default_periods(device=module.periods.device))
        elif isinstance(module, Dinov3HfViTModel):
            init.normal_(module.cls_token, std=std)
            init.normal_(module.storage_tokens, std=std)
            init.zeros_(module.mask_token)


class Dinov3HfViTModel(Dinov3HfViTPreTrainedModel):
    """DINOv3 ViT backbone. `forward` takes a tensor [B, C, H, W] (with `pixel_mask`: images of different sizes
    padded into one batch), or a list of them (crops of different sizes)."""

    def __init__(self, config: Dinov3HfViTConfig):
        super().__init__(config)
        dim = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = PatchEmbed(config.patch_size, config.num_channels, dim)
        self.rope_embed = RopePositionEmbedding(
            config.head_dim,
            base=config.rope_base,
            min_period=config.rope_min_period,
            max_period=config.rope_max_period,
            normalize_coords=config.rope_normalize_coords,
            shift=config.rope_shift,
            jitter=config.rope_jitter,
            rescale=config.rope_rescale,
            dtype=getattr(torch, config.rope_dtype),
        )
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(
                dim,
                config.num_attention_heads,
                ffn_type=config.ffn_type,
                ffn_hidden=config.ffn_hidden_size,
                qkv_bias=config.qkv_bias,
                mask_k_bias=config.mask_k_bias,
                proj_bias=config.proj_bias,
                ffn_bias=config.ffn_bias,
                layer_norm_eps=config.layer_norm_eps,
                layerscale_init=config.layerscale_init,
                drop_path_rate=config.drop_path_rate,
                config=config,
            )
            for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if config.untie_global_and_local_cls_norm:
            self.local_cls_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.config.num_register_tokens

    def get_input_embeddings(self) -> nn.Module:
        return self.patch_embed.proj

    # -- tokens -----------------------------------------------------------------------------------------------------

    def prepare_tokens(
        self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int, int]:
        """Pixels -> [CLS | registers | patches] tokens, with masked patches replaced by the mask token."""
        pixel_values = pixel_values.to(self.patch_embed.proj.weight.dtype)
        x, grid_h, grid_w = self.patch_embed(pixel_values)
        batch = x.shape[0]
        cls_token = self.cls_token
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(batch, -1) if bool_masked_pos.ndim == 3 else bool_masked_pos
            if mask.shape != x.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos has shape {tuple(bool_masked_pos.shape)} but the image has "
                    f"{grid_h}x{grid_w} = {grid_h * grid_w} patches; pass a boolean mask of shape "
                    f"({batch}, {grid_h * grid_w}) or ({batch}, {grid_h}, {grid_w})."
                )
            x = torch.where(mask.unsqueeze(-1).bool(), self.mask_token.to(x.dtype).unsqueeze(0), x)
        else:
            cls_token = cls_token + 0 * self.mask_token  # keeps mask_token in the autograd graph, as upstream
        prefix = torch.cat([cls_token, self.storage_tokens], dim=1).to(x.dtype).expand(batch, -1, -1)
        return torch.cat([prefix, x], dim=1), grid_h, grid_w

    def final_norm(self, x: torch.Tensor, local_crops: bool = False) -> torch.Tensor:
        """The final LayerNorm; with untied norms, local crops in training normalise CLS + registers separately."""
        if not (local_crops and self.training and self.config.untie_global_and_local_cls_norm):
            return self.norm(x)
        split = self.num_prefix_tokens
        return torch.cat([self.local_cls_norm(x[:, :split]), self.norm(x[:, split:])], dim=1)

    def run_blocks(
        self,
        xs: list[torch.Tensor],
        grids: list[tuple[int, int]],
        collect: Sequence[int] = (),
        stop_after: int | None = None,
        image_grids: list[tuple[int, int]] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]], list[list[torch.Tensor]]]:
        """Run blocks[0 .. stop_after] on a list of token tensors; return the outputs, those of blocks in `collect`
        and, with `output_attentions=True`, each block's attention probabilities per crop (else an empty list).

        RoPE (sin, cos) is computed once per crop size, or once per block and crop size while it draws training
        augmentations (each block then sees its own draw, as upstream). `kwargs` go to the attention function.
        `image_grids`: for one crop batch padded to the grid `grids[0]`, each image's own grid at its top left; the
        other patches are hidden as attention keys, and each image's patches get the RoPE of its own grid.
        """
        last = len(self.blocks) - 1 if stop_after is None else stop_after

        def all_ropes() -> list[tuple[torch.Tensor, torch.Tensor]]:
            if image_grids is None:
                return [self.rope_embed(h, w) for h, w in grids]
            return [self.rope_embed.forward_padded(image_grids, *grids[0])]

        ropes = None if self.rope_embed.augments else all_ropes()
        key_masks = None
        if image_grids is not None:
            valid = grid_masks(image_grids, *grids[0], device=xs[0].device).flatten(1)
            valid = torch.cat([valid.new_ones(len(valid), self.num_prefix_tokens), valid], dim=1)
            implementation = self.blocks[0].attn.implementation(kwargs.get("output_attentions", False))
            key_masks = [key_padding_mask(implementation, valid, xs[0].dtype)]
        collected: dict[int, list[torch.Tensor]] = {}
        attentions: list[list[torch.Tensor]] = []
        sink = attentions if kwargs.get("output_attentions") else None
        for i, block in enumerate(self.blocks[: last + 1]):
            block_ropes = ropes if ropes is not None else all_ropes()
            xs = block(xs, block_ropes, attentions=sink, key_masks=key_masks, **kwargs)
            if i in collect:
                collected[i] = xs
        return xs, collected, attentions

    def _output(
        self, prenorm: torch.Tensor, local_crops: bool, hidden_states=None, attentions=None, patch_mask=None
    ) -> Dinov3HfViTModelOutput:
        normed = self.final_norm(prenorm, local_crops)
        split = self.num_prefix_tokens
        return Dinov3HfViTModelOutput(
            last_hidden_state=normed,
            pooler_output=normed[:, 0],
            register_tokens=normed[:, 1:split],
            patch_tokens=normed[:, split:],
            prenorm_hidden_state=prenorm,
            hidden_states=hidden_states,
            attentions=attentions,
            patch_mask=patch_mask,
        )

    # -- forward ----------------------------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor | Sequence[torch.Tensor],
        bool_masked_pos: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Dinov3HfViTModelOutput | list[Dinov3HfViTModelOutput] | tuple:
        r"""
        pixel_values: [B, C, H, W], or a list of such tensors (e.g. [global crops, local crops]) that run through
            the blocks together and return one output each. In training, the second list entry counts as the local
            crops for `local_cls_norm`.
        bool_masked_pos: [B, N] or [B, H/p, W/p] booleans; True replaces that patch with the mask token.
            With a list input, a list of the same length (entries may be None).
        output_hidden_states: return the embedding output and every block's output (pre-norm).
        output_attentions: return every block's attention probabilities (computed by eager attention).
        pixel_mask: (B, H, W), 1 on each image's real pixels (a top-left h x w block, h and w multiples of the patch
            size), 0 on the padding, as the image processor returns with `do_pad=True`: a mixed-size batch in one
            forward. Padded patches are hidden as attention keys in every block and each image's patches get the
            RoPE coordinates of its own grid, so each image gets the output of a forward on its real pixels alone
            (up to float rounding); the output's `patch_mask` marks its patches and `unpad()` splits it per image.
        kwargs: transformers' attention keyword arguments (`TransformersKwargs`), passed to the attention function;
            any other name raises a TypeError.
        """
        check_kwargs(self, kwargs)
        grids = None if pixel_mask is None else image_grids(pixel_mask, pixel_values, self.config.patch_size)
        if isinstance(pixel_values, (list, tuple)):
            if output_hidden_states or output_attentions:
                raise ValueError(
                    "output_hidden_states and output_attentions are not returned for a list of crop batches; call the "
                    "model on each batch (a tensor) to get them."
                )
            return self.forward_list(pixel_values, bool_masked_pos)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        x, grid_h, grid_w = self.prepare_tokens(pixel_values, bool_masked_pos)
        collect = range(len(self.blocks)) if output_hidden_states else ()
        (prenorm,), collected, attentions = self.run_blocks(
            [x], [(grid_h, grid_w)], collect=collect, image_grids=grids, output_attentions=output_attentions, **kwargs
        )
        hidden_states = (x, *(collected[i][0] for i in collect)) if output_hidden_states else None
        output = self._output(
            prenorm,
            local_crops=False,
            hidden_states=hidden_states,
            attentions=tuple(a[0] for a in attentions) if output_attentions else None,
            patch_mask=None if grids is None else grid_masks(grids, grid_h, grid_w, device=x.device),
        )
        return output if return_dict else output.to_tuple()

    def forward_list(
        self, pixel_values: Sequence[torch.Tensor], bool_masked_pos: Sequence[torch.Tensor | None] | None = None
    ) -> list[Dinov3HfViTModelOutput]:
        """One forward over several crop batches; equals separate forwards up to float rounding."""
        if bool_masked_pos is None:
            bool_masked_pos = [None] * len(pixel_values)
        if len(bool_masked_pos) != len(pixel_values):
            raise ValueError(
                f"Got {len(pixel_values)} crop batches but {len(bool_masked_pos)} masks; pass one mask (or None) per batch."
            )
        prepared = [self.prepare_tokens(x, m) for x, m in zip(pixel_values, bool_masked_pos)]
        grids = [(h, w) for _, h, w in prepared]
        prenorms, _, _ = self.run_blocks([x for x, _, _ in prepared], grids)
        return [self._output(p, local_crops=i == 1) for i, p in enumerate(prenorms)]

    def get_intermediate_layers(
        self,
        pixel_values: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        return_extra_tokens: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of selected blocks, with the official semantics.

        n: an int selects the last n blocks; a sequence selects 0-based block indices (negative ones count from the end).
        norm: apply the final LayerNorm to each selected output. reshape: patches as [B, D, H/p, W/p].
        Returns a tuple over layers of `patches`, or a tuple (patches, [cls], [registers]) when
        `return_class_token` / `return_extra_tokens` ask for them, in that order.
        """
        depth = len(self.blocks)
        indices = list(range(depth - n, depth)) if isinstance(n, int) else [i % depth if i < 0 else i for i in n]
        bad = [i for i in indices if not 0 <= i < depth]
        if bad or (isinstance(n, int) and not 1 <= n <= depth):
            raise ValueError(f"Layer selection n={n} is out of range for a model with {depth} blocks.")
        x, grid_h, grid_w = self.prepare_tokens(pixel_values)
        _, collected, _ = self.run_blocks([x], [(grid_h, grid_w)], collect=indices, stop_after=max(indices))
        split = self.num_prefix_tokens
        results = []
        for i in indices:
            out = collected[i][0]
            if norm:
                out = self.norm(out)
            cls, registers, patches = out[:, 0], out[:, 1:split], out[:, split:]
            if reshape:
                patches = patches.reshape(out.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()
            extras = ([cls] if return_class_token else []) + ([registers] if return_extra_tokens else [])
            results.append(tuple([patches, *extras]) if extras else patches)
        return tuple(results)


class Dinov3HfViTBackbone(BackboneMixin, Dinov3HfViTModel):
    """AutoBackbone view of the ViT: per selected stage (0 = patch embedding, i = block i) a feature map.

    `config.apply_layernorm` applies the final norm to each map; `config.reshape_hidden_states=True` returns
    NCHW patch maps (UperNet, Mask2Former), False returns (B, 1 + N, C) CLS + patch tokens (DPT).
    With `config.pyramid_strides`, the selected stages feed the simple feature pyramid (`feature_pyramid.py`) and
    the feature maps are its levels, ascending strides, `channels == [pyramid_channels] * len(pyramid_strides)`.
    `output_hidden_states` / `output_attentions` default to the config's flags, as in `Dinov3HfViTModel`.
    """

    def __init__(self, config: Dinov3HfViTConfig):
        super().__init__(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        if config.pyramid_strides is not None:
            config.check_pyramid()
            self.pyramid = Dinov3HfViTFeaturePyramid(
                config.hidden_size, config.patch_size, config.pyramid_strides, config.pyramid_channels
            )
            self.post_init()  # initialises the pyramid only: the ViT's modules are marked initialised already

    @property
    def channels(self) -> list[int]:
        """Channels of each feature map."""
        if self.config.pyramid_strides is None:
            return super().channels
        return [self.config.pyramid_channels] * len(self.config.pyramid_strides)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BackboneOutput | tuple:
        check_kwargs(self, kwargs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        x, grid_h, grid_w = self.prepare_tokens(pixel_values)
        blocks = range(len(self.blocks))
        _, collected, attentions = self.run_blocks(
            [x], [(grid_h, grid_w)], collect=blocks, output_attentions=output_attentions, **kwargs
        )
        stages = [x, *(collected[i][0] for i in blocks)]
        split = self.num_prefix_tokens
        feature_maps = []
        for index in self.out_indices:
            hidden = stages[index]
            if self.config.apply_layernorm:
                hidden = self.norm(hidden)
            if self.config.reshape_hidden_states:
                patches = hidden[:, split:]
                fmap = patches.reshape(hidden.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()
            else:
                fmap = torch.cat([hidden[:, :1], hidden[:, split:]], dim=1)
            feature_maps.append(fmap)
        if self.config.pyramid_strides is not None:
            feature_maps = self.pyramid(feature_maps)
        output = BackboneOutput(
            feature_maps=tuple(feature_maps),
            hidden_states=tuple(stages) if output_hidden_states else None,
            attentions=tuple(a[0] for a in attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


def check_kwargs(model: nn.Module, kwargs: dict) -> None:
    """Raise a TypeError naming the first keyword argument of `forward` that is not one of transformers'
    attention keyword arguments (`TransformersKwargs`)."""
    known = TransformersKwargs.__optional_keys__ | TransformersKwargs.__required_keys__
    unknown = [name for name in kwargs if name not in known]
    if unknown:
        raise TypeError(
            f"{type(model).__name__}.forward() got an unexpected keyword argument {unknown[0]!r}. Besides its named "
            f"arguments it takes only transformers' attention keyword arguments: {', '.join(sorted(known))}."
        )
