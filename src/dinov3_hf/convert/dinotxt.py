"""The official dino.txt checkpoint (hub `dinov3/hub/dinotxt.py`) <-> our [`Dinov3HfDinoTxtModel`].

The release is two files: `dinov3_vitl16_dinotxt_vision_head_and_text_encoder-a442d8f5.pth` (vision head, text
encoder and logit scale) and the ViT-L/16 LVD backbone `.pth`. Official -> ours:

    logit_scale [1]                                          -> logit_scale []
    visual_model.head.<k>                                    -> vision_head.<k>   (same block names)
    text_model.backbone.token_embedding.weight               -> text_model.token_embedding.weight
    text_model.backbone.positional_embedding                 -> text_model.positional_embedding
    text_model.backbone.blocks.i.attention_norm.*            -> text_model.blocks.i.norm1.*
    text_model.backbone.blocks.i.attention.{qkv,proj}.*      -> text_model.blocks.i.attn.{qkv,proj}.*
    text_model.backbone.blocks.i.ffn_norm.*                  -> text_model.blocks.i.norm2.*
    text_model.backbone.blocks.i.feed_forward.{fc1,fc2}.*    -> text_model.blocks.i.mlp.{fc1,fc2}.*
    text_model.backbone.ln_final.*                           -> text_model.ln_final.*
    text_model.head.linear_projection.weight                 -> text_projection.weight
    (backbone file, any format `load_model` reads)           -> backbone.<k>

Loading is strict: the head file's keys and shapes must be exactly those of the config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..models.dinotxt import DINOTXT_PRESETS, Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel
from ..models.vit import Dinov3HfViTModel
from .checkpoints import check_state, load_model
from .sources import CheckpointError, load_pth, rename_key

# (ours, official) regex pairs for the non-backbone keys.
_OFFICIAL_NAMES = [
    (r"vision_head\.(.+)", r"visual_model.head.\1"),
    (r"text_model\.(token_embedding\.weight|positional_embedding|ln_final\.\w+)", r"text_model.backbone.\1"),
    (r"text_model\.blocks\.(\d+)\.norm1\.(\w+)", r"text_model.backbone.blocks.\1.attention_norm.\2"),
    (r"text_model\.blocks\.(\d+)\.attn\.(qkv|proj)\.(\w+)", r"text_model.backbone.blocks.\1.attention.\2.\3"),
    (r"text_model\.blocks\.(\d+)\.norm2\.(\w+)", r"text_model.backbone.blocks.\1.ffn_norm.\2"),
    (r"text_model\.blocks\.(\d+)\.mlp\.(fc[12])\.(\w+)", r"text_model.backbone.blocks.\1.feed_forward.\2.\3"),
    (r"text_projection\.weight", r"text_model.head.linear_projection.weight"),
    (r"logit_scale", r"logit_scale"),
]


def official_key(ours: str) -> str:
    """The official name of one of our non-backbone keys."""
    name = rename_key(ours, _OFFICIAL_NAMES)
    if name is None:
        raise KeyError(f"{ours!r} has no official dino.txt name.")
    return name


def official_layout(config: Dinov3HfDinoTxtConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{official key: (our key, official shape)} of the vision-head-and-text-encoder file for `config` (built on
    the meta device, so it costs no memory)."""
    with torch.device("meta"):
        model = Dinov3HfDinoTxtModel(config)
    return {
        official_key(k): (k, (1,) if k == "logit_scale" else tuple(t.shape))
        for k, t in model.state_dict().items()
        if not k.startswith("backbone.")
    }


def _count(keys, pattern: str) -> int:
    indices = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(indices) + 1 if indices else 0


def official_config(
    state: Mapping[str, torch.Tensor], arch: str, backbone_config, **overrides: Any
) -> Dinov3HfDinoTxtConfig:
    """The config of preset `arch` on `backbone_config`, with the sizes that the file's shapes fix read from it
    (text width, depth, vocabulary, context and MLP ratio, vision-head depth); head counts come from the preset or
    `overrides`."""
    if arch not in DINOTXT_PRESETS:
        raise CheckpointError(f"Unknown dino.txt preset {arch!r}; known: {', '.join(DINOTXT_PRESETS)}.")
    fields: dict[str, Any] = {}
    embedding = state.get("text_model.backbone.token_embedding.weight")
    if embedding is not None:
        fields["text_vocab_size"], fields["text_hidden_size"] = embedding.shape
    if (positions := state.get("text_model.backbone.positional_embedding")) is not None:
        fields["text_context_length"] = positions.shape[0]
    if (fc1 := state.get("text_model.backbone.blocks.0.feed_forward.fc1.weight")) is not None:
        fields["text_ffn_ratio"] = fc1.shape[0] / fc1.shape[1]
    fields["text_num_hidden_layers"] = _count(state, r"text_model\.backbone\.blocks\.(\d+)\.")
    fields["vision_head_layers"] = _count(state, r"visual_model\.head\.blocks\.(\d+)\.")
    return Dinov3HfDinoTxtConfig.from_preset(arch, backbone_config=backbone_config, **{**fields, **overrides})


def official_to_ours(state: Mapping[str, torch.Tensor], config: Dinov3HfDinoTxtConfig, what: str) -> dict:
    """Check the head-and-text file strictly against `config`; return its tensors under our keys."""
    layout = official_layout(config)
    check_state({k: tuple(v.shape) for k, v in state.items()}, {k: s for k, (_, s) in layout.items()}, what)
    return {ours: state[k].reshape(()) if ours == "logit_scale" else state[k] for k, (ours, _) in layout.items()}


def ours_to_official(model: Dinov3HfDinoTxtModel) -> dict[str, torch.Tensor]:
    """The official head-and-text state dict of our model (the backbone is saved separately, as upstream)."""
    state = model.state_dict()
    return {k: state[ours].detach().reshape(shape) for k, (ours, shape) in official_layout(model.config).items()}


def load_official_dinotxt(
    head: str | os.PathLike | Mapping[str, torch.Tensor],
    backbone: str | os.PathLike | Dinov3HfViTModel,
    arch: str = "dinov3_vitl16_dinotxt_tet1280d20h24l",
    backbone_arch: str | None = None,
    **overrides: Any,
) -> Dinov3HfDinoTxtModel:
    """Our dino.txt model from the official head-and-text file `head` (a `.pth` or its state dict) and `backbone` (a
    model, an official `.pth` read with `backbone_arch`, default the preset's ViT, or any folder `load_model` reads).
    `overrides` are config fields (e.g. head counts of a non-released text tower). Returned in eval mode."""
    what = f"dino.txt checkpoint {head}" if isinstance(head, (str, os.PathLike)) else "dino.txt state dict"
    state = load_pth(head) if isinstance(head, (str, os.PathLike)) else dict(head)
    if isinstance(backbone, (str, os.PathLike)):
        default_arch = DINOTXT_PRESETS.get(arch, {}).get("backbone_preset")
        backbone = load_model(backbone, arch=backbone_arch or default_arch)
    if not isinstance(backbone, Dinov3HfViTModel):
        raise CheckpointError(f"dino.txt needs a ViT backbone, got {type(backbone).__name__}.")
    config = official_config(state, arch, backbone.config, **overrides)
    ours = official_to_ours(state, config, what)
    ours.update({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
    with torch.device("meta"):
        model = Dinov3HfDinoTxtModel(config)
    model.load_state_dict(ours, strict=True, assign=True)
    model.set_backbone_frozen(config.freeze_backbone)
    return model.eval()
