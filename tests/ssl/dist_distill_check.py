"""One distillation step with a ViT and a ConvNeXt student, in one process or under `torchrun` with one student per
rank (student subgroups), on the same global batch.

    python dist_distill_check.py single TEACHER_CKPT OUT.pt
    torchrun --nproc_per_node 2 dist_distill_check.py ddp TEACHER_CKPT OUT.pt

Writes each student's losses, gradients (before the optimizer step, which would hide their scale: AdamW's first step
is about lr * sign(gradient)) and updated parameters held by this process (OUT.pt, or OUT.pt.rank<r> under torchrun).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from dinov3_hf.ssl.config import DistillationConfig
from dinov3_hf.ssl.distillation import DistillationMetaArch
from dinov3_hf.ssl.masking import sample_masks
from dinov3_hf.ssl.param_groups import build_param_groups

GLOBAL_BATCH, N_LOCAL = 4, 2
TEACHER = {"preset": "vits16", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "layerscale_init": 0.1, "rope_rescale": None}
HEAD = {"prototypes": 32, "hidden_dim": 32, "bottleneck_dim": 16}
STUDENTS = [
    {"name": "vit", "backbone": {"preset": "vits16", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "layerscale_init": 0.1, "rope_rescale": None}, "dino_head": HEAD, "ibot_head": HEAD},
    {"name": "convnext", "backbone": {"family": "convnext", "depths": [1, 1, 1, 1], "hidden_sizes": [8, 8, 16, 16]},
     "dino_head": HEAD, "ibot_head": HEAD},
]


def recipe(teacher_checkpoint: str, one_student_per_rank: bool) -> DistillationConfig:
    students = [dict(s, ranks=[i, i + 1]) for i, s in enumerate(STUDENTS)] if one_student_per_rank else STUDENTS
    return DistillationConfig.from_dict({
        "backbone": TEACHER, "dino_head": HEAD, "ibot_head": HEAD, "teacher_checkpoint": teacher_checkpoint,
        "students": students, "global_size": 32, "local_size": 16, "n_local_crops": N_LOCAL,
        "teacher_temp": {"kind": "constant", "value": 0.07},
    })


def global_batch() -> dict[str, torch.Tensor]:
    """View-major crops at the ConvNeXt scale (2 x the teacher's 32 / 16 px) and masks on the 2 x 2 token grid."""
    gen = torch.Generator().manual_seed(1)
    return {
        "global_crops": torch.randn(2, GLOBAL_BATCH, 3, 64, 64, generator=gen),
        "local_crops": torch.randn(N_LOCAL, GLOBAL_BATCH, 3, 32, 32, generator=gen),
        "masks": sample_masks(2 * GLOBAL_BATCH, (2, 2), ratio_range=(0.25, 0.5), generator=gen).view(2, GLOBAL_BATCH, -1),
    }


def main(mode: str, teacher_checkpoint: str, out: str) -> None:
    distributed = mode == "ddp"
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    model = DistillationMetaArch(recipe(teacher_checkpoint, distributed)).train()
    # the same initial student weights as in one process: re-seed per student, build order independent of the rank
    for index, student in enumerate(STUDENTS):
        if student["name"] in model.students:
            torch.manual_seed(100 + index)
            for module in model.students[student["name"]].values():
                for param in module.parameters():
                    param.data.copy_(torch.randn_like(param) * 0.05)
    groups = [g for s in model.student_modules() for g in build_param_groups(s)]
    for group in groups:
        group["lr"] = 1e-2 * group["lr_multiplier"]
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    batch = global_batch()
    per_rank = GLOBAL_BATCH // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    inputs = {name: t[:, rows].flatten(0, 1) for name, t in batch.items()}
    wrapped = torch.nn.parallel.DistributedDataParallel(model, process_group=model.process_group) if distributed else model
    losses = wrapped(**inputs)
    losses["loss"].backward()
    grads = {k: p.grad.detach().clone() for k, p in model.students.named_parameters() if p.grad is not None}
    optimizer.step()
    torch.save({
        "losses": {k: v.detach() for k, v in losses.items() if "/" in k},
        "grads": grads,
        "students": {k: v.detach().clone() for k, v in model.students.state_dict().items()},
    }, out + (f".rank{rank}" if distributed else ""))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
