"""Gram anchoring loss (official `dinov3/loss/gram_loss.py`): keep the student's patch-similarity structure close to
a Gram teacher's.

Per image, with x̂ = x / ‖x‖₂ over the feature dimension (patch tokens [B, N, D]):

    G(x) = x̂ x̂ᵀ  ∈ [B, N, N],      L_gram = mean_{b,i,j} (G(x_s) − G(x_t))²

computed in fp32 with autocast off. It is zero when the student equals the teacher and invariant to a rescaling of
either's features. A high-resolution teacher is first brought to the student's grid with
`downsample_patch_tokens` (bicubic, align_corners=False, no antialiasing, as the official code does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gram_matrix(tokens: Tensor) -> Tensor:
    """Cosine-similarity Gram matrices [B, N, N] of patch tokens [B, N, D] (fp32)."""
    if tokens.ndim != 3:
        raise ValueError(f"patch tokens must be [B, N, D], got shape {tuple(tokens.shape)}")
    normalized = F.normalize(tokens.float(), p=2, dim=-1)
    return normalized @ normalized.transpose(1, 2)


def downsample_patch_tokens(tokens: Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]) -> Tensor:
    """Resize patch tokens [B, h·w, D] on a (h, w) grid to [B, h'·w', D] on `target_grid` by bicubic interpolation
    (`F.interpolate(mode="bicubic", align_corners=False, antialias=False)` over the [D, h, w] maps)."""
    batch, n_tokens, dim = tokens.shape
    if n_tokens != source_grid[0] * source_grid[1]:
        raise ValueError(f"{n_tokens} patch tokens do not form the {source_grid[0]}x{source_grid[1]} source grid.")
    if tuple(source_grid) == tuple(target_grid):
        return tokens
    maps = tokens.transpose(1, 2).reshape(batch, dim, *source_grid)
    maps = F.interpolate(maps, size=tuple(target_grid), mode="bicubic", align_corners=False, antialias=False)
    return maps.flatten(2).transpose(1, 2)


class GramLoss(nn.Module):
    """MSE between the image-level normalised Gram matrices of student and teacher patch tokens [B, N, D]."""

    def forward(self, student_tokens: Tensor, teacher_tokens: Tensor) -> Tensor:
        if student_tokens.shape[:2] != teacher_tokens.shape[:2]:
            raise ValueError(
                f"student {tuple(student_tokens.shape)} and teacher {tuple(teacher_tokens.shape)} patch tokens need the "
                "same [B, N]: downsample the teacher to the student grid first (downsample_patch_tokens)."
            )
        with torch.autocast(device_type=student_tokens.device.type, enabled=False):
            return F.mse_loss(gram_matrix(student_tokens), gram_matrix(teacher_tokens.detach()))
