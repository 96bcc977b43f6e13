"""The SSL recipe: every setting of DINOv3 pretraining in one dataclass, read from YAML with `key=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .schedules import make_schedule


@dataclass
class HeadConfig:
    """A DINO / iBOT projection head: MLP (n_layers) -> L2 norm -> bias-free linear to `prototypes`.

    `last_layer_init_std`: std of the prototypes' init (official 0.02). `normalize_prototypes`: L2-normalise the
    prototypes in the forward, so the scores are cosines (DINO v1's weight-normalised last layer; DINOv3 has none).
    The scores are bounded by the prototypes' norms (the bottleneck is unit-norm): with DINOv3's plain layer at std 0.02
    they differ between samples by ~1e-2, the Sinkhorn-Knopp targets stay almost uniform for thousands of steps and a
    short run learns little from DINO / iBOT. Small runs learn faster with normalised prototypes.
    """

    prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3
    last_layer_init_std: float = 0.02
    normalize_prototypes: bool = False


@dataclass
class GramConfig:
    """Gram anchoring (official `dinov3/loss/gram_loss.py`):
    `loss += weight(it) · GramLoss(student patches, Gram teacher patches)`.

    The Gram teacher is a frozen backbone: loaded from `teacher_checkpoint` (a backbone in any format, read like a
    backbone `init_from`: an official .pth needs `backbone.preset`; or a training checkpoint folder, whose EMA teacher
    backbone is used), else copied from the EMA teacher after `teacher_from_ema_at`
    steps (0: at the start). With `update_frequency` it is overwritten by the EMA teacher after every step `it` with
    it + 1 >= `first_update` and (it + 1) % `update_frequency` == 0, at most `max_updates` times.
    `teacher_size`: side of the Gram teacher's crops (undistorted views of the global crops' base crops; its patch
    tokens are downsampled bicubically to the student grid); None: the teacher sees the student's global crops.
    """

    weight: dict[str, Any] = field(default_factory=lambda: {"kind": "constant", "value": 1.0})
    teacher_size: int | None = None
    teacher_checkpoint: str | None = None
    teacher_from_ema_at: int = 0
    update_frequency: int | None = None
    first_update: int = 0
    max_updates: int = 0


@dataclass
class CropResolution:
    """One (global, local, Gram-teacher) crop-size triple of a mixed-resolution run and its probability (official
    `dinov3/configs/train/dinov3_vit7b16_high_res_adapt.yaml`)."""

    global_size: int
    local_size: int
    gram_size: int | None = None
    probability: float = 1.0


@dataclass
class PretrainConfig:
    """DINO + iBOT + KoLeo pretraining with an EMA teacher (official `dinov3/train/ssl_meta_arch.py`).

    Schedules are dicts for `dinov3_hf.ssl.schedules.make_schedule` over optimizer steps, e.g.
    {"kind": "warmup_constant", "warmup_iters": 100, "start": 0.0, "peak": 4e-4}; values may be exact expressions,
    e.g. "5e-5 * (4 * sqrt(4096 / 1024))". They are validated here, so errors name the recipe key.
    """

    # model: a backbone preset with overrides ({"preset": "vits16", "num_hidden_layers": 4, ...}) or a checkpoint
    backbone: dict[str, Any] = field(default_factory=lambda: {"preset": "vits16", "drop_path_rate": 0.0})
    backbone_checkpoint: str | None = None
    # where student and teacher start from; optimizer and step start afresh. A training checkpoint folder (checkpoint-N,
    # or a run's output folder): its EMA teacher initialises both, heads included (official `resume_from_teacher_chkpt`).
    # Or a backbone in any format (official .pth with the architecture `backbone.preset`, a transformers or our
    # folder, a Hub id): it initialises both backbones, with `backbone`'s other keys as config overrides (e.g.
    # drop_path_rate); the heads start fresh (continued pretraining from released weights)
    init_from: str | None = None
    dino_head: HeadConfig = field(default_factory=HeadConfig)
    ibot_head: HeadConfig = field(default_factory=HeadConfig)
    # crops and masks
    global_size: int = 224
    local_size: int = 96
    n_local_crops: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    horizontal_flips: bool = False
    # photometric distortions: overrides of `augment.DISTORTION_KEYS` (default: the official values), e.g.
    # {local_blur_probability: 0, global_blur_probabilities: [0, 0]}
    distortions: dict[str, Any] = field(default_factory=dict)
    # mixed resolutions (high-resolution adaptation): one triple drawn per batch with a seeded RNG, the same on every
    # rank; when set it replaces global_size / local_size / gram.teacher_size
    resolutions: list[CropResolution] | None = None
    resolution_seed: int = 65537
    mask_probability: float = 0.5
    mask_ratio_range: tuple[float, float] = (0.1, 0.5)
    # losses
    student_temp: float = 0.1
    teacher_temp: dict[str, Any] = field(
        default_factory=lambda: {"kind": "warmup_constant", "warmup_iters": 30, "start": 0.04, "peak": 0.07}
    )
    sinkhorn_iterations: int = 3
    dino_loss_weight: float = 1.0
    dino_local_weight: dict[str, Any] = field(default_factory=lambda: {"kind": "constant", "value": 1.0})
    ibot_loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1
    koleo_group_size: int | None = None  # None: per-device KoLeo; else distributed KoLeo over groups of this size
    gram: GramConfig | None = None  # None: no Gram anchoring
    # optimisation
    lr: dict[str, Any] = field(default_factory=lambda: {"kind": "warmup_cosine", "warmup_iters": 10, "total_iters": 100,
                                                        "start": 0.0, "peak": 1e-3, "end": 1e-6})
    weight_decay: dict[str, Any] = field(
        default_factory=lambda: {"kind": "warmup_constant", "warmup_iters": 0, "start": 0.04, "peak": 0.04}
    )
    momentum: dict[str, Any] = field(default_factory=lambda: {"kind": "warmup_cosine", "warmup_iters": 0, "total_iters": 100,
                                                              "start": 0.992, "peak": 0.992, "end": 1.0})
    freeze_last_layer_iters: int = 0
    # head warm-up: for the first N optimizer steps the backbones stay bit-identical (the student backbone's gradients
    # are dropped before the step, so AdamW neither decays nor moves it and keeps no moments for it; the teacher
    # backbone gets no EMA update) while the heads learn; then everything trains
    freeze_backbone_iters: int = 0
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    head_lr_multiplier: float = 1.0  # lr of the DINO / iBOT heads relative to the backbone's top layer (official 1)
    last_layer_wd_multiplier: float = 1.0  # weight decay of the prototypes relative to the heads' (official 1)
    clip_grad: float = 3.0
    adamw_betas: tuple[float, float] = (0.9, 0.999)
    max_consecutive_nan: int = 2
    # diagnostics: warn once when the DINO targets are still nearly uniform after this share of max_steps (None: never)
    uniform_targets_warning_after: float | None = 0.25

    def __post_init__(self) -> None:
        if self.resolutions is not None:
            probabilities = [r.probability for r in self.resolutions]
            if not probabilities or min(probabilities) <= 0 or abs(sum(probabilities) - 1.0) > 1e-6:
                raise ValueError(
                    f"recipe.resolutions needs at least one entry, each with probability > 0, summing to 1; got "
                    f"probabilities {probabilities}."
                )
        if self.gram is not None and self.gram.update_frequency is not None and self.gram.update_frequency < 1:
            raise ValueError(f"gram.update_frequency must be >= 1 (or null for no refresh), got {self.gram.update_frequency}.")
        if self.freeze_backbone_iters < 0:
            raise ValueError(f"recipe.freeze_backbone_iters must be >= 0, got {self.freeze_backbone_iters}.")
        if self.init_from is not None and self.backbone_checkpoint is not None:
            raise ValueError(
                "Set recipe.init_from or recipe.backbone_checkpoint, not both: init_from already initialises the backbones "
                f"(got init_from={self.init_from!r}, backbone_checkpoint={self.backbone_checkpoint!r})."
            )
        for name in ("teacher_temp", "dino_local_weight", "lr", "weight_decay", "momentum"):
            make_schedule(getattr(self, name), f"recipe.{name}")  # errors name the recipe key
        if self.gram is not None:
            make_schedule(self.gram.weight, "recipe.gram.weight")

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
        if isinstance(values.get("gram"), dict):
            values["gram"] = GramConfig(**values["gram"])
        if values.get("resolutions") is not None:
            values["resolutions"] = [CropResolution(**r) if isinstance(r, dict) else r for r in values["resolutions"]]
        for name in ("global_scale", "local_scale", "mask_ratio_range", "adamw_betas"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StudentConfig:
    """One distillation student: a backbone (`{"family": "vit" | "convnext", "preset": ..., **overrides}`, or a
    checkpoint), its heads (same prototype counts as the teacher's), and the ranks [start, end) that train it
    (None: every rank)."""

    name: str
    backbone: dict[str, Any]
    backbone_checkpoint: str | None = None
    dino_head: HeadConfig = field(default_factory=HeadConfig)
    ibot_head: HeadConfig = field(default_factory=HeadConfig)
    ranks: tuple[int, int] | None = None


@dataclass
class DistillationConfig(PretrainConfig):
    """Multi-student distillation (official `dinov3/configs/train/dinov3_vitl16_lvd1689m_distilled.yaml`):
    the inherited `backbone`, `dino_head` and `ibot_head` describe the frozen teacher, whose weights are the EMA teacher
    of `teacher_checkpoint` (a training checkpoint folder); each of `students` learns DINO + iBOT + KoLeo against its
    targets on unmasked crops.

    Crop sizes (`global_size`, `local_size`) are the teacher's. A student whose output stride is s times the teacher's
    patch size (a ConvNeXt, stride 32, under a ViT/16 teacher: s = 2) sees crops s times larger, so that every model
    has the same token grid; the collator makes the crops at the largest s and the others get bicubic downsamples.
    `momentum` is the schedule of the students' EMA copies (kept for evaluation).
    """

    teacher_checkpoint: str | None = None
    students: list[StudentConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher_checkpoint is None:
            raise ValueError("Distillation needs recipe.teacher_checkpoint: a training checkpoint folder of the teacher.")
        if not self.students:
            raise ValueError("Distillation needs at least one entry in recipe.students.")
        unused = [name for name in ("gram", "init_from", "resolutions", "koleo_group_size") if getattr(self, name) is not None]
        unused += ["freeze_backbone_iters"] if self.freeze_backbone_iters else []
        if unused:
            raise ValueError(
                f"{', '.join(unused)} are not used in distillation (KoLeo is per device, as in the official recipe); "
                "remove them from the recipe."
            )
        names = [student.name for student in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"Student names must be unique, got {names}.")
        for student in self.students:
            for kind in ("dino_head", "ibot_head"):
                ours, teachers = getattr(student, kind).prototypes, getattr(self, kind).prototypes
                if ours != teachers:
                    raise ValueError(
                        f"Student {student.name!r}: {kind}.prototypes is {ours} but the teacher's is {teachers}; "
                        "students must score the teacher's prototypes."
                    )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DistillationConfig":
        values = dict(values)
        students = []
        for student in values.pop("students", []):
            student = dict(student)
            for kind in ("dino_head", "ibot_head"):
                if isinstance(student.get(kind), dict):
                    student[kind] = HeadConfig(**student[kind])
            if student.get("ranks") is not None:
                student["ranks"] = tuple(student["ranks"])
            students.append(StudentConfig(**student))
        values["students"] = students
        return super().from_dict(values)


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
