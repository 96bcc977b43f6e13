"""The official ADE20K segmentor head file (`dinov3_vit7b16_ms`, `dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth`) <->
our [`Dinov3HfAdapterMask2FormerForUniversalSegmentation`].

The file is a bare state dict of the official `FeatureDecoder` (`dinov3/eval/segmentation/models/__init__.py`):
`segmentation_model.0.*` is the `DINOv3_Adapter`, `segmentation_model.1.{pixel_decoder,predictor}.*` the
`Mask2FormerHead`. The hub (`dinov3/hub/segmentors.py`) requires every non-backbone key (479 for the release) and
allows `segmentation_model.0.backbone.*` (the ViT) to be absent. Here:

- adapter keys map by identity to `model.pixel_level_module.encoder.*`;
- backbone keys `segmentation_model.0.backbone.*`, when the file has them, are loaded into the ViT
  (`model.pixel_level_module.encoder.backbone.*`, our ViT's keys are the official ones), strictly: all or none;
  without them the ViT keeps its weights. `save_official_head` writes the head alone, as the released file;
- the pixel decoder and predictor keys map onto transformers' Mask2Former names one to one (`_RENAMES`), except
  the decoder self-attention's packed `in_proj_weight` / `in_proj_bias` [3C, ...] (rows q, k, v), split into
  `q_proj` / `k_proj` / `v_proj`; the cross-attention is an `nn.MultiheadAttention` on both sides and is copied as is;
- transformers' `criterion.empty_weight` (ones, `no_object_weight` for the no-object class), absent from the file, is
  synthesised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.heads.adapter_mask2former import (
    Dinov3HfAdapterMask2FormerConfig,
    Dinov3HfAdapterMask2FormerForUniversalSegmentation,
)
from ..models.heads.vit_adapter import Dinov3HfViTAdapterConfig, four_even_intervals
from ..models.vit import Dinov3HfViTConfig
from .checkpoints import check_state
from .detection_head import describe_checkpoint
from .sources import CheckpointError, load_pth

ADAPTER = "segmentation_model.0."
BACKBONE = ADAPTER + "backbone."
_PD, _PR = "segmentation_model.1.pixel_decoder.", "segmentation_model.1.predictor."
_OURS_ADAPTER = "model.pixel_level_module.encoder."
_OURS_BACKBONE = _OURS_ADAPTER + "backbone."
_DEC, _TM = "model.pixel_level_module.decoder.", "model.transformer_module."
_LAYER = re.escape(_TM) + r"decoder\.layers\.(\d+)\."
_SA, _CA = f"{_PR}transformer_self_attention_layers.", f"{_PR}transformer_cross_attention_layers."
_SELF_ATTN_QKV = re.compile(_LAYER + r"self_attn\.([qkv])_proj\.(weight|bias)")
# (our key regex, official key template): one-to-one tensors of the pixel decoder and the predictor
_RENAMES = [
    (rf"{_DEC}input_projections\.(\d+)\.([01])\.(\w+)", rf"{_PD}input_convs.\1.\2.\3"),
    (rf"{_DEC}level_embed", f"{_PD}encoder.level_encoding"),
    (rf"{_DEC}encoder\.layers\.(\d+)\.self_attn\.(\w+)\.(\w+)", rf"{_PD}encoder.encoder.layers.\1.self_attn.\2.\3"),
    (rf"{_DEC}encoder\.layers\.(\d+)\.self_attn_layer_norm\.(\w+)", rf"{_PD}encoder.encoder.layers.\1.norm1.\2"),
    (rf"{_DEC}encoder\.layers\.(\d+)\.fc1\.(\w+)", rf"{_PD}encoder.encoder.layers.\1.linear1.\2"),
    (rf"{_DEC}encoder\.layers\.(\d+)\.fc2\.(\w+)", rf"{_PD}encoder.encoder.layers.\1.linear2.\2"),
    (rf"{_DEC}encoder\.layers\.(\d+)\.final_layer_norm\.(\w+)", rf"{_PD}encoder.encoder.layers.\1.norm2.\2"),
    (rf"{_DEC}mask_projection\.(\w+)", rf"{_PD}mask_feature.\1"),
    (rf"{_DEC}adapter_1\.0\.weight", f"{_PD}lateral_convs.0.weight"),
    (rf"{_DEC}adapter_1\.1\.(\w+)", rf"{_PD}lateral_convs.0.norm.\1"),
    (rf"{_DEC}layer_1\.0\.weight", f"{_PD}output_convs.0.weight"),
    (rf"{_DEC}layer_1\.1\.(\w+)", rf"{_PD}output_convs.0.norm.\1"),
    (rf"{_LAYER}cross_attn\.(.+)", rf"{_CA}\1.multihead_attn.\2"),
    (rf"{_LAYER}cross_attn_layer_norm\.(\w+)", rf"{_CA}\1.norm.\2"),
    (rf"{_LAYER}self_attn\.out_proj\.(\w+)", rf"{_SA}\1.self_attn.out_proj.\2"),
    (rf"{_LAYER}self_attn_layer_norm\.(\w+)", rf"{_SA}\1.norm.\2"),
    (rf"{_LAYER}fc1\.(\w+)", rf"{_PR}transformer_ffn_layers.\1.linear1.\2"),
    (rf"{_LAYER}fc2\.(\w+)", rf"{_PR}transformer_ffn_layers.\1.linear2.\2"),
    (rf"{_LAYER}final_layer_norm\.(\w+)", rf"{_PR}transformer_ffn_layers.\1.norm.\2"),
    (rf"{_TM}decoder\.layernorm\.(\w+)", rf"{_PR}post_norm.\1"),
    (rf"{_TM}decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.(\w+)", rf"{_PR}mask_embed.layers.\1.\2"),
    (rf"{_TM}queries_features\.weight", f"{_PR}query_feat.weight"),
    (rf"{_TM}queries_embedder\.weight", f"{_PR}query_embed.weight"),
    (rf"{_TM}level_embed\.weight", f"{_PR}level_embed.weight"),
    (r"class_predictor\.(\w+)", rf"{_PR}class_embed.\1"),
]
_RENAMES_COMPILED = [(re.compile(ours), official) for ours, official in _RENAMES]


def _official_name(key: str) -> str | None:
    """The official key of one of our keys (None for `criterion.empty_weight` and the split q/k/v projections)."""
    if key.startswith(_OURS_ADAPTER):
        return ADAPTER + key[len(_OURS_ADAPTER) :]
    for pattern, official in _RENAMES_COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(official, key)
    return None


def _layout(model_state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """{official key: our keys} of a model's head (backbone excluded): one key, or three (q, k, v) for an in_proj."""
    layout: dict[str, tuple[str, ...]] = {}
    for key in model_state:
        if key.startswith(_OURS_BACKBONE) or key == "criterion.empty_weight":
            continue
        match = _SELF_ATTN_QKV.fullmatch(key)
        if match:
            layer, _, kind = match.groups()
            prefix = f"{_TM}decoder.layers.{layer}.self_attn."
            official = f"{_SA}{layer}.self_attn.in_proj_{kind}"
            layout[official] = tuple(f"{prefix}{p}_proj.{kind}" for p in "qkv")
            continue
        official = _official_name(key)
        if official is None:
            raise CheckpointError(f"No official name is known for the key {key}.")  # pragma: no cover - layout bug
        layout[official] = (key,)
    return layout


# the adapter fields among `official_segmentor_config_from_state`'s overrides (the rest are Mask2Former fields)
_ADAPTER_FIELDS = ("interaction_indexes", "conv_inplane", "deform_num_heads", "n_points", "deform_ratio", "cffn_ratio")
# transformers' pixel-decoder encoder, as the official `MSDeformAttnPixelDecoder`: 3 feature levels, 4 sampling points
_ENCODER_LEVELS, _ENCODER_POINTS = 3, 4


def _not_a_segmentor(state: Mapping[str, torch.Tensor], what: str) -> CheckpointError:
    return CheckpointError(
        f"The {what} is not the ADE20K Mask2Former segmentor's (dinov3_vit7b16_ms): it has none of its "
        f"{ADAPTER}* (adapter), {_PD}* or {_PR}* keys. It looks like {describe_checkpoint(state)}."
    )


def official_segmentor_config_from_state(
    state: Mapping[str, torch.Tensor], backbone_config: Dinov3HfViTConfig, **fields: Any
) -> Dinov3HfAdapterMask2FormerConfig:
    """The segmentor config that fits an official segmentor state dict on the ViT `backbone_config`, read from the
    key shapes: hidden_dim and num_queries (`query_feat` [Q, C]), num_labels (`class_embed` rows - 1), the FFN widths,
    the encoder / decoder layer counts, the attention heads (pixel-decoder `attention_weights` rows / (3 levels x 4
    points)), the adapter's conv_inplane, deform_ratio, cffn_ratio and n_points (for `deform_num_heads`, default 16).
    The file does not record the ViT blocks the adapter read: `interaction_indexes` defaults to the official rule
    (`four_even_intervals`, [9, 19, 29, 39] on the 7B). `fields` win over everything inferred. On the release file
    this gives `official_head_config("dinov3_vit7b16_ms")`."""
    if not isinstance(backbone_config, Dinov3HfViTConfig):
        raise CheckpointError(
            "The segmentor's ViT-Adapter runs on a DINOv3 ViT; the backbone given is a "
            f"{type(backbone_config).__name__}."
        )
    extractor = f"{ADAPTER}interactions.0.extractor."
    needed = {
        "level_embed": f"{ADAPTER}level_embed",
        "stem": f"{ADAPTER}spm.stem.0.weight",
        "value": f"{extractor}attn.value_proj.weight",
        "weights": f"{extractor}attn.attention_weights.weight",
        "cffn": f"{extractor}ffn.fc1.weight",
        "queries": f"{_PR}query_feat.weight",
        "classes": f"{_PR}class_embed.weight",
        "ffn": f"{_PR}transformer_ffn_layers.0.linear1.weight",
        "encoder_ffn": f"{_PD}encoder.encoder.layers.0.linear1.weight",
        "encoder_weights": f"{_PD}encoder.encoder.layers.0.self_attn.attention_weights.weight",
    }
    if not any(k.startswith((ADAPTER, _PD, _PR)) for k in state):
        raise _not_a_segmentor(state, "state dict")
    missing = [key for key in needed.values() if key not in state]
    if missing:
        raise CheckpointError(
            f"The segmentor state dict lacks {', '.join(missing)}, needed to read its sizes; it looks like "
            f"{describe_checkpoint(state)}."
        )
    shape = {name: tuple(state[key].shape) for name, key in needed.items()}
    width = backbone_config.hidden_size
    if shape["level_embed"][1] != width:
        raise CheckpointError(
            f"The segmentor's adapter was trained on a ViT of width {shape['level_embed'][1]} ({ADAPTER}level_embed "
            f"{list(shape['level_embed'])}); the backbone given has hidden_size={width}. Pass the backbone it was "
            "trained with."
        )

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})

    deform_num_heads = fields.get("deform_num_heads", 16)
    adapter = dict(
        vit_config=backbone_config,
        interaction_indexes=four_even_intervals(backbone_config.num_hidden_layers),
        conv_inplane=shape["stem"][0],
        deform_num_heads=deform_num_heads,
        n_points=shape["weights"][0] // deform_num_heads,  # one level per extractor
        deform_ratio=shape["value"][0] / width,
        cffn_ratio=shape["cffn"][0] / width,
    )
    adapter.update({k: v for k, v in fields.items() if k in _ADAPTER_FIELDS})
    num_queries, hidden_dim = shape["queries"]
    inferred = dict(
        hidden_dim=hidden_dim,
        num_queries=num_queries,
        num_labels=shape["classes"][0] - 1,
        dim_feedforward=shape["ffn"][0],
        encoder_feedforward_dim=shape["encoder_ffn"][0],
        num_attention_heads=shape["encoder_weights"][0] // (_ENCODER_LEVELS * _ENCODER_POINTS),
        encoder_layers=count(f"{_PD}encoder.encoder.layers."),
        decoder_layers=count(f"{_PR}transformer_self_attention_layers.") + 1,  # transformers counts one more
    )
    inferred.update({k: v for k, v in fields.items() if k not in _ADAPTER_FIELDS})
    try:
        return Dinov3HfAdapterMask2FormerConfig(backbone_config=Dinov3HfViTAdapterConfig(**adapter), **inferred)
    except ValueError as err:
        raise CheckpointError(f"The segmentor head does not fit this backbone: {err}") from None


def _meta_model(config: Dinov3HfAdapterMask2FormerConfig) -> Dinov3HfAdapterMask2FormerForUniversalSegmentation:
    with torch.device("meta"):
        return Dinov3HfAdapterMask2FormerForUniversalSegmentation(config)


def _packed_shapes(model_state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for official, ours in _layout(model_state).items():
        shape = tuple(model_state[ours[0]].shape)
        shapes[official] = (sum(model_state[k].shape[0] for k in ours), *shape[1:]) if len(ours) == 3 else shape
    return shapes


def official_segmentor_shapes(config: Dinov3HfAdapterMask2FormerConfig) -> dict[str, tuple[int, ...]]:
    """{official key: shape} of the head file for `config` (backbone keys excluded; built on the meta device)."""
    return _packed_shapes(_meta_model(config).state_dict())


def official_segmentor_to_ours(
    state: Mapping[str, torch.Tensor], config: Dinov3HfAdapterMask2FormerConfig, what: str = "official segmentor head"
) -> dict[str, torch.Tensor]:
    """Check an official segmentor state dict strictly against the layout for `config`; return it under our keys
    (backbone keys, if any, under the ViT's; the self-attention in_proj split in q, k, v; `criterion.empty_weight`
    added)."""
    if not any(k.startswith((ADAPTER, _PD, _PR)) for k in state):
        raise _not_a_segmentor(state, what)
    model_state = _meta_model(config).state_dict()
    layout = _layout(model_state)
    head = {k: v for k, v in state.items() if not k.startswith(BACKBONE)}
    backbone = {k[len(BACKBONE) :]: v for k, v in state.items() if k.startswith(BACKBONE)}
    vit = {k[len(_OURS_BACKBONE) :]: tuple(v.shape) for k, v in model_state.items() if k.startswith(_OURS_BACKBONE)}
    try:
        check_state({k: tuple(v.shape) for k, v in head.items()}, _packed_shapes(model_state), what)
        if backbone:
            check_state({k: tuple(v.shape) for k, v in backbone.items()}, vit, f"{what}'s ViT ({BACKBONE}*)")
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}\n  The layout follows the config: ViT width {config.backbone_config.hidden_size} and "
            f"interaction_indexes, hidden_dim={config.hidden_dim}, dim_feedforward={config.dim_feedforward}, "
            f"decoder_layers={config.decoder_layers} (official layers + 1), num_queries={config.num_queries}, "
            f"num_labels={config.num_labels}; `official_head_config('dinov3_vit7b16_ms')` is the release, and "
            f"`official_segmentor_config_from_state` reads the sizes from a file.\n  "
            f"The file looks like {describe_checkpoint(state)}."
        ) from None
    ours: dict[str, torch.Tensor] = {}
    for official, keys in layout.items():
        tensor = head[official]
        parts = tensor.split([model_state[k].shape[0] for k in keys]) if len(keys) == 3 else (tensor,)
        ours.update(zip(keys, parts))
    ours.update({_OURS_BACKBONE + k: v for k, v in backbone.items()})
    empty_weight = torch.ones(config.num_labels + 1)
    empty_weight[-1] = config.no_object_weight
    ours["criterion.empty_weight"] = empty_weight
    return ours


def ours_to_official_segmentor(model: Dinov3HfAdapterMask2FormerForUniversalSegmentation) -> dict[str, torch.Tensor]:
    """The official head state dict of `model` (backbone excluded), in-projections packed as rows q, k, v."""
    state = model.state_dict()
    return {
        official: (torch.cat([state[k] for k in keys]) if len(keys) == 3 else state[keys[0]]).detach()
        for official, keys in _layout(state).items()
    }


def load_official_segmentor(
    model: Dinov3HfAdapterMask2FormerForUniversalSegmentation, src: str | os.PathLike | Mapping[str, torch.Tensor]
) -> Dinov3HfAdapterMask2FormerForUniversalSegmentation:
    """Load the official segmentor file (a `.pth` path or its state dict) into `model`, strictly; a model on the meta
    device gets the tensors assigned. Returns the model."""
    what = f"official head checkpoint {src}" if isinstance(src, (str, os.PathLike)) else "official head state dict"
    state = load_pth(src, backbone_only=False) if isinstance(src, (str, os.PathLike)) else src
    ours = official_segmentor_to_ours(state, model.config, what)
    assign = any(t.is_meta for t in model.state_dict().values())
    with torch.no_grad():
        if assign:
            model.load_state_dict(ours, strict=False, assign=True)
        else:
            current = model.state_dict()
            for key, tensor in ours.items():
                current[key].copy_(tensor)
    return model


def save_official_segmentor(model: Dinov3HfAdapterMask2FormerForUniversalSegmentation, dst: str | os.PathLike) -> Path:
    """Write `model`'s head (adapter + Mask2Former, no ViT) as the official head `.pth`: a bare state dict."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone().contiguous() for k, v in ours_to_official_segmentor(model).items()}, dst)
    return dst


__all__ = [
    "load_official_segmentor",
    "official_segmentor_config_from_state",
    "official_segmentor_shapes",
    "official_segmentor_to_ours",
    "ours_to_official_segmentor",
    "save_official_segmentor",
]
