"""Sinkhorn-Knopp teacher targets (DINOv2/DINOv3 "sinkhorn_knopp" centering).

With logits ``z`` of shape [B, K] (B local rows; B_total rows over the process group) and
temperature ``τ``, let ``Q = exp(z / τ)ᵀ`` (K × B). Each of the ``n`` iterations does

    Q[k, :] /= Σ_b Q[k, b]   (sum over the whole group: all-reduce),  then Q /= K
    Q[:, b] /= Σ_k Q[k, b]   (local),                                 then Q /= B_total

and the result is ``B_total · Qᵀ``: every row (sample) sums to 1 and every column (prototype)
sums to ≈ B_total / K over the group, i.e. the teacher assigns the batch evenly to the K prototypes.

Meta's code first divides ``Q`` by its (all-reduced) total sum. That scalar cancels exactly in the
first row normalisation, and so does any per-prototype factor, so this implementation instead
subtracts each prototype's maximum logit over the group before ``exp``: same result, but no fp32
overflow of ``exp(z / τ)`` (at τ = 0.04 it overflows as soon as a logit exceeds ≈ 3.5).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: Tensor,
    temperature: float,
    n_iterations: int = 3,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """Teacher probabilities [B, K] (fp32, no grad) from teacher logits [B, K].

    When torch.distributed is initialised, the prototype sums and the row count are all-reduced over
    ``group`` (default: the world), so every rank of the group must call this; ranks may hold different
    numbers of rows, including none (a rank without masked patches in iBOT). For iBOT, pass the logits
    of the masked patches [M, K]: B_total is then the number of masked patches over the group.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_logits must be [B, K], got shape {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
    logits = teacher_logits.float()
    n_rows, n_prototypes = logits.shape
    distributed = _distributed()

    if n_rows > 0:
        prototype_max = logits.amax(dim=0)
    else:
        prototype_max = logits.new_full((n_prototypes,), float("-inf"))
    n_total = logits.new_tensor(float(n_rows))
    if distributed:
        dist.all_reduce(prototype_max, op=dist.ReduceOp.MAX, group=group)
        dist.all_reduce(n_total, group=group)

    q = torch.exp((logits - prototype_max) / temperature).t()  # [K, B]
    for _ in range(n_iterations):
        prototype_sums = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(prototype_sums, group=group)
        q /= prototype_sums
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= n_total
    q *= n_total
    return q.t()
