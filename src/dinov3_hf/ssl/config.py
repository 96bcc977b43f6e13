"""The SSL recipe: every setting of DINOv3 pretraining in one dataclass, read from YAML with `key=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class HeadConfig:
    """A DINO / iBOT projection head: MLP (n_layers) -> L2 norm -> bias-free linear to `prototypes`."""

    prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3


@dataclass
class PretrainConfig:
    """DINO + iBOT + KoLeo pretraining with an EMA teacher (official_dinov3.md §6).

    Schedules are dicts for `dinov3_hf.ssl.schedules.make_schedule` over optimizer steps, e.g.
    {"kind": "warmup_constant", "warmup_iters": 100, "start": 0.0, "peak": 4e-4}.
    """

    # model: a backbone preset with overrides ({"preset": "vits16", "num_hidden_layers": 4, ...}) or a checkpoint
    backbone: dict[str, Any] = field(default_factory=lambda: {"preset": "vits16", "drop_path_rate": 0.0})
    backbone_checkpoint: str | None = None
    dino_head: HeadConfig = field(default_factory=HeadConfig)
    ibot_head: HeadConfig = field(default_factory=HeadConfig)
    # crops and masks
    global_size: int = 224
    local_size: int = 96
    n_local_crops: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    horizontal_flips: bool = False
    mask_probability: float = 0.5
    mask_ratio_range: tuple[float, float] = (0.1, 0.5)
    # losses
    student_temp: float = 0.1
    teacher_temp: dict[str, Any] = field(
        default_factory=lambda: {"kind": "warmup_constant", "warmup_iters": 30, "start": 0.04, "peak": 0.07}
    )
    sinkhorn_iterations: int = 3
    dino_loss_weight: float = 1.0
    ibot_loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1
    koleo_group_size: int | None = None  # None: per-device KoLeo; else distributed KoLeo over groups of this size
    # optimisation
    lr: dict[str, Any] = field(default_factory=lambda: {"kind": "warmup_cosine", "warmup_iters": 10, "total_iters": 100,
                                                        "start": 0.0, "peak": 1e-3, "end": 1e-6})
    weight_decay: dict[str, Any] = field(
        default_factory=lambda: {"kind": "warmup_constant", "warmup_iters": 0, "start": 0.04, "peak": 0.04}
    )
    momentum: dict[str, Any] = field(default_factory=lambda: {"kind": "warmup_cosine", "warmup_iters": 0, "total_iters": 100,
                                                              "start": 0.992, "peak": 0.992, "end": 1.0})
    freeze_last_layer_iters: int = 0
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    clip_grad: float = 3.0
    adamw_betas: tuple[float, float] = (0.9, 0.999)
    max_consecutive_nan: int = 2

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PretrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown recipe keys: {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}.")
        values = dict(values)
        for name in ("dino_head", "ibot_head"):
            if isinstance(values.get(name), dict):
                values[name] = HeadConfig(**values[name])
        for name in ("global_scale", "local_scale", "mask_ratio_range", "adamw_betas"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_yaml_with_overrides(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a YAML file and apply `a.b.c=value` overrides (values parsed as YAML, so `lr.peak=1e-3` is a float)."""
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} is not of the form key=value (e.g. recipe.n_local_crops=4).")
        dotted, raw = item.split("=", 1)
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: {key!r} is not a section.")
        node[leaf] = yaml.safe_load(raw)
    return config
