"""KoLeo regulariser (Kozachenko-Leonenko entropy estimator; official `dinov3/loss/koleo_loss.py`).

Features are L2-normalised; for each sample i, let nn(i) be the other sample (within its
search set) with the largest dot product, and d_i = ‖x_i − x_nn(i)‖₂. Then

    L = − mean_i log(d_i + ε),   ε = 1e-8,

which pushes each feature away from its nearest neighbour and so spreads the batch over the sphere.
Computed in fp32 with autocast disabled. The neighbour search carries no gradient; the distance does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = 1e-8


class _AllGather(torch.autograd.Function):
    """Concatenate [B, D] from every rank in rank order; the backward sums each rank's gradient for its own rows."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size(), dim=0)[dist.get_rank()]


def _check_features(x: Tensor, min_rows: int) -> None:
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise ValueError(f"features must be [B, D] with B >= {min_rows}, got shape {tuple(x.shape)}")


def _nearest_neighbour_loss(queries: Tensor, candidates: Tensor, excluded: Tensor) -> Tensor:
    """−mean log(distance to the most similar allowed candidate); ``excluded`` [Bq, Bc] marks forbidden pairs."""
    with torch.no_grad():
        dots = (queries @ candidates.t()).masked_fill_(excluded, float("-inf"))
        neighbours = dots.argmax(dim=1)
    distances = F.pairwise_distance(queries, candidates[neighbours], p=2, eps=_EPS)
    return -torch.log(distances + _EPS).mean()


class KoLeoLoss(nn.Module):
    """KoLeo over one batch [B, D] (B >= 2): each sample's neighbour is searched in the whole batch."""

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, min_rows=2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), p=2, dim=-1, eps=_EPS)
            self_pairs = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
            return _nearest_neighbour_loss(x, x, self_pairs)


class DistributedKoLeoLoss(nn.Module):
    """KoLeo with neighbours searched in fixed groups of the global batch.

    The features [B_local, D] of all ranks (same B_local everywhere) are all-gathered with autograd
    and concatenated in rank order; the global batch is cut into consecutive groups of ``group_size``
    and each local sample looks for its neighbour inside its own group (itself excluded). The loss
    is the mean over the local samples, so averaging it over ranks (as DDP averages gradients) gives
    the KoLeo mean over the global batch. Every rank must call forward and backward (the backward of
    the all-gather is a collective too). ``group_size`` must be >= 2 and divide the global batch; a
    group may span several ranks or a rank several groups. Without torch.distributed initialised
    this is world size 1.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {group_size}")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, min_rows=1)
        n_local = x.shape[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), p=2, dim=-1, eps=_EPS)
            if dist.is_available() and dist.is_initialized():
                rank, world_size = dist.get_rank(), dist.get_world_size()
                features = _AllGather.apply(x)
            else:
                rank, world_size = 0, 1
                features = x
            n_global = n_local * world_size
            if n_global % self.group_size:
                raise ValueError(
                    f"group_size {self.group_size} must divide the global batch {n_global} "
                    f"({world_size} ranks x {n_local} samples)"
                )
            start = rank * n_local
            query_index = torch.arange(start, start + n_local, device=x.device)
            lo = start // self.group_size * self.group_size
            hi = ((start + n_local - 1) // self.group_size + 1) * self.group_size
            candidate_index = torch.arange(lo, hi, device=x.device)
            excluded = (query_index[:, None] // self.group_size != candidate_index[None, :] // self.group_size) | (
                query_index[:, None] == candidate_index[None, :]
            )
            return _nearest_neighbour_loss(x, features[lo:hi], excluded)
