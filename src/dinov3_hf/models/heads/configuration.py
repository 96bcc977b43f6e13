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
DEPTH_BINS_STRATEGIES = ("linear", "log")
DEPTH_NORM_STRATEGIES = ("linear", "softmax", "sigmoid")


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
    `Linear(2 * D, num_labels)` on [CLS ; mean of the patch tokens] of the last layer (official_dinov3.md §5.1).

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
    r"""Configuration of [`Dinov3HfForSemanticSegmentation`], the official linear segmentation probe (§5.2).

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
    r"""Configuration of [`Dinov3HfForDepthEstimation`], the official linear depth probe (§5.4).

    Features of `layers` (default the last one; with `use_cls_token` each map is concatenated with its broadcast class
    token / pooled feature) -> BatchNorm2d (`use_batchnorm`) -> Conv2d(C, n_bins, 1) = bin logits at patch resolution
    -> weights over bins ("linear" norm: ReLU(logits) + 0.1, normalised to sum 1) -> depth = sum(weights * bins), bins
    spaced "linear"ly (or "log") from `min_depth` to `max_depth` -> bilinear upsampling to the input size.
    Loss: SigLoss, `sqrt(var(g) + 0.15 * mean(g)^2)` with `g = log(pred + 1e-3) - log(gt + 1e-3)` over pixels with
    gt > 0; during the first `sigloss_warmup_steps` training-mode loss evaluations only the mean term is used.

    Args:
        layers: backbone layer indices whose features are concatenated.
        use_cls_token: concatenate the class token (ConvNeXt: the pooled feature) to every position (official: no).
        use_batchnorm: BatchNorm2d before the 1x1 conv (official NYU config: yes).
        n_bins: number of depth bins (official 256).
        min_depth, max_depth: range of the bins in metres (official NYU: 0.001 and 10).
        bins_strategy: "linear" (official) or "log" spacing of the bins.
        norm_strategy: "linear" (official: ReLU + 0.1, normalised), "softmax" or "sigmoid" (normalised).
        sigloss_warmup_steps: loss evaluations (in training mode) that use the mean term only (official 100).
    """

    model_type = "dinov3_hf_depth_estimation"

    def __init__(
        self,
        layers: Sequence[int] = (-1,),
        use_cls_token: bool = False,
        use_batchnorm: bool = True,
        n_bins: int = 256,
        min_depth: float = 0.001,
        max_depth: float = 10.0,
        bins_strategy: str = "linear",
        norm_strategy: str = "linear",
        sigloss_warmup_steps: int = 100,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.layers = self._validate_layers(layers)
        self.use_cls_token = bool(use_cls_token)
        self.use_batchnorm = bool(use_batchnorm)
        if not isinstance(n_bins, int) or n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2 (the linear head predicts bin weights), got {n_bins!r}.")
        self.n_bins = n_bins
        if not 0 < min_depth < max_depth:
            raise ValueError(f"Need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}.")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        if bins_strategy not in DEPTH_BINS_STRATEGIES:
            raise ValueError(f"bins_strategy must be one of {DEPTH_BINS_STRATEGIES}, got {bins_strategy!r}.")
        if norm_strategy not in DEPTH_NORM_STRATEGIES:
            raise ValueError(f"norm_strategy must be one of {DEPTH_NORM_STRATEGIES}, got {norm_strategy!r}.")
        self.bins_strategy = bins_strategy
        self.norm_strategy = norm_strategy
        if sigloss_warmup_steps < 0:
            raise ValueError(f"sigloss_warmup_steps must be >= 0, got {sigloss_warmup_steps}.")
        self.sigloss_warmup_steps = int(sigloss_warmup_steps)

    @property
    def head_in_channels(self) -> int:
        channels = sum(self.layer_channels(i) for i in self.layers)
        return 2 * channels if self.use_cls_token else channels
