"""Official DINOv3 head checkpoints (`hubconf.py` heads): loading them strictly into our task models, and back.

The released head files hold the head alone (the backbone comes from its own checkpoint):

- `dinov3_vit7b16_lc` (`dinov3_vit7b16_imagenet1k_linear_head-90d8ed92.pth`): the state dict of a bare
  `nn.Linear(8192, 1000)`, keys `weight` [1000, 8192] and `bias` [1000] (the official hub code builds
  `nn.Linear(2 * embed_dim, 1000)` and loads the file into it strictly). Ours: `classifier.weight` / `.bias` of
  [`Dinov3HfForImageClassification`], on concat(CLS, mean patch token) as upstream.
- `dinov3_vit7b16_dd` (`dinov3_vit7b16_synthmix_dpt_head-02040be1.pth`) and `dinov3_vitl16_chmv2`
  (`chmv2/dinov3_vitl16_chmv2_dpt_head-3703d643.pth`): the state dict of the official `DPTHead` (`depther.decoder`,
  loaded strictly upstream). Ours: `dpt_head.<same key>` of [`Dinov3HfForDepthEstimation`] with `head_type="dpt"`,
  whose module tree reproduces the official one; the key list is documented in `models/heads/dpt.py`.
- `dinov3_vit7b16_de` (`dinov3_vit7b16_coco2017_detr_head-b0235ff7.pth`): the Plain-DETR COCO detector, read by the
  hub as `torch.load(file)["model"]`. Ours: [`Dinov3HfForPlainDetrDetection`], same key names; the key logic (decoder
  aliases, optional ViT keys) is in `convert/detection_head.py`.

The linear probes of the official evaluation scripts live in `{"model": <head state dict>, ...}` files:

- segmentation (`dinov3/eval/segmentation/train.py`, which saves the optimizer state beside it; the `LinearHead` is
  module 1 of the `segmentation_model` list): `segmentation_model.1.batchnorm_layer.*` (SyncBatchNorm(C), with
  `use_batchnorm`) and `segmentation_model.1.conv.{weight [num_labels, C, 1, 1], bias}`. Ours: `batchnorm.*` and
  `classifier.*` of [`Dinov3HfForSemanticSegmentation`].
- depth (`dinov3/eval/depth`, the `LinearHead` loaded strictly from the file's "model" entry):
  `batchnorm_layer.*` (with `use_batchnorm`) and `conv_depth.{weight [n_bins, C, 1, 1], bias}`. Ours: `batchnorm.*`
  and `conv_depth.*` of [`Dinov3HfForDepthEstimation`] with `head_type="linear"`.

The classifier's keys follow from the hub code (a bare `nn.Linear`), the DPT keys from the official module structure
(`reassemble_blocks`, `convs`, `fusion_blocks`, `project`, `conv_depth`, with mmcv-style `ConvModule`s holding their
conv under `.conv`). Loading is strict against that layout: missing, unexpected and misshaped keys are listed in the
error. Only `num_batches_tracked` BatchNorm counters may be absent (they are unused at inference; filled with 0).

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

from ..models.convnext import Dinov3HfConvNextModel
from ..models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)
from ..models.heads.dpt import dpt_head_from_config
from ..models.heads.adapter_mask2former import (
    Dinov3HfAdapterMask2FormerConfig,
    Dinov3HfAdapterMask2FormerForUniversalSegmentation,
)
from ..models.heads.plain_detr import Dinov3HfForPlainDetrDetection, Dinov3HfPlainDetrConfig
from ..models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
from .checkpoints import check_state, load_model
from .detection_head import (
    describe_checkpoint,
    load_plain_detr_head,
    plain_detr_config_from_state,
    plain_detr_head_shapes,
    plain_detr_official_to_ours,
    plain_detr_to_official,
    read_plain_detr_file,
    save_plain_detr_head,
)
from .segmentation_head import (
    load_official_segmentor,
    official_segmentor_config_from_state,
    official_segmentor_shapes,
    official_segmentor_to_ours,
    ours_to_official_segmentor,
    save_official_segmentor,
)
from .sources import CheckpointError, load_pth

_OPTIONAL_SUFFIXES = (".num_batches_tracked",)
# per head kind: (official key prefix, our key prefix) pairs, in the official registration order
_KEY_PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "classifier": (("", "classifier."),),
    "dpt": (("", "dpt_head."),),
    "linear_segmentation": (
        ("segmentation_model.1.batchnorm_layer.", "batchnorm."),
        ("segmentation_model.1.conv.", "classifier."),
    ),
    "linear_depth": (("batchnorm_layer.", "batchnorm."), ("conv_depth.", "conv_depth.")),
}
# the linear probes of the official training scripts; their files hold the head state dict under "model"
LINEAR_PROBES = ("linear_segmentation", "linear_depth")
TaskModel = (
    Dinov3HfForImageClassification | Dinov3HfForDepthEstimation | Dinov3HfForSemanticSegmentation
    | Dinov3HfForPlainDetrDetection
)
# our task model of each official head layout
OFFICIAL_HEAD_MODELS: dict[str, type] = {
    "classifier": Dinov3HfForImageClassification,
    "dpt": Dinov3HfForDepthEstimation,
    "linear_segmentation": Dinov3HfForSemanticSegmentation,
    "linear_depth": Dinov3HfForDepthEstimation,
    "plain_detr": Dinov3HfForPlainDetrDetection,  # the detector's key logic: convert/detection_head.py
    # the ADE20K segmentor's key logic: convert/segmentation_head.py
    "mask2former": Dinov3HfAdapterMask2FormerForUniversalSegmentation,
}
_TASK_CLASSES = {  # task -> (config class, model class) of the released heads
    "classification": (Dinov3HfImageClassificationConfig, Dinov3HfForImageClassification),
    "depth": (Dinov3HfDepthEstimationConfig, Dinov3HfForDepthEstimation),
    "detection": (Dinov3HfPlainDetrConfig, Dinov3HfForPlainDetrDetection),
    "universal_segmentation": (
        Dinov3HfAdapterMask2FormerConfig, Dinov3HfAdapterMask2FormerForUniversalSegmentation
    ),
}


@dataclass(frozen=True)
class OfficialHead:
    """A released official head: its task, backbone preset, file name and the task-config fields that rebuild it."""

    name: str
    task: str  # "classification", "depth", "detection" or "universal_segmentation"
    backbone_preset: str
    filename: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def config_class(self) -> type:
        return _TASK_CLASSES[self.task][0]

    @property
    def model_class(self) -> type:
        return _TASK_CLASSES[self.task][1]


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
        OfficialHead(  # the config defaults are the release values (dinov3/hub/detectors.py)
            "dinov3_vit7b16_de", "detection", "vit7b16",
            "dinov3_vit7b16/dinov3_vit7b16_coco2017_detr_head-b0235ff7.pth",
        ),
        OfficialHead(  # the config defaults are the release values (dinov3/hub/segmentors.py)
            "dinov3_vit7b16_ms", "universal_segmentation", "vit7b16",
            "dinov3_vit7b16/dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth",
        ),
    )
}


def official_head_config(
    name: str, backbone_config: Dinov3HfViTConfig | None = None, **overrides: Any
) -> Dinov3HfImageClassificationConfig | Dinov3HfDepthEstimationConfig:
    """The task config of an official head (`OFFICIAL_HEADS`), on its official backbone preset unless
    `backbone_config` is given (e.g. a tiny ViT for tests; pass `layers=` then if it has fewer blocks)."""
    if name not in OFFICIAL_HEADS:
        raise CheckpointError(
            f"Unknown official head {name!r}; known: {', '.join(OFFICIAL_HEADS)} (and the linear probes "
            f"{', '.join(LINEAR_PROBES)}, whose config comes from their file: `official_linear_probe_config`)."
        )
    head = OFFICIAL_HEADS[name]
    if backbone_config is None:
        backbone_config = Dinov3HfViTConfig.from_preset(head.backbone_preset)
    return head.config_class(backbone_config=backbone_config, **{**head.fields, **overrides})


# -- layouts --------------------------------------------------------------------------------------------------------


def _kind(config) -> str:
    if isinstance(config, Dinov3HfImageClassificationConfig):
        return "classifier"
    if isinstance(config, Dinov3HfSemanticSegmentationConfig):
        return "linear_segmentation"
    if isinstance(config, Dinov3HfDepthEstimationConfig):
        return "dpt" if config.head_type == "dpt" else "linear_depth"
    if isinstance(config, Dinov3HfPlainDetrConfig):
        return "plain_detr"
    if isinstance(config, Dinov3HfAdapterMask2FormerConfig):
        return "mask2former"
    raise CheckpointError(
        f"No official head checkpoint layout is known for a {type(config).__name__}; official head files exist for "
        "the linear classifier (dinov3_vit7b16_lc), the DPT depth heads (dinov3_vit7b16_dd, dinov3_vitl16_chmv2) "
        "and the linear segmentation and depth probes of the official training scripts."
    )


def official_head_kind(head: Any) -> str:
    """The official file layout ("classifier", "dpt", "linear_segmentation" or "linear_depth") of a task config, or
    of a head name: a released head (`OFFICIAL_HEADS`) or a linear probe (`LINEAR_PROBES`)."""
    if isinstance(head, str):
        return head if head in LINEAR_PROBES else _kind(official_head_config(head))
    return _kind(head)


def official_head_shapes(config) -> dict[str, tuple[int, ...]]:
    """{official key: shape} of the head file that fits a task config (built on the meta device: no memory)."""
    kind = _kind(config)
    if kind == "classifier":
        return {"weight": (config.num_labels, config.classifier_in_features), "bias": (config.num_labels,)}
    if kind == "dpt":
        with torch.device("meta"):
            head = dpt_head_from_config(config)
        return {k: tuple(v.shape) for k, v in head.state_dict().items()}
    if kind == "plain_detr":
        return plain_detr_head_shapes(config)
    if kind == "mask2former":
        return official_segmentor_shapes(config)
    with torch.device("meta"):
        model = OFFICIAL_HEAD_MODELS[kind](config)
    return {_official_key(kind, k): tuple(v.shape) for k, v in _head_state(model).items()}


def _our_key(kind: str, key: str) -> str:
    """An official key (already checked against the layout) under our name."""
    official, ours = next(pair for pair in _KEY_PREFIXES[kind] if key.startswith(pair[0]))
    return ours + key[len(official) :]


def _official_key(kind: str, key: str) -> str:
    """One of our head keys (from `_head_state`) under its official name."""
    official, ours = next(pair for pair in _KEY_PREFIXES[kind] if key.startswith(pair[1]))
    return official + key[len(ours) :]


def official_head_to_ours(
    state: Mapping[str, torch.Tensor], config, what: str = "official head"
) -> dict[str, torch.Tensor]:
    """Check an official head state dict strictly against the layout for `config`; return it under our keys."""
    kind = _kind(config)
    if kind == "plain_detr":
        return plain_detr_official_to_ours(state, config, what)
    if kind == "mask2former":
        return official_segmentor_to_ours(state, config, what)
    expected = official_head_shapes(config)
    in_file = {k: tuple(v.shape) for k, v in state.items()}
    state = dict(state)
    for key, shape in expected.items():  # BatchNorm counters are optional
        if key not in state and key.endswith(_OPTIONAL_SUFFIXES) and shape == ():
            state[key] = torch.zeros((), dtype=torch.long)
    try:
        check_state({k: tuple(v.shape) for k, v in state.items()}, expected, what)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}\n  {_hint(config, in_file)}\n  The file looks like {describe_checkpoint(in_file)}."
        ) from None
    return {_our_key(kind, k): v for k, v in state.items()}


def _hint(config, found: Mapping) -> str:
    """Which config fields the keys of the file point to, when they disagree with the model."""
    kind = _kind(config)
    if kind in LINEAR_PROBES:
        (norm, _), (conv, _) = _KEY_PREFIXES[kind]
        outputs = "num_labels" if kind == "linear_segmentation" else "n_bins"
        hint = (
            f"The linear probe is BatchNorm2d(C) `{norm}*` (with use_batchnorm) + Conv2d(C, {outputs}, 1) `{conv}*`, "
            f"C = {config.head_in_channels} from the backbone width and the config fields layers"
            + (" and use_cls_token" if kind == "linear_depth" else "")
            + f" (layers={config.layers}: pass the layers the probe was trained on)"
        )
        shape = found.get(conv + "weight", ())
        if len(shape) == 4:
            hint += f"; the file's conv is Conv2d({shape[1]}, {shape[0]}, 1)"
        other = next(k for k in LINEAR_PROBES if k != kind)
        if any(k.startswith(_KEY_PREFIXES[other][1][0]) for k in found):
            hint += f"; the file's keys are those of the official {other.replace('_', ' ')} probe"
        return hint + "."
    if kind == "classifier":
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
    prefixes = tuple(ours for _, ours in _KEY_PREFIXES[_kind(model.config)])
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def ours_to_official_head(model) -> dict[str, torch.Tensor]:
    """The official head state dict of one of our task models (tensors shared with the model, detached)."""
    kind = _kind(model.config)
    if kind == "plain_detr":
        return plain_detr_to_official(model)
    if kind == "mask2former":
        return ours_to_official_segmentor(model)
    return {_official_key(kind, k): v.detach() for k, v in _head_state(model).items()}


# -- loading and saving ---------------------------------------------------------------------------------------------


def load_official_head(model: TaskModel, src: str | os.PathLike | Mapping[str, torch.Tensor]) -> TaskModel:
    """Load an official head checkpoint (a `.pth` path, or its state dict) into `model`'s head, strictly.

    The backbone is left as it is. A model built on the meta device gets the tensors assigned. Returns the model.
    The detector's file may also hold its ViT, which is loaded too (`detection_head.load_plain_detr_head`).
    """
    if _kind(model.config) == "plain_detr":
        return load_plain_detr_head(model, src)
    if _kind(model.config) == "mask2former":  # adapter + Mask2Former, and the ViT if the file has it
        return load_official_segmentor(model, src)
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


def save_official_head(model: TaskModel, dst: str | os.PathLike) -> Path:
    """Write the head of one of our task models as an official head `.pth`: a plain state dict of tensors, as the
    released head files; for the linear probes `{"model": state dict}`, as the official training scripts write; for
    the detector `{"model": state dict}`, the container the hub reads."""
    if _kind(model.config) == "plain_detr":
        return save_plain_detr_head(model, dst)
    if _kind(model.config) == "mask2former":
        return save_official_segmentor(model, dst)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in ours_to_official_head(model).items()}
    torch.save({"model": state} if _kind(model.config) in LINEAR_PROBES else state, dst)
    return dst


def official_linear_probe_config(
    kind: str, state: Mapping[str, torch.Tensor], backbone_config: Any, **fields: Any
) -> Dinov3HfSemanticSegmentationConfig | Dinov3HfDepthEstimationConfig:
    """The task config of an official linear probe (`kind` "linear_segmentation" or "linear_depth") that fits its
    state dict: num_labels / n_bins from the conv's output channels, use_batchnorm from the BatchNorm keys; depth:
    use_cls_token when the conv's input channels are twice those of `layers`. `fields` (e.g. `layers`, which
    default to the last layer as the official probes) set other task-config fields and win over the inferred ones."""
    if kind not in LINEAR_PROBES:
        raise CheckpointError(f"Unknown linear probe {kind!r}; known: {', '.join(LINEAR_PROBES)}.")
    (norm, _), (conv, _) = _KEY_PREFIXES[kind]
    if conv + "weight" not in state:
        raise CheckpointError(
            f"The state dict has no {conv}weight, so it is not an official {kind.replace('_', ' ')} probe; its keys: "
            f"{', '.join(sorted(state)[:10])}{', ...' if len(state) > 10 else ''}."
        )
    outputs, channels = state[conv + "weight"].shape[:2]
    fields.setdefault("use_batchnorm", any(k.startswith(norm) for k in state))
    if kind == "linear_segmentation":
        return Dinov3HfSemanticSegmentationConfig(backbone_config=backbone_config, num_labels=outputs, **fields)
    if "use_cls_token" not in fields:
        plain = Dinov3HfDepthEstimationConfig(backbone_config=backbone_config, **fields)
        fields["use_cls_token"] = channels == 2 * plain.head_in_channels
    return Dinov3HfDepthEstimationConfig(backbone_config=backbone_config, n_bins=outputs, **fields)


def build_official_head_model(
    name: str,
    head: str | os.PathLike | Mapping[str, torch.Tensor],
    backbone: str | os.PathLike | Dinov3HfViTModel | Dinov3HfConvNextModel,
    backbone_arch: str | None = None,
    **overrides: Any,
) -> TaskModel:
    """Our task model for an official head file `head` on `backbone` (a model, one of our / transformers' checkpoint
    folders or Hub ids, or an official backbone `.pth`, read with `backbone_arch`, default the released head's preset).

    `name`: a released head (`OFFICIAL_HEADS`; `overrides` change its config), or "linear_segmentation" /
    "linear_depth" for a linear probe of the official training scripts (config from the file, see
    `official_linear_probe_config`; `overrides` e.g. `layers=[...]`). The detector and the segmentor take their
    sizes from the file too (`plain_detr_config_from_state`, `official_segmentor_config_from_state`), so heads the
    official code trained on other backbones load as well (e.g. `interaction_indexes=[...]` overrides the rule)."""
    spec = OFFICIAL_HEADS.get(name)
    if spec is None and name not in LINEAR_PROBES:
        raise CheckpointError(
            f"Unknown official head {name!r}; known: {', '.join([*OFFICIAL_HEADS, *LINEAR_PROBES])}."
        )
    detector = spec is not None and spec.task == "detection"
    segmentor = spec is not None and spec.task == "universal_segmentation"
    if isinstance(backbone, (str, os.PathLike)) and (
        spec is None or detector or segmentor or Path(backbone).is_file()
    ):
        backbone = load_model(backbone, arch=backbone_arch or (spec.backbone_preset if spec else None))
    if detector:  # head sizes from the file (`plain_detr_config_from_state`), on the given ViT
        head = read_plain_detr_file(head)
        config = plain_detr_config_from_state(head, backbone.config, **overrides)
    elif segmentor:  # head sizes from the file, interaction indexes by the official rule unless overridden
        head = load_pth(head, backbone_only=False) if isinstance(head, (str, os.PathLike)) else head
        config = official_segmentor_config_from_state(head, backbone.config, **overrides)
    elif spec is None:
        state = load_pth(head) if isinstance(head, (str, os.PathLike)) else head
        config = official_linear_probe_config(name, state, backbone.config, **overrides)
    else:
        config = official_head_config(
            name, backbone.config if isinstance(backbone, Dinov3HfViTModel) else None, **overrides
        )
    model = OFFICIAL_HEAD_MODELS[_kind(config)].from_backbone(backbone, config=config)
    return load_official_head(model, head)
