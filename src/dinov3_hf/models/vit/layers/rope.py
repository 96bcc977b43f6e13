"""Axial 2D rotary position embedding of DINOv3 (`dinov3/layers/rope_position_encoding.py`)."""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_periods(
    head_dim: int,
    base: float | None = 100.0,
    min_period: float | None = None,
    max_period: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Periods of the head_dim/4 frequencies.

    base:    periods[k] = base ** (2k / (head_dim / 2)),  k = 0 .. head_dim/4 - 1
    min/max: periods = max_period * (max_period / min_period) ** (linspace(0, 1, head_dim/4) - 1)
    """
    n = head_dim // 4
    if base is not None:
        exponents = 2 * torch.arange(n, dtype=torch.float32, device=device) / (head_dim // 2)
        periods = base**exponents
    else:
        ratio = max_period / min_period
        periods = max_period * ratio ** (torch.linspace(0, 1, n, dtype=torch.float32, device=device) - 1)
    return periods.to(dtype)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the last HW tokens of x [B, heads, T, head_dim] by sin / cos [HW, head_dim] (or per sample,
    [B, 1, HW, head_dim]); the T - HW prefix tokens stay as they are.

    x' = x * cos + rotate_half(x) * sin with rotate_half([x1, x2]) = [-x2, x1], computed in the dtype of sin/cos.
    rotate_half(x) * sin is formed as [x2, x1] * [-sin1, sin2], the same numbers (a sign flip is exact) with one pass
    over x less, and the result is written into the output directly where autograd and torch.compile allow it (same
    numbers); the in-place steps write only into tensors made here.
    """
    prefix = x.shape[-2] - sin.shape[-2]
    half = x.shape[-1] // 2
    x_patch = x[..., prefix:, :].to(sin.dtype)
    signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    rotated = torch.cat((x_patch[..., half:], x_patch[..., :half]), dim=-1).mul_(signed_sin)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out[..., :prefix, :] = x[..., :prefix, :]
    # out= has no autograd, and Dynamo does not trace out= into a non-contiguous view
    if x_patch.dtype == x.dtype and not (torch.is_grad_enabled() and x.requires_grad or torch.compiler.is_compiling()):
        torch.mul(x_patch, cos, out=out[..., prefix:, :]).add_(rotated)
    else:
        out[..., prefix:, :] = (x_patch * cos).add_(rotated)
    return out


def patch_centres(n: int, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    """[0.5, 1.5, .., n - 0.5], the values of torch.arange(0.5, n).

    In float32 / float64 every value is exact either way, and arange(n) + 0.5 has the size n, which torch.export keeps
    symbolic (arange(0.5, n) has the size ceil(n - 0.5), which it cannot follow); reduced-precision arange rounds its
    values its own way, so those dtypes keep arange(0.5, n).
    """
    if dtype in (torch.float32, torch.float64):
        return torch.arange(n, device=device, dtype=dtype) + 0.5
    return torch.arange(0.5, n, device=device, dtype=dtype)


class RopePositionEmbedding(nn.Module):
    """Produces (sin, cos) of shape [H*W, head_dim] for an H x W patch grid (`forward_padded`: for a padded batch).

    coords = 2 * (i + 0.5) / norm - 1 per axis (norm per `normalize_coords`); in training mode the coords get the
    shift / jitter / rescale augmentations that are not None; angles = 2*pi * coords / periods, laid out as
    [h-frequencies | w-frequencies] and tiled twice.
    """

    def __init__(
        self,
        head_dim: int,
        base: float | None = 100.0,
        min_period: float | None = None,
        max_period: float | None = None,
        normalize_coords: str = "separate",
        shift: float | None = None,
        jitter: float | None = None,
        rescale: float | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.head_dim = head_dim
        self.base, self.min_period, self.max_period = base, min_period, max_period
        self.normalize_coords = normalize_coords
        self.shift, self.jitter, self.rescale = shift, jitter, rescale
        self.register_buffer("periods", self.default_periods(dtype=dtype), persistent=True)

    def default_periods(self, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        return rope_periods(
            self.head_dim, self.base, self.min_period, self.max_period, dtype=dtype or self.periods.dtype, device=device
        )

    @property
    def augments(self) -> bool:
        """True when a forward draws random coordinate augmentations (training mode with any of them set)."""
        return self.training and any(v is not None for v in (self.shift, self.jitter, self.rescale))

    def coords(self, height: int, width: int) -> torch.Tensor:
        """Normalised patch-centre coordinates [H*W, 2] in (h, w) order, row-major, before augmentation."""
        device, dtype = self.periods.device, self.periods.dtype
        if self.normalize_coords == "separate":
            norm_h, norm_w = height, width
        elif self.normalize_coords == "max":
            norm_h = norm_w = torch.sym_max(height, width)  # sym_max / sym_min: no shape guard under torch.export
        else:
            norm_h = norm_w = torch.sym_min(height, width)
        c_h = patch_centres(height, dtype, device) / norm_h
        c_w = patch_centres(width, dtype, device) / norm_w
        grid = torch.stack(torch.meshgrid(c_h, c_w, indexing="ij"), dim=-1).flatten(0, 1)
        return 2.0 * grid - 1.0

    def _augment(self, coords: torch.Tensor) -> torch.Tensor:
        device, dtype = coords.device, coords.dtype
        if self.shift is not None:
            coords = coords + torch.empty(2, device=device, dtype=dtype).uniform_(-self.shift, self.shift)
        if self.jitter is not None:
            log_j = math.log(self.jitter)
            coords = coords * torch.empty(2, device=device, dtype=dtype).uniform_(-log_j, log_j).exp()
        if self.rescale is not None:
            log_r = math.log(self.rescale)
            coords = coords * torch.empty(1, device=device, dtype=dtype).uniform_(-log_r, log_r).exp()
        return coords

    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        coords = self.coords(height, width)
        if self.augments:
            coords = self._augment(coords)
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]  # [HW, 2, head_dim/4]
        angles = angles.flatten(1, 2).tile(2)  # [HW, head_dim]
        return torch.sin(angles), torch.cos(angles)

    def forward_padded(
        self, grids: list[tuple[int, int]], height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sin, cos) [B, 1, H*W, head_dim] for a batch padded to an H x W grid, image b on its top-left grids[b].

        Image b's patches get `forward(*grids[b])`, the coordinates of its own grid (they are normalised per grid,
        so a padded grid's would differ); padded patches get sin 0, cos 1 (no rotation). RoPE augmentations in
        training draw once per distinct grid size.
        """
        sin = self.periods.new_zeros(len(grids), height, width, self.head_dim)
        cos = self.periods.new_ones(len(grids), height, width, self.head_dim)
        per_size = {grid: self(*grid) for grid in dict.fromkeys(grids)}
        for b, (h, w) in enumerate(grids):
            sin[b, :h, :w], cos[b, :h, :w] = (t.view(h, w, -1) for t in per_size[h, w])
        return sin.flatten(1, 2)[:, None], cos.flatten(1, 2)[:, None]
