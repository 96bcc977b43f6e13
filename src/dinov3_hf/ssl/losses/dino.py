"""DINO loss on the CLS-token prototype scores (official `dinov3/loss/dino_clstoken_loss.py`).

For S student views and T teacher views of the same B images, with teacher probabilities
``P[t, b]`` (e.g. from :func:`~dinov3_hf.ssl.losses.sinkhorn.sinkhorn_knopp`) and student logits
``s[s, b]``, with student temperature ``τ_s``:

    L = − Σ_{s, t, b} Σ_k P[t, b, k] · log_softmax(s[s, b] / τ_s)_k / count

over all (s, t) pairs with count = S·T·B, or, with ``ignore_diagonal`` (S == T, the same views on
both sides, as for global-vs-global), over the pairs s ≠ t only with count = B·(S·T − S).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DINOLoss(nn.Module):
    """Cross-entropy between teacher probabilities and sharpened student distributions, in fp32."""

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        self.student_temp = student_temp

    def forward(self, student_logits: Tensor, teacher_probs: Tensor, ignore_diagonal: bool = False) -> Tensor:
        """Scalar loss from student logits [S, B, K] and teacher probabilities [T, B, K]."""
        if student_logits.ndim != 3:
            raise ValueError(f"student_logits must be [S, B, K], got shape {tuple(student_logits.shape)}")
        if teacher_probs.ndim != 3:
            raise ValueError(f"teacher_probs must be [T, B, K], got shape {tuple(teacher_probs.shape)}")
        n_student, batch, n_prototypes = student_logits.shape
        n_teacher = teacher_probs.shape[0]
        if teacher_probs.shape[1:] != (batch, n_prototypes):
            raise ValueError(
                f"student_logits {tuple(student_logits.shape)} and teacher_probs {tuple(teacher_probs.shape)} "
                "must agree on B and K"
            )
        if ignore_diagonal and n_student != n_teacher:
            raise ValueError(
                f"ignore_diagonal needs as many student as teacher views, got S={n_student}, T={n_teacher}"
            )
        if ignore_diagonal and n_student < 2:
            raise ValueError("ignore_diagonal needs at least 2 views (with 1 view no pair is left)")

        log_probs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        pair_sums = torch.einsum("sbk,tbk->st", log_probs, teacher_probs.float())  # [S, T]
        if ignore_diagonal:
            total = pair_sums.sum() - pair_sums.diagonal().sum()
            count = batch * (n_student * n_teacher - n_student)
        else:
            total = pair_sums.sum()
            count = batch * n_student * n_teacher
        return -total / count
