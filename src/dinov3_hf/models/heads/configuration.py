"""Configurations of the task models: a DINOv3 backbone (nested as `backbone_config`) plus an official linear head.

One config class per task, so that `AutoModelFor<Task>` and the pipelines resolve the right model from `config.json`.
The backbone config is serialised as a dict carrying its `model_type` and restored on load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

from ..convnext.configuration import Dinov3HfConvNextConfig
from ..vit.configuration import Dinov3HfViTConfig

# Backbone configs a head accepts, by model_type.
BACKBONE_CONFIGS: dict[str, type[PretrainedConfig]] = {
    Dinov3HfViTConfig.model_type: Dinov3HfViTConfig,
    Dinov3HfConvNextConfig.model_type: Dinov3HfConvNextConfig,
}
DEPTH_BINS_STRATEGIES = ("linear", "log", "mixlog")
DEPTH_NORM_STRATEGIES = ("linear", "softmax", "sigmoid", "mixlog")
DEPTH_HEAD_TYPES = ("linear", "dpt")


def _backbone_config(value: Any) -> PretrainedConfig:
    """A backbone config instance from None (a ViT-S/16), a config, or a dict with a `model_type`."""
    if value is None:
        return Dinov3HfViTConfig()
    if isinstance(value, tuple(BACKBONE_CONFIGS.values())):
        return value
    if isinstance(value, dict):
        model_type = value.get("model_type")
        if model_type not in BACKBONE_CONFIGS:
            raise ValueError(
                f"backbone_config has model_type {model_type!r}; a DINOv3 head needs one of "
                f"{sorted(BACKBONE_CONFIGS)}. "
                "Convert transformers' dinov3_vit / dinov3_convnext checkpoints with the head's from_backbone()."
            )
        fields = {k: v for k, v in value.items() if k not in ("model_type", "transformers_version")}
        return BACKBONE_CONFIGS[model_type](**fields)
    raise TypeError(
        f"backbone_config must be a Dinov3HfViTConfig, a Dinov3HfConvNextConfig, a dict with their model_type, or "
        f"None; got {type(value).__name__}."
    )


class Dinov3HfHeadConfig(PretrainedConfig):
    r"""Fields shared by the DINOv3 task models (not registered itself; use the per-task subclasses).

    Args:
        backbone_config: the backbone's config ([`Dinov3HfViTConfig`] or [`Dinov3HfConvNextConfig`], or a dict with
            their `model_type`); None gives a ViT-S/16.
        freeze_backbone: keep the backbone fixed (no gradients, run under `torch.no_grad`, kept in eval mode), the
            official linear-probe protocol. False fine-tunes it with the head.
        head_initializer_range: std of the normal initialisation of the head's linear / 1x1 conv weights (biases 0).

    `image_mean`, `image_std` and `output_stride` come from the backbone config, so
    `Dinov3HfImageProcessor.for_model_config(config)` works on a head config too.
    """

    model_type = ""

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        freeze_backbone: bool = True,
        head_initializer_range: float = 0.01,
        **kwargs: Any,
    ):
        # set before PretrainedConfig's __post_init__, which resolves the nested config
        self.backbone_config = _backbone_config(backbone_config)
        super().__init__(**kwargs)
        self.freeze_backbone = bool(freeze_backbone)
        self.head_initializer_range = head_initializer_range

    # -- backbone facts ---------------------------------------------------------------------------------------------

    @property
    def is_vit(self) -> bool:
        return isinstance(self.backbone_config, Dinov3HfViTConfig)

    @property
    def backbone_num_layers(self) -> int:
        """Blocks of a ViT, stages (4) of a ConvNeXt: the range of `layers` indices."""
        config = self.backbone_config
        return config.num_hidden_layers if self.is_vit else len(config.hidden_sizes)

    def layer_channels(self, index: int) -> int:
        """Channels of the feature map of block / stage `index` (negative counts from the end)."""
        config = self.backbone_config
        return config.hidden_size if self.is_vit else config.hidden_sizes[index]

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return self.backbone_config.image_mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        return self.backbone_config.image_std

    @property
    def output_stride(self) -> int:
        return self.backbone_config.output_stride

    def _validate_layers(self, layers: Sequence[int]) -> list[int]:
        layers = [int(i) for i in layers]
        depth = self.backbone_num_layers
        unit = "blocks" if self.is_vit else "stages"
        if not layers or any(not -depth <= i < depth for i in layers):
            raise ValueError(
                f"layers={layers} must be a non-empty list of {unit} indices in [-{depth}, {depth - 1}] for this "
                f"backbone with {depth} {unit}."
            )
        return layers


class Dinov3HfImageClassificationConfig(Dinov3HfHeadConfig):
    r"""Configuration of [`Dinov3HfForImageClassification`]: the official linear classifier
    `Linear(2 * D, num_labels)` on [CLS ; mean of the patch tokens] of the last layer (`dinov3/hub/classifiers.py`).

    Args:
        num_labels / id2label / label2id: the classes (standard transformers fields).
        use_mean_patch_token: concatenate the mean patch token to CLS (official); False uses CLS alone (`D` inputs).
        problem_type: as in transformers; None infers single-label CE from integer labels.
    """

    model_type = "dinov3_hf_image_classification"

    def __init__(self, use_mean_patch_token: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.use_mean_patch_token = bool(use_mean_patch_token)

    @property
    def classifier_in_features(self) -> int:
        width = self.backbone_config.hidden_size
        return 2 * width if self.use_mean_patch_token else width


class Dinov3HfSemanticSegmentationConfig(Dinov3HfHeadConfig):
    r"""Configuration of [`Dinov3HfForSemanticSegmentation`], the official linear segmentation probe
    (`dinov3/eval/segmentation/`).

    Features of `layers` (ViT blocks or ConvNeXt stages; default the last one) from
    `get_intermediate_layers(reshape=True, norm=True)`, resized bilinearly to the first's size and concatenated
    -> Dropout2d(`classifier_dropout`) -> BatchNorm2d (`use_batchnorm`) -> Conv2d(C, num_labels, 1).

    Args:
        num_labels / id2label / label2id: the classes.
        layers: backbone layer indices whose features are concatenated (negative count from the end).
        classifier_dropout: Dropout2d rate before the BatchNorm (official 0.1).
        use_batchnorm: BatchNorm2d on the concatenated features (official: yes).
        loss_ignore_index: label value excluded from the cross-entropy loss (official 255).
    """

    model_type = "dinov3_hf_semantic_segmentation"

    def __init__(
        self,
        layers: Sequence[int] = (-1,),
        classifier_dropout: float = 0.1,
        use_batchnorm: bool = True,
        loss_ignore_index: int = 255,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.layers = self._validate_layers(layers)
        if not 0.0 <= classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {classifier_dropout}.")
        self.classifier_dropout = classifier_dropout
        self.use_batchnorm = bool(use_batchnorm)
        self.loss_ignore_index = int(loss_ignore_index)

    @property
    def head_in_channels(self) -> int:
        return sum(self.layer_channels(i) for i in self.layers)


class Dinov3HfDepthEstimationConfig(Dinov3HfHeadConfig):
    r"""Configuration of [`Dinov3HfForDepthEstimation`]: the official linear depth probe or the official DPT depth
    head (`dinov3/eval/depth/`), chosen by `head_type`.

    `head_type="linear"` (default): features of `layers` (default the last one; with `use_cls_token` each map is
    concatenated with its broadcast class token / pooled feature) -> BatchNorm2d (`use_batchnorm`) ->
    Conv2d(C, n_bins, 1) = bin logits at patch resolution.

    `head_type="dpt"` (ViT backbones only): the four maps of `layers` (default the official even intervals, e.g.
    [2, 5, 8, 11] for 12 blocks), each with its class token, go through the official DPT decoder (see
    `models/heads/dpt.py`): readout "project" when `use_cls_token` (else "ignore"), BatchNorm2d when
    `use_batchnorm`, 1x1 projections to `post_process_channels`, resize x4 / x2 / x1 / x0.5, 3x3 convs to
    `dpt_channels`, four fusion blocks, an optional 3x3 projection, and the UpConvHead -> bin logits at the input
    resolution. The input is zero-padded centrally to a multiple of the patch size (official `CenterPadding`) and the
    padding is cropped off the prediction.

    Both: weights over bins ("linear" norm: ReLU(logits) + 0.1, normalised to sum 1) -> depth = sum(weights * bins),
    bins spaced "linear"ly (or "log", or CHMv2's "mixlog") from `min_depth` to `max_depth` -> bilinear resizing to
    the input size. Loss: SigLoss, `sqrt(var(g) + 0.15 * mean(g)^2)` with `g = log(pred + 1e-3) - log(gt + 1e-3)` over
    pixels with gt > 0; during the first `sigloss_warmup_steps` training-mode loss evaluations only the mean term is
    used.

    Official presets (see `dinov3_hf.convert.heads.OFFICIAL_HEADS`): ViT-7B SYNTHMIX depther = dpt, layers
    [9, 19, 29, 39], post_process_channels [2048] * 4, dpt_channels 512, use_batchnorm, no CLS, depth 0.001-100;
    CHMv2 = dpt on ViT-L SAT, layers [5, 11, 17, 23], post_process_channels [128, 256, 512, 1024], dpt_channels 256,
    dpt_hidden_channels 128, use_cls_token, no BN, dpt_use_bias, no projection after fusion, mixlog bins and norm
    over 0.001-96 with mixlog_scale 8.

    Args:
        head_type: "linear" (official linear probe) or "dpt" (official DPT head).
        layers: backbone layer indices (linear: concatenated; dpt: exactly four). None: the last layer (linear) or
            the official four even intervals `[k * (depth // 4) - 1 for k in 1..4]` (dpt).
        use_cls_token: linear: concatenate the class token (ConvNeXt: the pooled feature) to every position
            (official: no); dpt: the "project" readout (official ViT-7B depther: no, CHMv2: yes).
        use_batchnorm: BatchNorm2d on the features (official NYU linear probe and ViT-7B depther: yes; CHMv2: no).
        n_bins: number of depth bins (official 256).
        min_depth, max_depth: range of the bins in metres (official NYU: 0.001 and 10; SYNTHMIX 0.001-100; CHMv2
            0.001-96).
        bins_strategy: "linear" (official), "log", or "mixlog" (CHMv2: bins interpolated from log spacing at the
            near end to linear spacing at the far end, over [min_depth, max_depth / mixlog_scale]).
        norm_strategy: "linear" (official: ReLU + 0.1, normalised), "softmax", "sigmoid" (normalised), or "mixlog"
            (CHMv2: ReLU + 1e-8, normalised; the weighted depth is multiplied by `mixlog_scale`). The official names
            "chmv2_mixlog" are accepted for both.
        mixlog_scale: CHMv2 predicts depth / 8 internally; the factor of the "mixlog" bins and norm (official 8).
        post_process_channels: dpt: channels of the four reassembled maps (official DPTHead default
            [128, 256, 512, 1024]).
        dpt_channels: dpt: channels of the fusion path (official DPTHead default 256).
        dpt_hidden_channels: dpt: hidden channels of the final UpConvHead (official default 32; CHMv2 128).
        dpt_use_bias: dpt: biases in the residual conv units of the fusion blocks (CHMv2: yes).
        dpt_projection_after_fusion: dpt: 3x3 conv + ReLU after the last fusion block (official default yes; CHMv2
            no).
        sigloss_warmup_steps: loss evaluations (in training mode) that use the mean term only (official 100).
    """

    model_type = "dinov3_hf_depth_estimation"

    def __init__(
        self,
        layers: Sequence[int] | None = None,
        use_cls_token: bool = False,
        use_batchnorm: bool = True,
        n_bins: int = 256,
        min_depth: float = 0.001,
        max_depth: float = 10.0,
        bins_strategy: str = "linear",
        norm_strategy: str = "linear",
        sigloss_warmup_steps: int = 100,
        head_type: str = "linear",
        post_process_channels: Sequence[int] = (128, 256, 512, 1024),
        dpt_channels: int = 256,
        dpt_hidden_channels: int = 32,
        dpt_use_bias: bool = False,
        dpt_projection_after_fusion: bool = True,
        mixlog_scale: float = 8.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if head_type not in DEPTH_HEAD_TYPES:
            raise ValueError(f"head_type must be one of {DEPTH_HEAD_TYPES}, got {head_type!r}.")
        self.head_type = head_type
        if layers is None:
            depth = self.backbone_num_layers
            layers = [k * (depth // 4) - 1 for k in range(1, 5)] if head_type == "dpt" else [-1]
        self.layers = self._validate_layers(layers)
        self.use_cls_token = bool(use_cls_token)
        self.use_batchnorm = bool(use_batchnorm)
        if not isinstance(n_bins, int) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2 (the depth heads predict bin weights), got {n_bins!r}.")
        self.n_bins = n_bins
        if not 0 < min_depth < max_depth:
            raise ValueError(f"Need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}.")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        bins_strategy = "mixlog" if bins_strategy == "chmv2_mixlog" else bins_strategy
        norm_strategy = "mixlog" if norm_strategy == "chmv2_mixlog" else norm_strategy
        if bins_strategy not in DEPTH_BINS_STRATEGIES:
            raise ValueError(f"bins_strategy must be one of {DEPTH_BINS_STRATEGIES}, got {bins_strategy!r}.")
        if norm_strategy not in DEPTH_NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {DEPTH_NORM_STRATEGIES}, got {norm_strategy!r}.")
        self.bins_strategy = bins_strategy
        self.norm_strategy = norm_strategy
        if not mixlog_scale > 0:
            raise ValueError(f"mixlog_scale must be > 0, got {mixlog_scale}.")
        self.mixlog_scale = float(mixlog_scale)
        if bins_strategy == "mixlog" and not self.min_depth < self.max_depth / self.mixlog_scale:
            raise ValueError(
                f"The mixlog bins span [min_depth, max_depth / mixlog_scale] = [{self.min_depth}, "
                f"{self.max_depth / self.mixlog_scale}]: raise max_depth or lower mixlog_scale."
            )
        if sigloss_warmup_steps < 0:
            raise ValueError(f"sigloss_warmup_steps must be >= 0, got {sigloss_warmup_steps}.")
        self.sigloss_warmup_steps = int(sigloss_warmup_steps)
        self.post_process_channels = [int(c) for c in post_process_channels]
        self.dpt_channels = int(dpt_channels)
        self.dpt_hidden_channels = int(dpt_hidden_channels)
        self.dpt_use_bias = bool(dpt_use_bias)
        self.dpt_projection_after_fusion = bool(dpt_projection_after_fusion)
        if head_type == "dpt":
            self._validate_dpt()

    def _validate_dpt(self) -> None:
        if not self.is_vit:
            raise ValueError(
                "head_type='dpt' needs a ViT backbone (four maps at the patch resolution); use head_type='linear' "
                "with a ConvNeXt."
            )
        if len(self.layers) != 4:
            raise ValueError(f"head_type='dpt' takes exactly 4 backbone layers, got layers={self.layers}.")
        if len(self.post_process_channels) != 4 or min(self.post_process_channels) < 1:
            raise ValueError(
                f"post_process_channels must be 4 positive ints for head_type='dpt', got {self.post_process_channels}."
            )
        if self.dpt_channels < 2 or self.dpt_hidden_channels < 1:
            raise ValueError(
                f"Need dpt_channels >= 2 and dpt_hidden_channels >= 1, got {self.dpt_channels} and "
                f"{self.dpt_hidden_channels}."
            )

    @property
    def head_in_channels(self) -> int:
        """Input channels of the linear head."""
        channels = sum(self.layer_channels(i) for i in self.layers)
        return 2 * channels if self.use_cls_token else channels
