"""Correspondence metrics: percentage of correct keypoints (PCK)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def pck(
    pred_points_b: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    true_points_b: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    threshold: float,
    image_size: tuple[int, int] | None = None,
) -> float:
    """Fraction of predicted points in image B whose Euclidean error ||pred - true|| is strictly below a threshold.

    pred_points_b, true_points_b: (N, 2) points (x, y) in pixels of image B, row i of each for the same match.
    threshold: in pixels; with image_size = (H, W) of image B, a fraction alpha of its diagonal, i.e. the pixel
        threshold alpha * sqrt(H^2 + W^2).
    """
    pred = torch.as_tensor(np.asarray(pred_points_b, dtype=np.float64))
    true = torch.as_tensor(np.asarray(true_points_b, dtype=np.float64))
    if pred.ndim != 2 or pred.shape[-1] != 2 or pred.shape != true.shape:
        raise ValueError(
            f"pred_points_b and true_points_b must both be (N, 2) points (x, y), got shapes {tuple(pred.shape)} and "
            f"{tuple(true.shape)}."
        )
    if len(pred) == 0:
        raise ValueError("PCK of no points is undefined; pass at least one match.")
    if not threshold > 0:
        raise ValueError(
            f"threshold must be > 0 (pixels, or a fraction of the diagonal with image_size), got {threshold}."
        )
    if image_size is not None:
        threshold = threshold * math.hypot(*image_size)
    return ((pred - true).norm(dim=-1) < threshold).double().mean().item()
