"""Foreground masks from the patch features' first principal component, and the PCA picture of the foreground
alone, as in the PCA maps of the paper's figures (arXiv 2508.10104), made with DINOv2's recipe (arXiv 2304.07193,
Fig. 1): threshold the first component to drop the background, then a PCA on the kept patches only, background black."""

from __future__ import annotations

import numpy as np
import torch

from ..viz import feature_grid, pca_projections, pca_rgb


def first_component_scores(
    patch_features: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None
) -> np.ndarray:
    """(h, w) projections s = (f − mean) · v₁ of the patch features on their first principal direction v₁, signed so
    that the border patches (the outermost ring of the grid) have a mean score ≤ 0: the object is assumed not to
    cover most of the image border, so the border is background."""
    scores = pca_projections(patch_features, grid_size, n_components=1)[..., 0]
    h, w = scores.shape
    if h < 3 or w < 3:
        raise ValueError(f"Need a grid of at least 3 x 3 patches to tell border from inside, got {h} x {w}.")
    border = np.ones((h, w), dtype=bool)
    border[1:-1, 1:-1] = False
    return -scores if scores[border].mean() > 0 else scores


def foreground_mask(
    patch_features: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None, threshold: float = 0.0
) -> np.ndarray:
    """(h, w) bool foreground mask: first-component score s > threshold (see `first_component_scores` for the sign:
    the border is background). Scores are centred, so the default threshold 0 splits at the features' mean.

    patch_features: (N, D) in row-major grid order with grid_size = (h, w), or (h, w, D).
    """
    return first_component_scores(patch_features, grid_size) > threshold


def foreground_pca(
    patch_features: torch.Tensor | np.ndarray,
    grid_size: tuple[int, int] | None = None,
    mask: np.ndarray | None = None,
    clip_percentile: float = 1.0,
) -> np.ndarray:
    """(h, w, 3) uint8 picture of the first 3 PCA components computed on the foreground patches only (`viz.pca_rgb`
    of those patches), background black. mask: (h, w) bool foreground, default `foreground_mask(patch_features)`."""
    x = feature_grid(patch_features, grid_size)
    mask = foreground_mask(x) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask has shape {mask.shape}, expected the grid's {x.shape[:2]}.")
    picture = np.zeros((*x.shape[:2], 3), dtype=np.uint8)
    if mask.any():
        picture[mask] = pca_rgb(x[mask][:, None, :], clip_percentile=clip_percentile)[:, 0]
    return picture
