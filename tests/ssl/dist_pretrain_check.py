"""One SSL training step, in one process or under `torchrun` (DDP, gloo), on the same global batch.

    python dist_pretrain_check.py single OUT.pt
    torchrun --nproc_per_node 2 dist_pretrain_check.py ddp OUT.pt

Writes the loss terms (averaged over ranks) and the updated student parameters, for the test to compare.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from dinov3_hf.ssl.config import PretrainConfig
from dinov3_hf.ssl.masking import sample_masks
from dinov3_hf.ssl.meta_arch import SSLMetaArch
from dinov3_hf.ssl.param_groups import build_param_groups
from dinov3_hf.ssl.trainer import SSLScheduler

GLOBAL_BATCH, N_LOCAL, GRID = 8, 2, 7

RECIPE = PretrainConfig.from_dict({
    "backbone": {"preset": "vits16", "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "rope_rescale": None,
                 "layerscale_init": 0.1},  # CLS tokens that depend on the image, so no gradient is ~0 by symmetry
    "dino_head": {"prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    "ibot_head": {"prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    "global_size": 28, "local_size": 12, "n_local_crops": N_LOCAL,
    "koleo_group_size": GLOBAL_BATCH,  # distributed KoLeo over the whole global batch: the same as one process
    "lr": {"kind": "warmup_constant", "warmup_iters": 0, "start": 1e-3, "peak": 1e-3},
})


def global_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        "global_crops": torch.randn(2, GLOBAL_BATCH, 3, 28, 28, generator=gen),
        "local_crops": torch.randn(N_LOCAL, GLOBAL_BATCH, 3, 12, 12, generator=gen),
        "masks": sample_masks(2 * GLOBAL_BATCH, (GRID, GRID), generator=gen).view(2, GLOBAL_BATCH, -1),
    }


def main(mode: str, out: str) -> None:
    distributed = mode == "ddp"
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    model = SSLMetaArch(RECIPE).train()
    # AdamW's first step moves each weight by lr * g / (|g| + eps): with the default eps = 1e-8 a gradient near 1e-8
    # turns a 1e-9 difference in the gradient all-reduce order into a 4e-5 step difference. eps = 1e-6 bounds that
    # amplification by lr / eps = 1e3, so the updated weights can be held to 1e-5 as well as the gradients.
    optimizer = torch.optim.AdamW(build_param_groups(dict(model.student.items()), layer_decay=0.9), lr=0.0, eps=1e-6)
    SSLScheduler(optimizer, RECIPE)
    batch = global_batch()
    per_rank = GLOBAL_BATCH // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    inputs = {name: t[:, rows].flatten(0, 1) for name, t in batch.items()}
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    losses = wrapped(**inputs)
    losses["loss"].backward()
    for module in model.student.values():
        torch.nn.utils.clip_grad_norm_(module.parameters(), RECIPE.clip_grad)
    optimizer.step()
    grads = {name: p.grad.clone() for name, p in model.student.named_parameters() if p.grad is not None}
    terms = {k: v.detach().clone() for k, v in losses.items() if isinstance(v, torch.Tensor)}  # not the diagnostics
    if distributed:
        for value in terms.values():
            dist.all_reduce(value)
            value /= world
    if rank == 0:
        torch.save({"losses": terms, "grads": grads, "student": model.student.state_dict()}, out)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
