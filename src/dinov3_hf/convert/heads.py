"""Official DINOv3 head checkpoints (official_dinov3.md §5): loading them strictly into our task models, and back.

The released head files hold the head alone (the backbone comes from its own checkpoint):

- `dinov3_vit7b16_lc` (`dinov3_vit7b16_imagenet1k_linear_head-90d8ed92.pth`): the state dict of a bare
  `nn.Linear(8192, 1000)`, keys `weight` [1000, 8192] and `bias` [1000] (the official hub code builds
  `nn.Linear(2 * embed_dim, 1000)` and loads the file into it strictly). Ours: `classifier.weight` / `.bias` of
  [`Dinov3HfForImageClassification`], on concat(CLS, mean patch token) as upstream.
- `dinov3_vit7b16_dd` (`dinov3_vit7b16_synthmix_dpt_head-02040be1.pth`) and `dinov3_vitl16_chmv2`
  (`chmv2/dinov3_vitl16_chmv2_dpt_head-3703d643.pth`): the state dict of the official `DPTHead` (`depther.decoder`,
  loaded strictly upstream). Ours: `dpt_head.<same key>` of [`Dinov3HfForDepthEstimation`] with `head_type="dpt"`,
  whose module tree reproduces the official one; the key list is documented in `models/heads/dpt.py`.

The research notes give the architecture of these heads but not their parameter names; the classifier's keys follow
from the hub code (a bare `nn.Linear`), the DPT keys from the official module structure (`reassemble_blocks`,
`convs`, `fusion_blocks`, `project`, `conv_depth`, with mmcv-style `ConvModule`s holding their conv under `.conv`).
Loading is strict against that layout: missing, unexpected and misshaped keys are listed in the error. Only
`num_batches_tracked` BatchNorm counters may be absent (they are unused at inference; filled with 0).

Files are read with `torch.load(weights_only=True)` (`sources.load_pth`), which refuses pickles that would run code;
state dicts wrapped under "model" / "state_dict" (training snapshots) or prefixed with "module." are accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfImageClassificationConfig,
)
from ..models.heads.dpt import dpt_head_from_config
from ..models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
from .checkpoints import check_state, load_model
from .sources import CheckpointError, load_pth

_OPTIONAL_SUFFIXES = (".num_batches_tracked",)


@dataclass(frozen=True)
class OfficialHead:
    """A released official head: its task, backbone preset, file name and the task-config fields that rebuild it."""

    name: str
    task: str  # "classification" or "depth"
    backbone_preset: str
    filename: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def config_class(self) -> type:
        return Dinov3HfImageClassificationConfig if self.task == "classification" else Dinov3HfDepthEstimationConfig

    @property
    def model_class(self) -> type:
        return Dinov3HfForImageClassification if self.task == "classification" else Dinov3HfForDepthEstimation


OFFICIAL_HEADS: dict[str, OfficialHead] = {
    head.name: head
    for head in (
        OfficialHead(
            "dinov3_vit7b16_lc", "classification", "vit7b16",
            "dinov3_vit7b16/dinov3_vit7b16_imagenet1k_linear_head-90d8ed92.pth",
            dict(num_labels=1000, use_mean_patch_token=True),
        ),
        OfficialHead(
            "dinov3_vit7b16_dd", "depth", "vit7b16",
            "dinov3_vit7b16/dinov3_vit7b16_synthmix_dpt_head-02040be1.pth",
            dict(
                head_type="dpt", layers=[9, 19, 29, 39], post_process_channels=[2048] * 4, dpt_channels=512,
                dpt_hidden_channels=32, dpt_use_bias=False, dpt_projection_after_fusion=True, use_batchnorm=True,
                use_cls_token=False, n_bins=256, min_depth=0.001, max_depth=100.0, bins_strategy="linear",
                norm_strategy="linear",
            ),
        ),
        OfficialHead(
            "dinov3_vitl16_chmv2", "depth", "vitl16_sat",
            "chmv2/dinov3_vitl16_chmv2_dpt_head-3703d643.pth",
            dict(
                head_type="dpt", layers=[5, 11, 17, 23], post_process_channels=[128, 256, 512, 1024],
                dpt_channels=256, dpt_hidden_channels=128, dpt_use_bias=True, dpt_projection_after_fusion=False,
                use_batchnorm=False, use_cls_token=True, n_bins=256, min_depth=0.001, max_depth=96.0,
                bins_strategy="mixlog", norm_strategy="mixlog", mixlog_scale=8.0,
            ),
        ),
    )
}


def official_head_config(
    name: str, backbone_config: Dinov3HfViTConfig | None = None, **overrides: Any
) -> Dinov3HfImageClassificationConfig | Dinov3HfDepthEstimationConfig:
    """The task config of an official head (`OFFICIAL_HEADS`), on its official backbone preset unless
    `backbone_config` is given (e.g. a tiny ViT for tests; pass `layers=` then if it has fewer blocks)."""
    if name not in OFFICIAL_HEADS:
        raise CheckpointError(f"Unknown official head {name!r}; known: {', '.join(OFFICIAL_HEADS)}.")
    head = OFFICIAL_HEADS[name]
    if backbone_config is None:
        backbone_config = Dinov3HfViTConfig.from_preset(head.backbone_preset)
    return head.config_class(backbone_config=backbone_config, **{**head.fields, **overrides})


# -- layouts --------------------------------------------------------------------------------------------------------


def _kind(config) -> str:
    if isinstance(config, Dinov3HfImageClassificationConfig):
        return "classifier"
    if isinstance(config, Dinov3HfDepthEstimationConfig) and config.head_type == "dpt":
        return "dpt"
    raise CheckpointError(
        f"No official head checkpoint layout is known for a {type(config).__name__}"
        + (f" with head_type={config.head_type!r}" if isinstance(config, Dinov3HfDepthEstimationConfig) else "")
        + "; official head files exist for the linear classifier (dinov3_vit7b16_lc) and the DPT depth heads "
        "(dinov3_vit7b16_dd, dinov3_vitl16_chmv2)."
    )


def official_head_shapes(config) -> dict[str, tuple[int, ...]]:
    """{official key: shape} of the head file that fits a task config (built on the meta device: no memory)."""
    if _kind(config) == "classifier":
        return {"weight": (config.num_labels, config.classifier_in_features), "bias": (config.num_labels,)}
    with torch.device("meta"):
        head = dpt_head_from_config(config)
    return {k: tuple(v.shape) for k, v in head.state_dict().items()}


def _our_key(kind: str, key: str) -> str:
    return f"classifier.{key}" if kind == "classifier" else f"dpt_head.{key}"


def official_head_to_ours(
    state: Mapping[str, torch.Tensor], config, what: str = "official head"
) -> dict[str, torch.Tensor]:
    """Check an official head state dict strictly against the layout for `config`; return it under our keys."""
    kind = _kind(config)
    expected = official_head_shapes(config)
    in_file = {k: tuple(v.shape) for k, v in state.items()}
    state = dict(state)
    for key, shape in expected.items():  # BatchNorm counters are optional
        if key not in state and key.endswith(_OPTIONAL_SUFFIXES) and shape == ():
            state[key] = torch.zeros((), dtype=torch.long)
    try:
        check_state({k: tuple(v.shape) for k, v in state.items()}, expected, what)
    except CheckpointError as err:
        raise CheckpointError(f"{err}\n  {_hint(config, in_file)}") from None
    return {_our_key(kind, k): v for k, v in state.items()}


def _hint(config, found: Mapping) -> str:
    """Which config fields the keys of the file point to, when they disagree with the model."""
    if _kind(config) == "classifier":
        return (
            f"The model's classifier is Linear({config.classifier_in_features}, {config.num_labels}) "
            f"(num_labels, 2 x backbone width with use_mean_patch_token); the official ViT-7B head is "
            "Linear(8192, 1000)."
        )
    notes = []
    for marker, fieldname, value in (
        ("readout_projects", "use_cls_token", config.use_cls_token),
        ("batchnorm_layers", "use_batchnorm", config.use_batchnorm),
        ("project.conv", "dpt_projection_after_fusion", config.dpt_projection_after_fusion),
        ("res_conv_unit2.conv1.conv.bias", "dpt_use_bias", config.dpt_use_bias),
    ):
        in_file = any(marker in k and (marker != "project.conv" or k.startswith(marker)) for k in found)
        if in_file != value:
            notes.append(f"{fieldname}={in_file}")
    hint = "The DPT layout follows the config fields head_type, layers, use_cls_token, use_batchnorm, "
    hint += "post_process_channels, dpt_channels, dpt_hidden_channels, dpt_use_bias, dpt_projection_after_fusion, "
    hint += "n_bins"
    if notes:
        hint += f"; the file's keys suggest {', '.join(notes)}"
    return hint + ". `official_head_config(name)` gives the released heads' configs."


def _head_state(model) -> dict[str, torch.Tensor]:
    kind = _kind(model.config)
    prefix = "classifier." if kind == "classifier" else "dpt_head."
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def ours_to_official_head(model) -> dict[str, torch.Tensor]:
    """The official head state dict of one of our task models (tensors shared with the model, detached)."""
    kind = _kind(model.config)
    prefix = "classifier." if kind == "classifier" else "dpt_head."
    return {k[len(prefix) :]: v.detach() for k, v in _head_state(model).items()}


# -- loading and saving ---------------------------------------------------------------------------------------------


def load_official_head(
    model: Dinov3HfForImageClassification | Dinov3HfForDepthEstimation,
    src: str | os.PathLike | Mapping[str, torch.Tensor],
):
    """Load an official head checkpoint (a `.pth` path, or its state dict) into `model`'s head, strictly.

    The backbone is left as it is. A model built on the meta device gets the tensors assigned. Returns the model.
    """
    what = f"official head checkpoint {src}" if isinstance(src, (str, os.PathLike)) else "official head state dict"
    state = load_pth(src) if isinstance(src, (str, os.PathLike)) else src
    ours = official_head_to_ours(state, model.config, what)
    current = _head_state(model)
    assign = any(t.is_meta for t in current.values())
    with torch.no_grad():
        if assign:
            missing = model.load_state_dict(ours, strict=False, assign=True)
        else:
            for key, tensor in ours.items():
                current[key].copy_(tensor)
            missing = None
    if missing is not None and missing.unexpected_keys:  # pragma: no cover - the layout check rules this out
        raise CheckpointError(f"Unexpected keys after the layout check: {missing.unexpected_keys}")
    if model.config.freeze_backbone:
        model.set_backbone_frozen(True)
    return model


def save_official_head(model, dst: str | os.PathLike) -> Path:
    """Write the head of one of our task models as an official head `.pth` (a plain state dict of tensors)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in ours_to_official_head(model).items()}
    torch.save(state, dst)
    return dst


def build_official_head_model(
    name: str,
    head: str | os.PathLike | Mapping[str, torch.Tensor],
    backbone: str | os.PathLike | Dinov3HfViTModel,
    **overrides: Any,
):
    """Our task model for an official head: `backbone` (a model, one of our / transformers' checkpoint folders or
    Hub ids, or an official backbone `.pth`, read with the head's backbone preset) + the head file `head`."""
    spec = OFFICIAL_HEADS.get(name)
    if spec is None:
        raise CheckpointError(f"Unknown official head {name!r}; known: {', '.join(OFFICIAL_HEADS)}.")
    if isinstance(backbone, (str, os.PathLike)) and Path(backbone).is_file():
        backbone = load_model(backbone, arch=spec.backbone_preset)
    model_class = spec.model_class
    config = official_head_config(
        name, backbone.config if isinstance(backbone, Dinov3HfViTModel) else None, **overrides
    )
    model = model_class.from_backbone(backbone, config=config)
    return load_official_head(model, head)
