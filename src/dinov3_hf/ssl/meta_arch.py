"""Student / EMA-teacher forward and loss assembly for DINOv3 pretraining, Gram anchoring and high-resolution
adaptation (official `dinov3/train/ssl_meta_arch.py`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import load_file
from torch import nn
from transformers.trainer_utils import get_last_checkpoint

from ..models.convnext import Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from ..models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
from .config import HeadConfig, PretrainConfig
from .diagnostics import feature_std, target_diagnostics
from .heads import DINOHead
from .losses.dino import DINOLoss
from .losses.gram import GramLoss, downsample_patch_tokens
from .losses.ibot import IBOTPatchLoss, masks_weight
from .losses.koleo import DistributedKoLeoLoss, KoLeoLoss
from .losses.sinkhorn import sinkhorn_knopp
from .schedules import make_schedule
from .teachers import ema_update, make_teacher


BACKBONE_FAMILIES = {"vit": (Dinov3HfViTConfig, Dinov3HfViTModel), "convnext": (Dinov3HfConvNextConfig, Dinov3HfConvNextModel)}


def build_backbone(
    settings: dict[str, Any], checkpoint: str | None = None
) -> Dinov3HfViTModel | Dinov3HfConvNextModel:
    """A backbone from `{"family": "vit" | "convnext" (default vit), "preset": name, **config overrides}`, or from a
    checkpoint in any format (`checkpoint`, with the settings as config overrides), in training mode."""
    settings = dict(settings)
    family = settings.pop("family", "vit")
    if family not in BACKBONE_FAMILIES:
        raise ValueError(f"Unknown backbone family {family!r}; expected one of {', '.join(BACKBONE_FAMILIES)}.")
    preset = settings.pop("preset", None)
    if checkpoint is not None:
        from ..convert import load_model

        return load_model(checkpoint, arch=preset, **settings).train()
    config_class, model_class = BACKBONE_FAMILIES[family]
    config = config_class.from_preset(preset, **settings) if preset else config_class(**settings)
    return model_class(config)


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state of a training checkpoint: `path/model.safetensors`, or that of the last `checkpoint-N` in
    `path` (a run's output folder). Keys are `student.*`, `teacher.*` (and `gram_teacher.*`)."""
    folder = Path(path)
    if not (folder / "model.safetensors").is_file():
        last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        if last is None:
            raise FileNotFoundError(
                f"{path} is neither a training checkpoint folder (with model.safetensors) nor a run folder with "
                "checkpoint-N subfolders."
            )
        folder = Path(last)
    return load_file(folder / "model.safetensors")


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a training checkpoint (a local folder without config.json: checkpoint-N, or a run's output
    folder) rather than a backbone in any format (an official .pth file, a transformers or our model folder, a Hub
    id). Raises FileNotFoundError for a path that is neither on disk nor a valid Hub id."""
    folder = Path(path)
    if not folder.exists():
        try:
            validate_repo_id(str(path))
        except HFValidationError:
            raise FileNotFoundError(
                f"{path} does not exist. Expected a training checkpoint folder (checkpoint-N) or a run folder with "
                "checkpoint-N subfolders, or a backbone: an official .pth file (architecture from "
                "recipe.backbone.preset), a transformers or dinov3_hf model folder, or a Hub id."
            ) from None
        return False
    return folder.is_dir() and not (folder / "config.json").is_file()


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries of `state` under `prefix.`, with the prefix stripped."""
    found = {key[len(prefix) + 1 :]: value for key, value in state.items() if key.startswith(prefix + ".")}
    if not found:
        roots = sorted({key.split(".")[0] for key in state})
        raise KeyError(f"The checkpoint has no {prefix!r} weights; its top-level modules are {roots}.")
    return found


def build_head(in_dim: int, head: HeadConfig) -> DINOHead:
    return DINOHead(in_dim, head.prototypes, hidden_dim=head.hidden_dim, bottleneck_dim=head.bottleneck_dim,
                    n_layers=head.n_layers, last_layer_init_std=head.last_layer_init_std,
                    normalize_prototypes=head.normalize_prototypes)


def check_crops(global_crops: torch.Tensor, local_crops: torch.Tensor, masks: torch.Tensor) -> None:
    """2B global crops with 2B mask rows, and a whole number of local crops per sample."""
    n_global = global_crops.shape[0]
    if n_global % 2 or masks.shape[0] != n_global or local_crops.shape[0] % (n_global // 2 or 1):
        raise ValueError(
            f"Expected 2B global crops, 2B mask rows and L·B local crops; got {n_global} global crops, "
            f"{masks.shape[0]} mask rows and {local_crops.shape[0]} local crops."
        )


class StudentObjective(nn.Module):
    """DINO + iBOT + KoLeo of one student against teacher targets (official `dinov3/loss/`):

      dino_global = DINO(global CLS vs teacher, same view skipped), dino_local = DINO(local CLS vs teacher),
      ibot = iBOT(patch tokens at the masked positions vs teacher), koleo = mean over the 2 views of KoLeo(CLS),
      loss = w_dino·(2L/(2L+2))·λ_local(it)·dino_local + w_dino·(2/(2L+2))·dino_global + w_ibot·ibot + 2·w_koleo·koleo.
    With `mask_inputs` the student's global crops are masked (pretraining); otherwise (distillation) it sees them
    whole and iBOT is still trained at the masked positions.
    """

    def __init__(self, recipe: PretrainConfig):
        super().__init__()
        self.recipe = recipe
        self.dino_loss = DINOLoss(recipe.student_temp)
        self.ibot_loss = IBOTPatchLoss(recipe.student_temp)
        self.koleo_loss = KoLeoLoss() if recipe.koleo_group_size is None else DistributedKoLeoLoss(recipe.koleo_group_size)
        self.dino_local_weight = make_schedule(recipe.dino_local_weight)

    def forward(
        self,
        student: nn.ModuleDict,
        teacher_cls: torch.Tensor,
        teacher_patches: torch.Tensor,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor,
        masks: torch.Tensor,
        iteration: int,
        mask_inputs: bool,
    ) -> tuple[dict[str, torch.Tensor], Any, tuple[torch.Tensor, torch.Tensor]]:
        """(losses, the student's backbone output on the global crops, its (global-crop CLS logits [2B, K], masked
        patch logits [M, K])); teacher_cls [2B, K], teacher_patches [M, K]."""
        n_global = global_crops.shape[0]
        batch = n_global // 2
        n_local = local_crops.shape[0] // batch
        out_global, out_local = student["backbone"](
            [global_crops, local_crops], **({"bool_masked_pos": [masks, None]} if mask_inputs else {})
        )
        cls_logits = student["dino_head"](torch.cat([out_global.pooler_output, out_local.pooler_output]))
        global_logits = cls_logits[:n_global].view(2, batch, -1)
        local_logits = cls_logits[n_global:].view(n_local, batch, -1)
        patch_logits = student["ibot_head"](out_global.patch_tokens[masks])
        teacher_cls = teacher_cls.view(2, batch, -1)
        losses = {
            "dino_global": self.dino_loss(global_logits, teacher_cls, ignore_diagonal=True),
            "dino_local": self.dino_loss(local_logits, teacher_cls),
            "ibot": self.ibot_loss(patch_logits, teacher_patches, masks_weight(masks), n_images=n_global),
            "koleo": torch.stack([self.koleo_loss(view) for view in out_global.pooler_output.view(2, batch, -1)]).mean(),
        }
        recipe = self.recipe
        local_terms, global_terms = 2 * n_local, 2
        losses["loss"] = (
            recipe.dino_loss_weight * local_terms / (local_terms + global_terms) * self.dino_local_weight(iteration)
            * losses["dino_local"]
            + recipe.dino_loss_weight * global_terms / (local_terms + global_terms) * losses["dino_global"]
            + recipe.ibot_loss_weight * losses["ibot"]
            + 2 * recipe.koleo_loss_weight * losses["koleo"]
        )
        return losses, out_global, (cls_logits[:n_global], patch_logits)


class SSLMetaArch(nn.Module):
    """`student` = {backbone, dino_head, ibot_head}; `teacher` = its EMA copy (no gradients, eval mode); with
    `recipe.gram`, `gram_teacher` = a frozen backbone (see `GramConfig`) and `gram_updates` counts its refreshes.

    forward(global_crops [2B,3,G,G], local_crops [L·B,3,l,l], masks [2B,N], iteration[, gram_crops [2B,3,S,S]])
    returns the `StudentObjective` losses of the masked student against the EMA teacher, plus with `recipe.gram`
      gram = GramLoss(student global patch tokens, Gram-teacher patch tokens on gram_crops resized to the student
      grid), loss += w_gram(it)·gram.
    Teacher targets come from Sinkhorn-Knopp at the scheduled teacher temperature, over all ranks.
    """

    def __init__(self, recipe: PretrainConfig):
        super().__init__()
        self.recipe = recipe
        from_backbone = recipe.init_from is not None and not is_training_checkpoint(recipe.init_from)
        backbone = build_backbone(recipe.backbone, recipe.init_from if from_backbone else recipe.backbone_checkpoint)
        dim = backbone.config.hidden_size
        self.student = nn.ModuleDict(
            {"backbone": backbone, "dino_head": build_head(dim, recipe.dino_head), "ibot_head": build_head(dim, recipe.ibot_head)}
        )
        if recipe.init_from is not None and not from_backbone:
            teacher_state = submodule_state(read_training_checkpoint(recipe.init_from), "teacher")
            self.student.load_state_dict(teacher_state)
        self.teacher = make_teacher(self.student)
        if recipe.gram is not None:
            self.gram_teacher = self.load_gram_teacher(recipe.gram.teacher_checkpoint)
            self.register_buffer("gram_updates", torch.zeros((), dtype=torch.long))
            self.gram_loss = GramLoss()
            self.gram_weight = make_schedule(recipe.gram.weight)
        self.objective = StudentObjective(recipe)
        self.teacher_temp = make_schedule(recipe.teacher_temp)

    def student_modules(self) -> list[dict[str, nn.Module]]:
        """The trained modules, one {backbone, dino_head, ibot_head} dict per student (for optimizer groups, clipping)."""
        return [dict(self.student.items())]

    def update_ema(self, momentum: float, backbone: bool = True) -> None:
        """EMA teacher ← m·teacher + (1 − m)·student; the heads only when `backbone` is False (head warm-up: even
        with teacher == student, m·t + (1 − m)·t is not bit-exactly t)."""
        for name in self.student:
            if backbone or name != "backbone":
                ema_update(self.teacher[name], self.student[name], momentum)

    def load_gram_teacher(self, checkpoint: str | None) -> nn.Module:
        """A frozen backbone: the EMA teacher's, or one from `checkpoint` (a training checkpoint folder's EMA teacher
        backbone, or a backbone in any format, read with `recipe.backbone` as for `init_from`)."""
        gram_teacher = make_teacher(self.teacher["backbone"])
        if checkpoint is None:
            return gram_teacher
        if is_training_checkpoint(checkpoint):
            state = submodule_state(read_training_checkpoint(checkpoint), "teacher.backbone")
        else:
            state = build_backbone(self.recipe.backbone, checkpoint).state_dict()
        gram_teacher.load_state_dict(state)
        return gram_teacher

    @torch.no_grad()
    def refresh_gram_teacher(self, completed_steps: int) -> bool:
        """After `completed_steps` optimizer steps: copy the EMA teacher into the Gram teacher when the recipe says so
        (`teacher_from_ema_at`, or the `update_frequency` cadence). Returns whether it was copied."""
        gram = self.recipe.gram
        if gram is None:
            return False
        at_load = gram.teacher_checkpoint is None and gram.teacher_from_ema_at > 0 and completed_steps == gram.teacher_from_ema_at
        refresh = (
            gram.update_frequency is not None
            and completed_steps >= gram.first_update
            and completed_steps % gram.update_frequency == 0
            and int(self.gram_updates) < gram.max_updates
        )
        if not (at_load or refresh):
            return False
        self.gram_teacher.load_state_dict(self.teacher["backbone"].state_dict())
        if refresh:
            self.gram_updates += 1
        return True

    def train(self, mode: bool = True) -> "SSLMetaArch":
        super().train(mode)
        self.teacher.eval()  # the teacher never uses dropout, drop path or RoPE augmentation
        if self.recipe.gram is not None:
            self.gram_teacher.eval()
        return self

    @torch.no_grad()
    def teacher_targets(
        self, global_crops: torch.Tensor, masks: torch.Tensor, temperature: float
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((CLS logits, CLS targets) [2B, K], (masked-patch logits, targets) [M, K]) from the teacher on the unmasked
        global crops."""
        out = self.teacher["backbone"](global_crops)
        cls_logits = self.teacher["dino_head"](out.pooler_output)
        patch_logits = self.teacher["ibot_head"](out.patch_tokens[masks])
        iterations = self.recipe.sinkhorn_iterations
        return (
            (cls_logits, sinkhorn_knopp(cls_logits, temperature, iterations)),
            (patch_logits, sinkhorn_knopp(patch_logits, temperature, iterations)),
        )

    @torch.no_grad()
    def gram_targets(self, crops: torch.Tensor, student_grid: tuple[int, int]) -> torch.Tensor:
        """Gram-teacher patch tokens on `crops`, bicubic-resized to the student's patch grid: [2B, N, D]."""
        patch = self.gram_teacher.config.patch_size
        tokens = self.gram_teacher(crops).patch_tokens
        return downsample_patch_tokens(tokens, (crops.shape[-2] // patch, crops.shape[-1] // patch), student_grid)

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor,
        masks: torch.Tensor,
        iteration: int = 0,
        gram_crops: torch.Tensor | None = None,
        **unused,
    ) -> dict[str, torch.Tensor]:
        check_crops(global_crops, local_crops, masks)
        temperature = self.teacher_temp(iteration)
        (cls_logits, teacher_cls), (patch_logits, teacher_patches) = self.teacher_targets(global_crops, masks, temperature)
        losses, out_global, (student_cls, student_patches) = self.objective(
            self.student, teacher_cls, teacher_patches, global_crops, local_crops, masks, iteration, mask_inputs=True
        )
        diagnostics = {
            "dino": target_diagnostics(cls_logits, teacher_cls, student_cls),
            "ibot": target_diagnostics(patch_logits, teacher_patches, student_patches),
        }
        losses.update({f"{head}_{name}": value for head, values in diagnostics.items() for name, value in values.items()})
        losses["cls_std"] = feature_std(out_global.pooler_output)
        if self.recipe.gram is not None:
            patch = self.student["backbone"].config.patch_size
            grid = (global_crops.shape[-2] // patch, global_crops.shape[-1] // patch)
            teacher_tokens = self.gram_targets(gram_crops if gram_crops is not None else global_crops, grid)
            losses["gram"] = self.gram_loss(out_global.patch_tokens, teacher_tokens)
            losses["loss"] = losses["loss"] + self.gram_weight(iteration) * losses["gram"]
        losses["teacher_temp"] = torch.tensor(temperature)
        return losses
