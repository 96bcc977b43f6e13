"""Training diagnostics of the DINO and iBOT objectives: are the teacher targets informative, is the model collapsing?

For teacher logits ``z`` [N, K] (before the temperature), teacher targets ``P`` [N, K] (Sinkhorn-Knopp output, rows
sum to 1) and student logits ``s`` paired row by row with the targets:

- ``entropy`` = mean_n ( −Σ_k P[n, k] · ln P[n, k] ) in nats, and ``entropy_fraction`` = entropy / ln K. A value near
  1 means nearly uniform targets: the loss then teaches almost nothing (it stays at ≈ ln K).
- ``prototypes_used`` = |{ argmax_k P[n, k] : n }| over the global batch (all ranks).
- ``logit_std`` = mean_k std_n z[n, k]: how much the prototype scores vary between samples, to compare with the
  teacher temperature.
- ``agreement`` = mean_n [argmax_k s[n, k] = argmax_k P[n, k]].

``feature_std`` = mean_d std_n x̂[n, d] of the L2-normalised features x̂ = x / ‖x‖ (the backbone's CLS tokens): about
1/√D for well spread features, 0 when every sample maps to the same point (collapse).
All functions run without autograd and return Python floats.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def target_diagnostics(teacher_logits: Tensor, targets: Tensor, student_logits: Tensor) -> dict[str, float]:
    """{entropy, entropy_fraction, prototypes_used, logit_std, agreement} of one head (see the module docstring);
    `student_logits` [N', K] are paired with the first N' target rows (N' may be smaller, e.g. 0)."""
    n_prototypes = targets.shape[-1]
    targets = targets.float()
    if targets.shape[0] == 0:
        entropy = 0.0
    else:
        entropy = float(-(targets * targets.clamp_min(1e-30).log()).sum(-1).mean())
    used = torch.zeros(n_prototypes, device=targets.device)
    used[targets.argmax(-1)] = 1.0
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
    logit_std = float(teacher_logits.float().std(0).mean()) if teacher_logits.shape[0] > 1 else 0.0
    paired = student_logits.shape[0]
    agreement = (
        float((student_logits.argmax(-1) == targets[:paired].argmax(-1)).float().mean()) if paired else 0.0
    )
    return {
        "entropy": entropy,
        "entropy_fraction": entropy / math.log(n_prototypes),
        "prototypes_used": float(used.sum()),
        "logit_std": logit_std,
        "agreement": agreement,
    }


@torch.no_grad()
def feature_std(features: Tensor) -> float:
    """mean_d std_n of the L2-normalised rows of `features` [N, D] (≈ 1/√D when spread, 0 when collapsed)."""
    if features.shape[0] < 2:
        return 0.0
    return float(F.normalize(features.float(), dim=-1).std(0).mean())
