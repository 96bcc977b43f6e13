"""Patch features at pixel resolution: plain bilinear interpolation, or training-free joint bilateral upsampling
guided by the image (Kopf, Cohen, Lischinski, Uyttendaele, "Joint Bilateral Upsampling", SIGGRAPH 2007).

The patch grid is taken to cover the whole image (the image was resized to the model input, not cropped): patch
(i, j) of an h × w grid has its centre at pixel ((i + 0.5)·H/h − 0.5, (j + 0.5)·W/w − 0.5) of an H × W image, the
convention of `torch.nn.functional.interpolate(..., align_corners=False)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_utils import ChannelDimension

from ..processing.image_processing import _to_float_rgb
from ..viz import pca_projections, scale_components

METHODS = ("bilinear", "bilateral")


def _feature_grid(features: Any) -> tuple[torch.Tensor, bool]:
    """(B, D, h, w) float tensor, and whether the input was a single (h, w, D) grid."""
    x = torch.as_tensor(np.asarray(features)) if not isinstance(features, torch.Tensor) else features
    if not x.is_floating_point():
        raise ValueError(f"features must be floating point, got dtype {x.dtype}.")
    if x.ndim == 3:
        return x.permute(2, 0, 1)[None], True
    if x.ndim == 4:
        return x, False
    raise ValueError(
        f"features must be a (B, D, h, w) batch or one (h, w, D) patch grid (as `dinov3-hf features` saves "
        f"`patch_tokens`), got shape {tuple(x.shape)}; reshape (N, D) tokens to (h, w, D) first."
    )


def _size_hw(size: Any) -> tuple[int, int]:
    try:
        height, width = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(s) for s in size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"size must be an int or (height, width), got {size!r}.") from err
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size!r}.")
    return height, width


def _guide(image: Any, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) float guide in [0, 1] at `size`: one image (PIL, HWC array, CHW tensor), a list of B of them, or a
    (B, C, H, W) tensor; an image of another size is resized bilinearly (with antialiasing)."""
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        images = list(image)
    elif isinstance(image, (list, tuple)):
        images = list(image)
    else:
        images = [image]
    if len(images) not in (1, batch):
        raise ValueError(f"Got {len(images)} guide images for a batch of {batch} feature grids; pass one or {batch}.")
    guides = []
    for item in images:
        layout = ChannelDimension.FIRST if isinstance(item, torch.Tensor) else None  # arrays and PIL: HWC
        x, is_integer = _to_float_rgb(item, layout)
        guides.append(x / 255.0 if is_integer else x)
    if len({tuple(g.shape) for g in guides}) > 1:
        raise ValueError(f"The guide images differ in shape: {sorted({tuple(g.shape) for g in guides})}.")
    guide = torch.stack(guides).expand(batch, -1, -1, -1)
    if tuple(guide.shape[-2:]) != size:
        guide = F.interpolate(guide, size=size, mode="bilinear", align_corners=False, antialias=True)
    return guide


def _cells(length: int, cells: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis of `length` pixels over `cells` patches: each pixel's position in patch units
    (p + 0.5)·cells/length − 0.5, its own patch c(p) = ⌊(p + 0.5)·cells/length⌋, the first pixel of each patch
    (cells + 1 entries, the last = length), and the pixels of each patch as a (cells, S) index table (S = most pixels
    per patch; shorter patches padded with an index in range, whose results are never read)."""
    p = torch.arange(length, dtype=torch.float64)
    position = ((p + 0.5) * cells / length - 0.5).float()
    own = ((p + 0.5) * cells / length).floor().long().clamp(0, cells - 1)
    counts = torch.bincount(own, minlength=cells)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    table = (starts[:-1, None] + torch.arange(int(counts.max()))[None, :]).clamp(max=length - 1)
    return position, own, starts, table


def _axis_logits(
    position: torch.Tensor, table: torch.Tensor, cells: int, radius: int, sigma_spatial: float
) -> torch.Tensor:
    """Log spatial weights −(x_p − q)² / 2σ_s² along one axis: (cells, S, 2r + 1) for the pixels of each patch and
    its neighbours c − r .. c + r, −inf for neighbours outside the grid."""
    sample = torch.arange(cells)[:, None] + torch.arange(-radius, radius + 1)[None, :]
    distance = position[table][:, :, None] - sample[:, None, :].float()
    logits = torch.zeros_like(distance) if sigma_spatial == math.inf else -(distance**2) / (2 * sigma_spatial**2)
    inside = (sample >= 0) & (sample < cells)
    return logits.masked_fill(~inside[:, None, :], -math.inf)


def _bilateral(
    features: torch.Tensor,
    guide: torch.Tensor,
    sigma_spatial: float,
    sigma_range: float,
    radius: int,
    max_chunk_elements: int,
) -> torch.Tensor:
    """Joint bilateral upsampling of (B, D, h, w) features to the (B, C, H, W) guide's size (see upsample_features),
    in bands of patch rows: per patch, (pixels, K) weights @ (K, D) neighbour features, K = (2r + 1)²."""
    b, d, h, w = features.shape
    height, width = guide.shape[-2:]
    k = 2 * radius + 1
    guide = guide.to(features.dtype)
    guide_low = F.adaptive_avg_pool2d(guide, (h, w))  # each patch's mean colour
    padded_features = F.pad(features, (radius,) * 4)
    padded_colours = F.pad(guide_low, (radius,) * 4)

    pos_y, own_y, starts_y, rows = _cells(height, h)
    pos_x, own_x, starts_x, cols = _cells(width, w)
    sy, sx = rows.shape[1], cols.shape[1]
    logit_y = _axis_logits(pos_y, rows, h, radius, sigma_spatial).to(features.dtype)
    logit_x = _axis_logits(pos_x, cols, w, radius, sigma_spatial).to(features.dtype)
    slot_x = torch.arange(width) - starts_x[own_x]

    out = features.new_empty(b, d, height, width)
    per_patch_row = b * w * (sy * sx * max(k * k, d) + k * k * d)
    chunk = max(1, min(h, max_chunk_elements // per_patch_row))
    for i0 in range(0, h, chunk):
        i1 = min(h, i0 + chunk)
        n = i1 - i0
        band = slice(i0, i1 + 2 * radius)
        # the K neighbours of each patch of the band, K in unfold's kernel order (dy major, dx minor)
        neighbours = F.unfold(padded_features[:, :, band], k).view(b, d, k * k, n * w).permute(0, 3, 2, 1)
        colours = F.unfold(padded_colours[:, :, band], k).view(b, -1, k * k, n, w).permute(0, 3, 4, 2, 1)
        # log weights (B, n, w, Sy, Sx, K): the spatial term is a row term plus a column term
        spatial = (logit_y[i0:i1, None, :, None, :, None] + logit_x[None, :, None, :, None, :]).reshape(
            n, w, sy, sx, k * k
        )
        pixel_colours = guide[:, :, rows[i0:i1]][..., cols].permute(0, 2, 4, 3, 5, 1)  # (B, n, w, Sy, Sx, C)
        if sigma_range == math.inf:
            logits = spatial.expand(b, -1, -1, -1, -1, -1)
        else:
            distance = ((pixel_colours[..., None, :] - colours[:, :, :, None, None]) ** 2).sum(-1)
            logits = spatial - distance / (2 * sigma_range**2)
        weights = torch.softmax(logits, dim=-1).reshape(b * n * w, sy * sx, k * k)
        values = torch.bmm(weights, neighbours.reshape(b * n * w, k * k, d)).view(b, n, w, sy, sx, d)
        # each pixel of image rows r0 .. r1 - 1 reads its slot of its patch's block
        r0, r1 = int(starts_y[i0]), int(starts_y[i1])
        r = torch.arange(r0, r1)
        slot_y = r - starts_y[own_y[r]]
        block = values[:, own_y[r, None] - i0, own_x[None, :], slot_y[:, None], slot_x[None, :]]  # (B, R, W, D)
        out[:, :, r0:r1] = block.permute(0, 3, 1, 2)
    return out


def upsample_features(
    features: torch.Tensor | np.ndarray,
    image: Any = None,
    size: int | Sequence[int] | None = None,
    method: str = "bilinear",
    *,
    sigma_spatial: float = 1.0,
    sigma_range: float = 0.2,
    radius: int | None = None,
    max_chunk_elements: int = 2**24,
) -> torch.Tensor:
    """Patch features upsampled to pixel resolution.

    features: a (B, D, h, w) batch or one (h, w, D) grid; the result has the same layout at (H, W) = `size`
        (default: the image's size).
    image: the guide for "bilateral" (PIL image, HWC array, CHW tensor in [0, 1] or uint8, a list of B of them, or a
        (B, C, H, W) tensor), resized to `size` if needed; unused by "bilinear".
    method: "bilinear": `F.interpolate(mode="bilinear", align_corners=False)` (patch centres as above).
        "bilateral": joint bilateral upsampling (Kopf et al. 2007). With x_p pixel p's position in patch units, Ω(p)
        the (2r+1)² patches around p's own patch (those inside the grid), I(p) the guide's colour at p and Ī(q) the
        guide's mean colour over patch q:

            f̃(p) = Σ_{q∈Ω(p)} w(p, q) f(q) / Σ_{q∈Ω(p)} w(p, q),
            w(p, q) = exp(−‖x_p − q‖² / 2σ_s²) · exp(−‖I(p) − Ī(q)‖² / 2σ_r²)

        sigma_spatial σ_s is in patches, sigma_range σ_r in colour units of [0, 1] RGB (`math.inf` turns either term
        off), radius r defaults to ⌈2σ_s⌉ (1 if σ_s is infinite). The defaults σ_s = 1, σ_r = 0.2 scored best on
        validation texture mosaics with model features (bench/bench_upsampling.py).
    max_chunk_elements: the bilateral path works on bands of patch rows, each holding about this many elements
        (weights, neighbour features, results), so that its memory beyond the output stays bounded at any size.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    grid, single = _feature_grid(features)
    if size is None:
        if image is None:
            raise ValueError("Pass size=(height, width), or an image whose size the features are upsampled to.")
        first = image[0] if isinstance(image, (list, tuple)) else image
        if isinstance(first, torch.Tensor):
            size = tuple(first.shape[-2:])
        elif isinstance(first, np.ndarray):
            size = first.shape[:2]
        else:
            size = (first.height, first.width)
    size = _size_hw(size)
    if method == "bilinear":
        out = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    else:
        if image is None:
            raise ValueError("method='bilateral' needs the image as its guide: pass image=...")
        if not sigma_spatial > 0 or not sigma_range > 0:
            raise ValueError(
                f"sigma_spatial and sigma_range must be > 0 (math.inf turns a term off), got {sigma_spatial} and "
                f"{sigma_range}."
            )
        if radius is None:
            radius = 1 if sigma_spatial == math.inf else max(1, math.ceil(2 * sigma_spatial))
        if not isinstance(radius, int) or radius < 0:
            raise ValueError(f"radius must be a non-negative int (patches), got {radius!r}.")
        guide = _guide(image, grid.shape[0], size)
        out = _bilateral(grid, guide, float(sigma_spatial), float(sigma_range), radius, max_chunk_elements)
    return out[0].permute(1, 2, 0) if single else out


def upsampled_pca_rgb(
    patch_features: torch.Tensor | np.ndarray,
    image: Any = None,
    size: int | Sequence[int] | None = None,
    method: str = "bilateral",
    clip_percentile: float = 1.0,
    **kwargs: Any,
) -> np.ndarray:
    """(H, W, 3) uint8 picture of the first 3 PCA components of (h, w, D) patch features at pixel resolution.

    The principal directions come from the patch grid (as `viz.pca_rgb`); the 3 projections are upsampled with
    `upsample_features(..., method, **kwargs)`, which equals projecting the upsampled features since both methods
    average the patch features with weights summing to 1; then each channel is scaled as `viz.pca_rgb` does.
    """
    projections = torch.from_numpy(pca_projections(patch_features)).float()
    upsampled = upsample_features(projections, image, size, method, **kwargs)
    return scale_components(upsampled.numpy(), clip_percentile)
