"""Two-rank check of the collective losses; run with `torchrun --standalone --nproc_per_node 2` (gloo, CPU).

Each rank holds its slice of a fixed global batch (same seed everywhere) and compares the distributed result
with the single-process result on the whole batch (computed with a one-rank process group). Exits non-zero
on any mismatch beyond 1e-6.

Gradient scaling of DistributedKoLeoLoss: rank r's loss is the mean over its B_local samples, so the global
KoLeo (mean over W·B_local samples) equals the average of the W rank losses. The backward of the all-gather sums
the contributions of every rank's loss to each rank's inputs, so after `loss_r.backward()` on every rank the
local input gradient is d(Σ_r loss_r)/dx_local = W · d(global KoLeo)/dx_local, i.e. W times the matching rows of
the single-process gradient; DDP's 1/W averaging of parameter gradients then recovers the global-loss gradient.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from dinov3_hf.ssl.losses import DistributedKoLeoLoss, KoLeoLoss, sinkhorn_knopp

TOL = 1e-6


def check(name: str, got: torch.Tensor, expected: torch.Tensor, failures: list[str]) -> None:
    err = (got - expected).abs().max().item() if got.numel() else 0.0
    if got.shape != expected.shape or not err <= TOL:
        failures.append(f"{name}: shape {tuple(got.shape)} vs {tuple(expected.shape)}, max abs err {err:.3e}")


def main() -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    solo_groups = [dist.new_group([r]) for r in range(world)]  # every rank must create every group
    solo = solo_groups[rank]
    failures: list[str] = []
    generator = torch.Generator().manual_seed(0)

    # Sinkhorn-Knopp: equal shards, uneven shards (iBOT: different masked counts per rank), an empty shard
    logits = torch.randn(16, 8, generator=generator) * 2
    for name, sizes in [("equal", [8, 8]), ("uneven", [3, 13]), ("empty", [0, 16])]:
        sizes = sizes[:world] if world == 2 else [16 // world] * world
        bounds = [sum(sizes[:r]) for r in range(world + 1)]
        rows = slice(bounds[rank], bounds[rank + 1])
        full = logits[: bounds[-1]]
        for n_iterations in (1, 3):
            got = sinkhorn_knopp(logits[rows], 0.1, n_iterations)
            expected = sinkhorn_knopp(full, 0.1, n_iterations, group=solo)[rows]
            check(f"sinkhorn {name} n={n_iterations}", got, expected, failures)

    # DistributedKoLeoLoss: the global batch split in rank order
    features = torch.randn(8 * world, 6, generator=generator)
    n_local = features.shape[0] // world
    local = features[rank * n_local : (rank + 1) * n_local].clone().requires_grad_()
    full = features.clone().requires_grad_()
    for group_size in (8 * world, 8, 4, 16 if world == 2 else 8):
        local.grad, full.grad = None, None
        loss = DistributedKoLeoLoss(group_size)(local)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        reference = torch.stack([KoLeoLoss()(chunk) for chunk in full.split(group_size)]).mean()
        reference.backward()
        check(f"koleo loss group={group_size}", mean_loss, reference.detach(), failures)
        expected_grad = world * full.grad[rank * n_local : (rank + 1) * n_local]
        check(f"koleo grad group={group_size}", local.grad, expected_grad, failures)

    dist.barrier()
    dist.destroy_process_group()
    for failure in failures:
        print(f"rank {rank}: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"rank {rank}: dist_losses_check OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
