"""Boundary F-measure of segmentations, as the DAVIS benchmark's contour accuracy F (davis2017-evaluation,
davis2017/metrics.py `f_measure` and `_seg2bmap`), in plain torch.

For a binary mask, the boundary map marks each pixel whose value differs from its right, lower or lower-right
neighbour (the last row compares only to the right, the last column only downwards). With a tolerance of r pixels
(r = ceil(bound_th · image diagonal) when bound_th < 1, else bound_th), a predicted boundary pixel is matched when a
ground-truth boundary pixel lies in the disk of radius r around it (x² + y² ≤ r²), and vice versa:

    P = matched predicted boundary pixels / predicted boundary pixels
    R = matched ground-truth boundary pixels / ground-truth boundary pixels
    F = 2PR / (P + R)   (0 when P + R = 0)

Empty boundaries follow DAVIS: none predicted but some true gives P = 1, R = 0 (F = 0); some predicted but none true
gives P = 0, R = 1 (F = 0); neither gives F = 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .functional import _paired_maps, _tensor


def _binary_mask(mask: Any, name: str) -> torch.Tensor:
    t = _tensor(mask)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {tuple(t.shape)}.")
    if t.dtype != torch.bool:
        values = t.unique()
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(
                f"{name} must be binary (bool or 0/1), got values {values[:6].tolist()}; for label maps use "
                "boundary_f_score."
            )
        t = t != 0
    return t


def boundary_map(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) bool boundary of a (H, W) bool mask, as DAVIS's `_seg2bmap` at the mask's own size."""
    right = torch.zeros_like(mask)
    down = torch.zeros_like(mask)
    diag = torch.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    down[:-1, :] = mask[1:, :]
    diag[:-1, :-1] = mask[1:, 1:]
    b = (mask ^ right) | (mask ^ down) | (mask ^ diag)
    b[-1, :] = mask[-1, :] ^ right[-1, :]
    b[:, -1] = mask[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def _tolerance_pixels(shape: tuple[int, int], bound_th: float) -> int:
    if not bound_th > 0:
        raise ValueError(f"bound_th must be > 0 (a fraction of the diagonal below 1, else pixels), got {bound_th}.")
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def _dilate(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within the disk x² + y² ≤ radius² of a boundary pixel."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()
    hits = F.conv2d(boundary.float()[None, None], disk[None, None], padding=radius)
    return hits[0, 0] > 0


def boundary_precision_recall(
    pred_mask: Any, gt_mask: Any, bound_th: float = 0.008, void_mask: Any | None = None
) -> tuple[float, float]:
    """Boundary precision and recall of a binary mask (see the module docstring). `void_mask` (optional, True where
    unlabelled) is removed from both masks before their boundaries are taken, as DAVIS's void pixels."""
    pred = _binary_mask(pred_mask, "pred_mask")
    gt = _binary_mask(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred_mask has shape {tuple(pred.shape)} but gt_mask has shape {tuple(gt.shape)}; resize the prediction "
            "to the ground truth's size first."
        )
    if void_mask is not None:
        void = _binary_mask(void_mask, "void_mask")
        if void.shape != gt.shape:
            raise ValueError(f"void_mask has shape {tuple(void.shape)}, expected {tuple(gt.shape)}.")
        pred, gt = pred & ~void, gt & ~void
    radius = _tolerance_pixels(tuple(gt.shape), bound_th)
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0
    if n_pred == 0:
        return 1.0, 0.0
    if n_gt == 0:
        return 0.0, 1.0
    precision = int((pred_b & _dilate(gt_b, radius)).sum()) / n_pred
    recall = int((gt_b & _dilate(pred_b, radius)).sum()) / n_gt
    return precision, recall


def boundary_f_measure(
    pred_mask: Any, gt_mask: Any, bound_th: float = 0.008, void_mask: Any | None = None
) -> float:
    """DAVIS boundary F-measure F = 2PR / (P + R) of two (H, W) binary masks (see the module docstring).

    bound_th: the matching tolerance, a fraction of the image diagonal when < 1 (DAVIS: 0.008), else pixels.
    """
    precision, recall = boundary_precision_recall(pred_mask, gt_mask, bound_th, void_mask)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def boundary_f_score(
    predictions: Any, references: Any, bound_th: float = 0.008, ignore_index: int | None = 255
) -> float:
    """Multi-class boundary F-score of label maps: per map, the mean over the classes present in the prediction or
    the reference of `boundary_f_measure(pred == c, ref == c)`; then the mean over maps.

    predictions, references: (B, H, W) / (H, W) label maps or lists of (H, W) maps of matching shapes. Reference
    pixels equal to `ignore_index` are void (removed from both masks, as DAVIS's void pixels) and not a class.
    A class predicted but absent from the reference, or the reverse, scores 0.
    """
    scores = []
    for pred, ref in _paired_maps(predictions, references):
        void = ref == ignore_index if ignore_index is not None else torch.zeros_like(ref, dtype=torch.bool)
        classes = torch.cat([pred[~void], ref[~void]]).unique()
        if len(classes) == 0:
            raise ValueError("A reference map is entirely void (ignore_index); it has no class to score.")
        scores.append(
            sum(boundary_f_measure(pred == c, ref == c, bound_th, void) for c in classes.tolist()) / len(classes)
        )
    return sum(scores) / len(scores)
