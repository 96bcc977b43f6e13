"""Single-teacher multi-student distillation (official `dinov3/configs/train/dinov3_vitl16_lvd1689m_distilled.yaml`).

One frozen teacher (backbone + DINO / iBOT heads from a training checkpoint) runs once per batch; every student
(ViT or ConvNeXt) learns DINO + iBOT + KoLeo against its Sinkhorn-Knopp targets on unmasked crops, and keeps an EMA
copy for evaluation.

Across processes the teacher is sharded over all ranks: each rank runs it on its own samples, then the crops and the
teacher's backbone outputs are all-gathered into the global batch, which each student subgroup (the ranks of
`StudentConfig.ranks`) splits among its ranks; the teacher heads and Sinkhorn-Knopp then run per subgroup, and the
students' gradients are averaged within their subgroup (DDP over the subgroup). In one process this is one teacher
forward for all students.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DistillationConfig, StudentConfig
from .losses.sinkhorn import sinkhorn_knopp
from .meta_arch import (
    BACKBONE_FAMILIES,
    StudentObjective,
    build_backbone,
    build_head,
    check_crops,
    read_training_checkpoint,
    submodule_state,
)
from .schedules import make_schedule
from .teachers import ema_update, make_teacher
from .trainer import SSLTrainer


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def output_stride(settings: dict[str, Any]) -> int:
    """Pixels per output token of a backbone described by `{"family": ..., "preset": ..., **overrides}`."""
    settings = dict(settings)
    config_class, _ = BACKBONE_FAMILIES[settings.pop("family", "vit")]
    preset = settings.pop("preset", None)
    return (config_class.from_preset(preset, **settings) if preset else config_class(**settings)).output_stride


def resize_crops(crops: Tensor, factor: float) -> Tensor:
    """Crops [N, 3, H, W] resized by `factor` (bicubic, antialiased); unchanged at factor 1."""
    if factor == 1:
        return crops
    size = (round(crops.shape[-2] * factor), round(crops.shape[-1] * factor))
    return F.interpolate(crops, size=size, mode="bicubic", align_corners=False, antialias=True)


def student_subgroups(students: list[StudentConfig], world_size: int) -> list[tuple[int, int]]:
    """The distinct rank ranges [start, end) of the students (None = every rank). Every rank must fall in exactly one,
    so the students that share a rank share its whole subgroup."""
    ranges = sorted({student.ranks or (0, world_size) for student in students})
    covered = [rank for start, end in ranges for rank in range(start, end)]
    if sorted(covered) != list(range(world_size)):
        raise ValueError(
            f"Student rank ranges {ranges} must split the {world_size} ranks into disjoint [start, end) ranges that "
            "cover every rank."
        )
    return ranges


class DistillationMetaArch(nn.Module):
    """`teacher` = frozen {backbone, dino_head, ibot_head}; `students[name]` = {backbone, dino_head, ibot_head} for the
    students of this rank's subgroup, `student_emas[name]` their EMA copies.

    forward(global_crops [2B,3,G,G], local_crops [L·B,3,l,l], masks [2B,N], iteration) at the crop scale of the
    largest-stride student returns "loss" = Σ_students loss and "<name>/<term>" for each student's
    `StudentObjective` terms.
    """

    def __init__(self, recipe: DistillationConfig):
        super().__init__()
        self.recipe = recipe
        rank, world_size = _world()
        backbone = build_backbone(recipe.backbone)
        dim = backbone.config.hidden_size
        teacher = nn.ModuleDict(
            {"backbone": backbone, "dino_head": build_head(dim, recipe.dino_head), "ibot_head": build_head(dim, recipe.ibot_head)}
        )
        teacher.load_state_dict(submodule_state(read_training_checkpoint(recipe.teacher_checkpoint), "teacher"))
        self.teacher = make_teacher(teacher)

        teacher_stride = backbone.config.output_stride
        self.crop_scales = {s.name: output_stride(s.backbone) / teacher_stride for s in recipe.students}
        self.max_crop_scale = max(self.crop_scales.values())
        self.subgroup_ranges = student_subgroups(recipe.students, world_size)
        self.subgroup_range = next(r for r in self.subgroup_ranges if r[0] <= rank < r[1])
        # every rank creates every subgroup, in the same order (a collective requirement of new_group)
        groups = [dist.new_group(list(range(*r))) for r in self.subgroup_ranges] if world_size > 1 else []
        self.process_group = groups[self.subgroup_ranges.index(self.subgroup_range)] if groups else None

        self.students = nn.ModuleDict()
        for student in recipe.students:
            if (student.ranks or (0, world_size)) == self.subgroup_range:
                student_backbone = build_backbone(student.backbone, student.backbone_checkpoint)
                width = student_backbone.config.hidden_size
                self.students[student.name] = nn.ModuleDict({
                    "backbone": student_backbone,
                    "dino_head": build_head(width, student.dino_head),
                    "ibot_head": build_head(width, student.ibot_head),
                })
        self.student_emas = nn.ModuleDict({name: make_teacher(student) for name, student in self.students.items()})
        self.objective = StudentObjective(recipe)
        self.teacher_temp = make_schedule(recipe.teacher_temp)

    def student_modules(self) -> list[dict[str, nn.Module]]:
        """One {backbone, dino_head, ibot_head} dict per student of this rank."""
        return [dict(student.items()) for student in self.students.values()]

    def update_ema(self, momentum: float) -> None:
        """Each student's EMA copy ← m·EMA + (1 − m)·student."""
        for name, student in self.students.items():
            ema_update(self.student_emas[name], student, momentum)

    def train(self, mode: bool = True) -> "DistillationMetaArch":
        super().train(mode)
        self.teacher.eval()
        self.student_emas.eval()
        return self

    def _subgroup_batch(self, tensors: dict[str, Tensor], views: dict[str, int]) -> dict[str, Tensor]:
        """All-gather view-major tensors [V·b, ...] over the world into the global batch [V·W·b, ...] (rank order),
        and keep this rank's share of it within its subgroup."""
        rank, world_size = _world()
        if world_size == 1:
            return tensors
        start, end = self.subgroup_range
        out = {}
        for name, tensor in tensors.items():
            n_views = views[name]
            per_view = tensor.reshape(n_views, -1, *tensor.shape[1:])
            parts = [torch.empty_like(per_view) for _ in range(world_size)]
            dist.all_gather(parts, per_view.contiguous())
            gathered = torch.cat(parts, dim=1)
            share = gathered.shape[1] // (end - start)
            offset = (rank - start) * share
            out[name] = gathered[:, offset : offset + share].flatten(0, 1)
        return out

    def forward(
        self, global_crops: Tensor, local_crops: Tensor, masks: Tensor, iteration: int = 0, **unused
    ) -> dict[str, Tensor]:
        check_crops(global_crops, local_crops, masks)
        n_local = local_crops.shape[0] // (global_crops.shape[0] // 2)
        with torch.no_grad():
            out = self.teacher["backbone"](resize_crops(global_crops, 1 / self.max_crop_scale))
            batch = self._subgroup_batch(
                {"global_crops": global_crops, "local_crops": local_crops, "masks": masks,
                 "teacher_cls": out.pooler_output, "teacher_patches": out.patch_tokens},
                {"global_crops": 2, "local_crops": n_local, "masks": 2, "teacher_cls": 2, "teacher_patches": 2},
            )
            masks = batch["masks"]
            temperature, iterations = self.teacher_temp(iteration), self.recipe.sinkhorn_iterations
            teacher_cls = sinkhorn_knopp(
                self.teacher["dino_head"](batch["teacher_cls"]), temperature, iterations, group=self.process_group
            )
            teacher_patches = sinkhorn_knopp(
                self.teacher["ibot_head"](batch["teacher_patches"][masks]), temperature, iterations,
                group=self.process_group,
            )
        losses: dict[str, Tensor] = {}
        total = 0.0
        for name, student in self.students.items():
            factor = self.crop_scales[name] / self.max_crop_scale
            student_losses, *_ = self.objective(
                student, teacher_cls, teacher_patches, resize_crops(batch["global_crops"], factor),
                resize_crops(batch["local_crops"], factor), masks, iteration, mask_inputs=False,
            )
            total = total + student_losses["loss"]
            losses.update({f"{name}/{term}": value for term, value in student_losses.items()})
        losses["loss"] = total
        losses["teacher_temp"] = torch.tensor(temperature)
        return losses


class DistillationTrainer(SSLTrainer):
    """`SSLTrainer` for `DistillationMetaArch`: across processes the model is wrapped in DDP over this rank's student
    subgroup (students differ between subgroups); `save_backbones` saves every student and its EMA copy."""

    def _wrap_model(self, model: nn.Module, training: bool = True, dataloader=None) -> nn.Module:
        if self.args.world_size > 1 and training and not isinstance(model, nn.parallel.DistributedDataParallel):
            return nn.parallel.DistributedDataParallel(model, process_group=model.process_group)
        return model

    def save_backbones(self, output_dir: str | Path) -> dict[str, Path]:
        """Save each student's backbone and its EMA copy as `from_pretrained` folders `<name>` and `<name>_ema`.

        transformers writes checkpoints on global rank 0 only, so the first rank of each student subgroup sends its
        students' weights there; every rank must call this."""
        from ..processing import Dinov3HfImageProcessor

        rank, world_size = _world()
        local = {}
        if rank == self.model.subgroup_range[0]:
            for name in self.model.students:
                for suffix, source in (("", self.model.students), ("_ema", self.model.student_emas)):
                    backbone = source[name]["backbone"]
                    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
                    local[name + suffix] = (type(backbone), backbone.config, state, self.model.crop_scales[name])
        gathered = [local]
        if world_size > 1:
            gathered = [None] * world_size
            dist.all_gather_object(gathered, local)
        paths: dict[str, Path] = {}
        if rank != 0:
            return paths
        for entries in gathered:
            for folder, (model_class, config, state, crop_scale) in entries.items():
                backbone = model_class(config)
                backbone.load_state_dict(state)
                path = Path(output_dir) / folder
                backbone.save_pretrained(path)
                size = round(self.recipe.global_size * crop_scale)
                Dinov3HfImageProcessor.for_model_config(config, size={"height": size, "width": size}).save_pretrained(path)
                paths[folder] = path
        return paths
