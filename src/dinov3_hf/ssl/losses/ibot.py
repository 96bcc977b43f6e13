"""iBOT masked-patch loss (official `dinov3/loss/ibot_patch_loss.py`).

For the M masked patches of a batch of ``n_images`` global crops, with teacher probabilities
``P[m]`` and student logits ``s[m]`` at the same positions, and per-patch weights ``w_m`` =
1 / (number of masked patches in patch m's image):

    ℓ_m = Σ_k P[m, k] · log_softmax(s[m] / τ_s)_k
    L   = − Σ_m w_m · ℓ_m / n_images

so each masked image contributes the mean over its masked patches, and ``n_images`` counts all
global crops, masked or not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masks_weight(masks: Tensor) -> Tensor:
    """Per-masked-patch weights [M] (fp32) from boolean masks [N_img, N_patches].

    Entry m belongs to the m-th True position in row-major order (the order of ``masks[masks]`` and
    ``masks.flatten().nonzero()``) and equals 1 / (number of True entries in its row).
    """
    if masks.ndim != 2 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a bool tensor [N_img, N_patches], got {masks.dtype} {tuple(masks.shape)}")
    per_image = masks.sum(dim=1, keepdim=True).clamp_min(1).float()
    return (1.0 / per_image).expand(masks.shape)[masks]


class IBOTPatchLoss(nn.Module):
    """Weighted cross-entropy between teacher and student distributions of the masked patches, in fp32."""

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        self.student_temp = student_temp

    def forward(self, student_logits: Tensor, teacher_probs: Tensor, masks_weight: Tensor, n_images: int) -> Tensor:
        """Scalar loss from student logits [M, K], teacher probabilities [M, K] and weights [M] (M may be 0)."""
        if student_logits.ndim != 2:
            raise ValueError(f"student_logits must be [M, K], got shape {tuple(student_logits.shape)}")
        if teacher_probs.shape != student_logits.shape:
            raise ValueError(
                f"teacher_probs {tuple(teacher_probs.shape)} must match student_logits {tuple(student_logits.shape)}"
            )
        if masks_weight.shape != student_logits.shape[:1]:
            raise ValueError(
                f"masks_weight must be [M={student_logits.shape[0]}], got shape {tuple(masks_weight.shape)}"
            )
        if n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {n_images}")

        log_probs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        per_patch = (teacher_probs.float() * log_probs).sum(dim=-1)
        return -(per_patch * masks_weight.float()).sum() / n_images
