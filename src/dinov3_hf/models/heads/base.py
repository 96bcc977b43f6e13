"""The base class shared by all DINOv3 task models.

`Dinov3HfHeadPreTrainedModel` owns the backbone (`self.backbone`, a [`Dinov3HfViTModel`] or
[`Dinov3HfConvNextModel`]): it freezes it by default, builds task models from backbone checkpoints, and turns a
head-size mismatch on load into a clear error.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import nn
from transformers import initialization as init

from ..convnext.modeling import Dinov3HfConvNextModel
from ..pretrained import HUB_KWARGS, Dinov3HfPreTrainedModel, _model_type_of, explained_hub_errors
from ..vit.modeling import Dinov3HfViTModel
from .configuration import Dinov3HfHeadConfig

# Backbone checkpoint model types -> the backbone class that loads them (transformers' own layouts are converted).
BACKBONE_MODELS: dict[str, type[Dinov3HfPreTrainedModel]] = {
    "dinov3_hf_vit": Dinov3HfViTModel,
    "dinov3_vit": Dinov3HfViTModel,
    "dinov3_hf_convnext": Dinov3HfConvNextModel,
    "dinov3_convnext": Dinov3HfConvNextModel,
}

_LOADING_ONLY_KWARGS = (
    "ignore_mismatched_sizes", "output_loading_info", "trust_remote_code", "use_safetensors", "low_cpu_mem_usage",
    "attn_implementation", "key_mapping", "weights_only",
)


def _key_list(keys: list[str], shown: int = 8) -> str:
    """`keys` for an error message: the first `shown`, then how many more."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def build_backbone(config) -> Dinov3HfViTModel | Dinov3HfConvNextModel:
    """A randomly initialised backbone for a backbone config."""
    for model_class in (Dinov3HfViTModel, Dinov3HfConvNextModel):
        if isinstance(config, model_class.config_class):
            return model_class(config)
    raise TypeError(f"No DINOv3 backbone for a {type(config).__name__}.")


class Dinov3HfHeadPreTrainedModel(Dinov3HfPreTrainedModel):
    """Backbone + head. Subclasses build the head, then call `post_init()`.

    - `config.freeze_backbone` (default True): backbone parameters get `requires_grad=False` and the backbone stays in
      eval mode under `model.train()`; its forward then runs under `torch.no_grad()` (whenever no backbone parameter
      requires grad, e.g. also after a manual freeze). `set_backbone_frozen(False)` makes it trainable.
    - `from_pretrained` also accepts a backbone checkpoint (ours or transformers' `dinov3_vit` / `dinov3_convnext`)
      and then builds a new head on it (see `from_backbone`).
    - Loading a head checkpoint with another `num_labels` (or `n_bins`) raises a ValueError unless
      `ignore_mismatched_sizes=True`, which re-initialises the head.
    - Loading a head checkpoint with missing or unexpected weights (e.g. no head weights) raises a ValueError naming
      them, instead of running a randomly initialised head.
    """

    config: Dinov3HfHeadConfig
    config_class = Dinov3HfHeadConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SelfAttentionBlock", "ConvNextBlock"]
    # the loss is a per-batch mean: let the Trainer scale it for gradient accumulation
    accepts_loss_kwargs = False
    # config fields that fix the shape of the head's weights, checked on load
    _head_size_fields: tuple[str, ...] = ()

    def __init__(self, config: Dinov3HfHeadConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)

    def post_init(self) -> None:
        super().post_init()
        self.set_backbone_frozen(self.config.freeze_backbone)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Official head initialisation: linear / 1x1 conv weights N(0, 0.01), biases 0; BatchNorm at identity."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=self.config.head_initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    # -- backbone freezing ------------------------------------------------------------------------------------------

    def set_backbone_frozen(self, frozen: bool = True) -> None:
        """Freeze (no grads, eval mode) or unfreeze the backbone; updates `config.freeze_backbone`."""
        self.config.freeze_backbone = bool(frozen)
        self.backbone.requires_grad_(not frozen)
        if frozen:
            self.backbone.eval()
        else:
            self.backbone.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()  # no RoPE augmentation / drop path in a frozen backbone, as in the official probes
        return self

    def _backbone_context(self):
        trainable = any(p.requires_grad for p in self.backbone.parameters())
        return contextlib.nullcontext() if trainable else torch.no_grad()

    def backbone_feature_maps(
        self, pixel_values: torch.Tensor, layers: list[int], return_class_token: bool = False
    ) -> tuple:
        """`get_intermediate_layers(n=layers, reshape=True, norm=True)`: per layer a [B, C, h, w] map, or
        (map, class token) with `return_class_token` (ConvNeXt: the pooled stage feature)."""
        with self._backbone_context():
            return self.backbone.get_intermediate_layers(
                pixel_values, n=layers, reshape=True, return_class_token=return_class_token, norm=True
            )

    # -- loading ----------------------------------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls, backbone: str | os.PathLike | Dinov3HfViTModel | Dinov3HfConvNextModel, **kwargs: Any
    ) -> "Dinov3HfHeadPreTrainedModel":
        """A task model with a new head on a pretrained backbone.

        backbone: a backbone model, or a folder / Hub id of a backbone checkpoint (ours, or transformers'
            `dinov3_vit` / `dinov3_convnext`, which is converted).
        kwargs: Hub arguments (`revision`, `token`, ...) and `dtype` go to the backbone's loading, a device
            `device_map` moves the model; the others are fields of the task config (e.g. `num_labels=10`,
            `id2label=...`, `layers=[2, 5, 8, 11]`); `config=` a task config takes its task fields. The model is
            returned in eval mode, as by `from_pretrained`.
        """
        hub = {k: kwargs.pop(k) for k in (*HUB_KWARGS, "dtype") if k in kwargs}
        device = kwargs.pop("device_map", None)
        template = kwargs.pop("config", None)
        if isinstance(template, cls.config_class):  # its task fields, under the new backbone
            fields = template.to_dict()
            for key in ("backbone_config", "model_type", "transformers_version", "architectures"):
                fields.pop(key, None)
            kwargs = {**fields, **kwargs}
        for key in _LOADING_ONLY_KWARGS:  # from_pretrained arguments that mean nothing for a new head
            kwargs.pop(key, None)
        if isinstance(backbone, (str, os.PathLike)):
            model_type = _model_type_of(backbone, **hub)
            if model_type not in BACKBONE_MODELS:
                raise ValueError(
                    f"{backbone} holds a {model_type!r} checkpoint, not a DINOv3 backbone; expected one of "
                    f"{sorted(BACKBONE_MODELS)}."
                )
            backbone = BACKBONE_MODELS[model_type].from_pretrained(backbone, **hub)
        elif not isinstance(backbone, (Dinov3HfViTModel, Dinov3HfConvNextModel)):
            raise TypeError(
                f"backbone must be a Dinov3HfViTModel, a Dinov3HfConvNextModel or a checkpoint path, got "
                f"{type(backbone).__name__}."
            )
        config = cls.config_class(backbone_config=backbone.config, **kwargs)
        model = cls(config)
        model.backbone.load_state_dict(backbone.state_dict())
        model = model.to(backbone.dtype).eval()  # eval mode, as from_pretrained
        return model.to(device) if isinstance(device, (str, torch.device)) else model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        path = pretrained_model_name_or_path
        if not model_args and not os.path.isfile(str(path)):
            with explained_hub_errors(path, kwargs.get("revision")):
                model_type = _model_type_of(path, **kwargs)
                if model_type in BACKBONE_MODELS:
                    return cls.from_backbone(path, **kwargs)
                if model_type == cls.config_class.model_type and not kwargs.get("ignore_mismatched_sizes", False):
                    cls._check_head_sizes(path, kwargs)
        model, info = super().from_pretrained(path, *model_args, **{**kwargs, "output_loading_info": True})
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        if missing or unexpected:  # else a missing head would silently predict from random weights
            found = [f"missing {_key_list(missing)}"] if missing else []
            found += [f"unexpected {_key_list(unexpected)}"] if unexpected else []
            raise ValueError(
                f"The checkpoint {path} does not fit {cls.__name__}: weights {'; '.join(found)}. Pass a complete "
                f"checkpoint of this model, or build a new head on its backbone with {cls.__name__}.from_backbone()."
            )
        model.set_backbone_frozen(model.config.freeze_backbone)  # loading replaces parameters (requires_grad=True)
        return (model, info) if kwargs.get("output_loading_info", False) else model

    @classmethod
    def _check_head_sizes(cls, path, kwargs: dict[str, Any]) -> None:
        """Raise a clear error when the requested head size differs from the checkpoint's."""
        if not cls._head_size_fields:
            return
        hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        saved = cls.config_class.from_pretrained(path, **hub)
        requested_config = kwargs.get("config")
        for field in cls._head_size_fields:
            if isinstance(requested_config, Dinov3HfHeadConfig):
                requested = getattr(requested_config, field, None)
            elif field == "num_labels" and kwargs.get("id2label") is not None:
                requested = len(kwargs["id2label"])
            else:
                requested = kwargs.get(field)
            if requested is not None and requested != getattr(saved, field):
                raise ValueError(
                    f"The checkpoint {path} has a head with {field}={getattr(saved, field)}, but {field}={requested} "
                    f"was requested: its head weights do not fit. Pass ignore_mismatched_sizes=True to load the "
                    f"backbone and initialise a new head, or leave {field} at the checkpoint's value."
                )
