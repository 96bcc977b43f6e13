"""PCA visualisation of dense features: the first three principal components of the patch tokens as RGB."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def pca_components(features: np.ndarray, n_components: int = 3) -> np.ndarray:
    """The top principal directions of `features` [N, D] as rows [n_components, D], unit norm.

    Sign convention: each direction's entry of largest magnitude is positive. With fewer than `n_components`
    available directions (N - 1 or D smaller), the missing rows are zero.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    components = np.zeros((n_components, x.shape[1]))
    k = min(n_components, vt.shape[0])
    components[:k] = vt[:k]
    for row in components:
        if row.any() and row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return components


def pca_rgb(
    features: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None, clip_percentile: float = 1.0
) -> np.ndarray:
    """RGB uint8 image [h, w, 3] of the first 3 PCA components of the patch features.

    features: [N, D] in row-major grid order with `grid_size=(h, w)`, or [h, w, D] (then `grid_size` is optional).
    Each component is scaled from its [clip_percentile, 100 - clip_percentile] percentile range to 0..255 (values
    outside are clipped); `clip_percentile=0` is plain min-max scaling. A constant component maps to 0.
    """
    x = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim == 3:
        if grid_size is not None and tuple(grid_size) != x.shape[:2]:
            raise ValueError(f"features of shape {x.shape} do not match grid_size={tuple(grid_size)}.")
        h, w = x.shape[:2]
    elif x.ndim == 2:
        if grid_size is None:
            raise ValueError("features [N, D] need grid_size=(h, w); or pass them as [h, w, D].")
        h, w = grid_size
        if h * w != x.shape[0]:
            raise ValueError(f"grid_size={tuple(grid_size)} has {h * w} cells but features have N={x.shape[0]} rows.")
    else:
        raise ValueError(f"features must be [N, D] or [h, w, D], got shape {x.shape}.")
    if not 0 <= clip_percentile < 50:
        raise ValueError(f"clip_percentile must be in [0, 50), got {clip_percentile}.")

    flat = x.reshape(h * w, -1).astype(np.float64)
    projected = (flat - flat.mean(axis=0)) @ pca_components(flat).T
    low, high = np.percentile(projected, [clip_percentile, 100 - clip_percentile], axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.clip((projected - low) / span, 0.0, 1.0)
    scaled[:, high <= low] = 0.0
    return np.round(scaled * 255).astype(np.uint8).reshape(h, w, 3)


def pca_image(
    features: torch.Tensor | np.ndarray,
    grid_size: tuple[int, int] | None,
    size: tuple[int, int],
    resample: str = "nearest",
    clip_percentile: float = 1.0,
) -> Image.Image:
    """[`pca_rgb`] upsampled to `size=(width, height)` (e.g. the original image's size) as a PIL RGB image.

    resample: "nearest" (crisp patches), "bilinear" or "bicubic".
    """
    if resample not in _PIL_RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_PIL_RESAMPLE)}, got {resample!r}.")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be a positive (width, height), got {size}.")
    rgb = pca_rgb(features, grid_size, clip_percentile=clip_percentile)
    return Image.fromarray(rgb).resize((width, height), _PIL_RESAMPLE[resample])
