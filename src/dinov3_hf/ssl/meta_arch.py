"""Student / EMA-teacher forward and loss assembly for DINOv3 pretraining (official_dinov3.md §6.1–6.4)."""

from __future__ import annotations

import torch
from torch import nn

from ..models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
from .config import HeadConfig, PretrainConfig
from .heads import DINOHead
from .losses.dino import DINOLoss
from .losses.ibot import IBOTPatchLoss, masks_weight
from .losses.koleo import DistributedKoLeoLoss, KoLeoLoss
from .losses.sinkhorn import sinkhorn_knopp
from .schedules import make_schedule
from .teachers import make_teacher


def build_backbone(recipe: PretrainConfig) -> Dinov3HfViTModel:
    """The student backbone: a preset with overrides, or a checkpoint in any format (`backbone_checkpoint`)."""
    if recipe.backbone_checkpoint is not None:
        from ..convert import load_model

        overrides = {k: v for k, v in recipe.backbone.items() if k != "preset"}
        return load_model(recipe.backbone_checkpoint, arch=recipe.backbone.get("preset"), **overrides).train()
    settings = dict(recipe.backbone)
    preset = settings.pop("preset", None)
    config = Dinov3HfViTConfig.from_preset(preset, **settings) if preset else Dinov3HfViTConfig(**settings)
    return Dinov3HfViTModel(config)


def build_head(in_dim: int, head: HeadConfig) -> DINOHead:
    return DINOHead(in_dim, head.prototypes, hidden_dim=head.hidden_dim, bottleneck_dim=head.bottleneck_dim,
                    n_layers=head.n_layers)


class SSLMetaArch(nn.Module):
    """`student` = {backbone, dino_head, ibot_head}; `teacher` = its EMA copy (no gradients, eval mode).

    forward(global_crops [2B,3,G,G], local_crops [L·B,3,l,l], masks [2B,N], iteration) returns the losses:
      dino_global = DINO(student global CLS vs teacher, same view skipped), dino_local = DINO(student local CLS vs
      teacher), ibot = iBOT(student masked patches vs teacher), koleo = mean over the 2 views of KoLeo(student CLS),
      loss = w_dino·(2L/(2L+2))·dino_local + w_dino·(2/(2L+2))·dino_global + w_ibot·ibot + 2·w_koleo·koleo.
    Teacher targets come from Sinkhorn-Knopp at the scheduled teacher temperature, over all ranks.
    """

    def __init__(self, recipe: PretrainConfig):
        super().__init__()
        self.recipe = recipe
        backbone = build_backbone(recipe)
        dim = backbone.config.hidden_size
        self.student = nn.ModuleDict(
            {"backbone": backbone, "dino_head": build_head(dim, recipe.dino_head), "ibot_head": build_head(dim, recipe.ibot_head)}
        )
        self.teacher = make_teacher(self.student)
        self.dino_loss = DINOLoss(recipe.student_temp)
        self.ibot_loss = IBOTPatchLoss(recipe.student_temp)
        self.koleo_loss = KoLeoLoss() if recipe.koleo_group_size is None else DistributedKoLeoLoss(recipe.koleo_group_size)
        self.teacher_temp = make_schedule(recipe.teacher_temp)

    def train(self, mode: bool = True) -> "SSLMetaArch":
        super().train(mode)
        self.teacher.eval()  # the teacher never uses dropout, drop path or RoPE augmentation
        return self

    @torch.no_grad()
    def teacher_targets(
        self, global_crops: torch.Tensor, masks: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(CLS targets [2B, K], masked-patch targets [M, K]) from the teacher on the unmasked global crops."""
        out = self.teacher["backbone"](global_crops)
        cls_logits = self.teacher["dino_head"](out.pooler_output)
        patch_logits = self.teacher["ibot_head"](out.patch_tokens[masks])
        iterations = self.recipe.sinkhorn_iterations
        return sinkhorn_knopp(cls_logits, temperature, iterations), sinkhorn_knopp(patch_logits, temperature, iterations)

    def forward(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor, masks: torch.Tensor, iteration: int = 0, **unused
    ) -> dict[str, torch.Tensor]:
        n_global = global_crops.shape[0]
        if n_global % 2 or masks.shape[0] != n_global:
            raise ValueError(
                f"Expected 2B global crops and 2B mask rows; got {n_global} crops and {masks.shape[0]} masks."
            )
        batch = n_global // 2
        n_local = local_crops.shape[0] // batch
        temperature = self.teacher_temp(iteration)
        teacher_cls, teacher_patches = self.teacher_targets(global_crops, masks, temperature)
        teacher_cls = teacher_cls.view(2, batch, -1)

        out_global, out_local = self.student["backbone"]([global_crops, local_crops], bool_masked_pos=[masks, None])
        cls_tokens = torch.cat([out_global.pooler_output, out_local.pooler_output])
        cls_logits = self.student["dino_head"](cls_tokens)
        global_logits = cls_logits[:n_global].view(2, batch, -1)
        local_logits = cls_logits[n_global:].view(n_local, batch, -1)
        patch_logits = self.student["ibot_head"](out_global.patch_tokens[masks])

        losses = {
            "dino_global": self.dino_loss(global_logits, teacher_cls, ignore_diagonal=True),
            "dino_local": self.dino_loss(local_logits, teacher_cls),
            "ibot": self.ibot_loss(patch_logits, teacher_patches, masks_weight(masks), n_images=n_global),
            "koleo": torch.stack([self.koleo_loss(view) for view in out_global.pooler_output.view(2, batch, -1)]).mean(),
        }
        recipe = self.recipe
        local_terms, global_terms = 2 * n_local, 2
        losses["loss"] = (
            recipe.dino_loss_weight * local_terms / (local_terms + global_terms) * losses["dino_local"]
            + recipe.dino_loss_weight * global_terms / (local_terms + global_terms) * losses["dino_global"]
            + recipe.ibot_loss_weight * losses["ibot"]
            + 2 * recipe.koleo_loss_weight * losses["koleo"]
        )
        losses["teacher_temp"] = torch.tensor(temperature)
        return losses
