"""Teacher networks: the EMA teacher of DINO/iBOT pretraining (official `dinov3/train/ssl_meta_arch.py`,
`dinov3/train/train.py`)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of `student` (deepcopy, requires_grad False, eval mode).

    A parent's `.train()` would switch it back to training mode: re-apply `.eval()` after it (drop path, etc.).
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_t ← m·θ_t + (1 − m)·θ_s for every parameter, matched by name; buffers are left alone.

    Element-wise (`torch._foreach_mul_` / `_foreach_add_`), so it works on local shards (DTensor) when teacher and
    student are sharded alike. Raises ValueError if the parameter names differ.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}.")
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        only_teacher = sorted(teacher_params.keys() - student_params.keys())
        only_student = sorted(student_params.keys() - teacher_params.keys())
        raise ValueError(
            f"Teacher and student parameter names differ: only in teacher {only_teacher[:5]}, "
            f"only in student {only_student[:5]} ({len(only_teacher)} and {len(only_student)} in all)."
        )
    names = list(teacher_params)
    teacher_list = [teacher_params[name] for name in names]
    student_list = [student_params[name] for name in names]
    torch._foreach_mul_(teacher_list, momentum)
    torch._foreach_add_(teacher_list, student_list, alpha=1.0 - momentum)
