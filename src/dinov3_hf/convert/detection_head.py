"""The official COCO detector head file (`dinov3_vit7b16_de`, `dinov3_vit7b16_coco2017_detr_head-b0235ff7.pth`)
<-> [`Dinov3HfForPlainDetrDetection`].

The hub (`dinov3/hub/detectors.py`) loads `torch.load(file)["model"]` into `PlainDETRReParam` non-strictly, so the
file's exact key set is not fixed by code. Our modules carry the official names, so the head keys map by identity;
this loader accepts, strictly:

- the head keys of `PlainDETRReParam.state_dict()`: `transformer.*`, `class_embed.*`, `bbox_embed.*`,
  `query_embed.weight`, `input_proj.0.*`;
- with or without the aliases `transformer.decoder.class_embed.*` / `transformer.decoder.bbox_embed.*` (the same
  modules as the top-level ones in the official model, so when present they must equal them);
- with or without the ViT under `backbone.0._backbone.backbone.<official ViT key>`: `backbone="load"` (default)
  checks those keys strictly against the ViT and loads them into `model.backbone`, `backbone="drop"` ignores them;
- bare or inside a container `{"model": ...}`.

Export writes `{"model": state dict}` with the head keys and the aliases, as `PlainDETRReParam.state_dict()` lists
them minus the backbone (with `include_backbone=True`, the ViT under its official prefix too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from ..models.heads.plain_detr import Dinov3HfForPlainDetrDetection, Dinov3HfPlainDetrConfig
from .checkpoints import _foreign_shapes, check_state, family_of
from .sources import CheckpointError, load_pth

OFFICIAL_BACKBONE_PREFIX = "backbone.0._backbone.backbone."
ALIAS_PREFIXES = ("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed.")
# key markers -> the official checkpoint they come from, to name a wrong file in the error
_HEAD_SIGNATURES = (  # heads first: their files may also hold backbone keys
    ("transformer.decoder.layers.", "the Plain-DETR detector (dinov3_vit7b16_de)"),
    ("segmentation_model.0.", "the ADE20K Mask2Former segmentor (dinov3_vit7b16_ms)"),
    ("segmentation_model.1.", "a linear segmentation probe"),
    ("reassemble_blocks.", "a DPT depth head (dinov3_vit7b16_dd / dinov3_vitl16_chmv2)"),
    ("conv_depth.head.", "a DPT depth head (dinov3_vit7b16_dd / dinov3_vitl16_chmv2)"),
    ("conv_depth.weight", "a linear depth probe"),
    ("blocks.0.", "a ViT backbone checkpoint (no head)"),
    ("stages.0.", "a ConvNeXt backbone checkpoint (no head)"),
)


def describe_checkpoint(keys) -> str:
    """A short name for the official checkpoint kind that a key set looks like."""
    keys = list(keys)
    if set(keys) == {"weight", "bias"}:
        return "the linear classifier (dinov3_vit7b16_lc)"
    for marker, name in _HEAD_SIGNATURES:
        if any(k.startswith(marker) or f".{marker}" in k for k in keys):
            return name
    return f"an unknown layout (first keys: {', '.join(sorted(keys)[:4])})"


def _is_alias(key: str) -> bool:
    return key.startswith(ALIAS_PREFIXES)


def _alias_source(key: str) -> str:
    return key[len("transformer.decoder.") :]


def plain_detr_head_shapes(config: Dinov3HfPlainDetrConfig, aliases: bool = True) -> dict[str, tuple[int, ...]]:
    """{official key: shape} of the detector head for `config` (built on the meta device), with or without the
    decoder's alias keys."""
    with torch.device("meta"):
        model = Dinov3HfForPlainDetrDetection(config)
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.") and (aliases or not _is_alias(k))
    }


def _backbone_shapes(config: Dinov3HfPlainDetrConfig) -> dict[str, tuple[int, ...]]:
    backbone = config.backbone_config
    return _foreign_shapes(family_of(backbone), backbone, "official")


def read_plain_detr_file(src: str | os.PathLike | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of a detector file (`.pth`, bare or under "model"), or a given state dict, every key kept."""
    return dict(load_pth(src, backbone_only=False) if isinstance(src, (str, os.PathLike)) else src)


def plain_detr_config_from_state(
    state: Mapping[str, torch.Tensor], backbone_config, **fields
) -> Dinov3HfPlainDetrConfig:
    """The detector config that fits a detector state dict on `backbone_config`: hidden_dim, nheads,
    dim_feedforward, decoder_rpe_hidden_dim, num_labels and the layer counts from the key shapes; the
    `query_embed` rows split evenly into one-to-one and one-to-many queries (the release: 1500 + 1500).
    `fields` (e.g. `layers`, `n_windows_sqrt`, `num_queries_one2one`) win over the inferred ones."""
    rpe_key = "transformer.decoder.layers.0.cross_attn.cpb_mlp1.2.weight"
    if rpe_key not in state or "query_embed.weight" not in state:
        raise CheckpointError(
            f"The state dict is not a Plain-DETR detector head (no {rpe_key}); it looks like "
            f"{describe_checkpoint(state)}."
        )

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})

    rows, hidden = state["query_embed.weight"].shape
    nheads, rpe_hidden = state[rpe_key].shape
    inferred = dict(
        hidden_dim=hidden,
        nheads=nheads,
        decoder_rpe_hidden_dim=rpe_hidden,
        dim_feedforward=state["transformer.decoder.layers.0.linear1.weight"].shape[0],
        num_encoder_layers=count("transformer.encoder.layers."),
        dec_layers=count("transformer.decoder.layers."),
        num_labels=state["class_embed.0.weight"].shape[0],
        num_queries_one2one=rows - rows // 2,
        num_queries_one2many=rows // 2,
    )
    if "num_queries_one2one" in fields and "num_queries_one2many" not in fields:
        fields["num_queries_one2many"] = rows - fields["num_queries_one2one"]
    return Dinov3HfPlainDetrConfig(backbone_config=backbone_config, **{**inferred, **fields})


def plain_detr_official_to_ours(
    state: Mapping[str, torch.Tensor],
    config: Dinov3HfPlainDetrConfig,
    what: str = "official detector head",
    backbone: Literal["load", "drop"] = "load",
) -> dict[str, torch.Tensor]:
    """Check a detector state dict strictly (see the module docstring); return {our key: tensor}: the head keys
    without aliases, plus `backbone.<key>` for routed ViT keys when `backbone="load"`."""
    if backbone not in ("load", "drop"):
        raise ValueError(f"backbone must be 'load' or 'drop', got {backbone!r}.")
    head = {k: v for k, v in state.items() if not k.startswith(OFFICIAL_BACKBONE_PREFIX)}
    vit = {k[len(OFFICIAL_BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(OFFICIAL_BACKBONE_PREFIX)}
    with_aliases = any(_is_alias(k) for k in head)
    expected = plain_detr_head_shapes(config, aliases=with_aliases)
    try:
        check_state({k: tuple(v.shape) for k, v in head.items()}, expected, what)
    except CheckpointError as err:
        found = describe_checkpoint(state)
        raise CheckpointError(
            f"{err}\n  The file looks like {found}. The detector layout follows the config fields num_labels, "
            "hidden_dim, nheads, dim_feedforward, num_encoder_layers, dec_layers, num_queries_one2one + "
            "num_queries_one2many, decoder_rpe_hidden_dim, layers and the ViT width; "
            "`official_head_config('dinov3_vit7b16_de')` gives the release."
        ) from None
    differing = [k for k in head if _is_alias(k) and not torch.equal(head[k], head[_alias_source(k)])]
    if differing:
        raise CheckpointError(
            f"The {what} has decoder aliases that differ from the top-level heads they share modules with in the "
            f"official model: {', '.join(differing[:4])}{' ...' if len(differing) > 4 else ''}."
        )
    ours = {k: v for k, v in head.items() if not _is_alias(k)}
    if vit and backbone == "load":
        check_state(
            {k: tuple(v.shape) for k, v in vit.items()}, _backbone_shapes(config), f"{what} (its backbone keys)"
        )
        ours.update({f"backbone.{k}": v for k, v in vit.items()})
    return ours


def load_plain_detr_head(
    model: Dinov3HfForPlainDetrDetection,
    src: str | os.PathLike | Mapping[str, torch.Tensor],
    backbone: Literal["load", "drop"] = "load",
) -> Dinov3HfForPlainDetrDetection:
    """Load a detector head file (path or state dict) into `model` strictly; returns the model."""
    what = f"official detector checkpoint {src}" if isinstance(src, (str, os.PathLike)) else "detector state dict"
    ours = plain_detr_official_to_ours(read_plain_detr_file(src), model.config, what, backbone)
    current = model.state_dict()
    if any(current[k].is_meta for k in ours):
        model.load_state_dict(ours, strict=False, assign=True)  # the decoder's aliases are the same modules
    else:
        with torch.no_grad():
            for key, tensor in ours.items():
                current[key].copy_(tensor)
    if model.config.freeze_backbone:
        model.set_backbone_frozen(True)
    return model


def plain_detr_to_official(model: Dinov3HfForPlainDetrDetection, include_backbone: bool = False) -> dict:
    """The official detector state dict (head keys with the decoder aliases; the ViT under
    `backbone.0._backbone.backbone.` with `include_backbone`), tensors detached."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("backbone."):
            if include_backbone:
                state[OFFICIAL_BACKBONE_PREFIX + key[len("backbone.") :]] = tensor.detach()
        else:
            state[key] = tensor.detach()
    return state


def save_plain_detr_head(
    model: Dinov3HfForPlainDetrDetection, dst: str | os.PathLike, include_backbone: bool = False
) -> Path:
    """Write `{"model": official detector state dict}` (the container the hub reads) to `dst`."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone().contiguous() for k, v in plain_detr_to_official(model, include_backbone).items()}
    torch.save({"model": state}, dst)
    return dst
