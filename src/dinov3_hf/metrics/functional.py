"""Task metrics in plain torch: classification accuracy, semantic-segmentation IoU, depth-estimation errors.

Inputs may be torch tensors, numpy arrays or (nested) lists; segmentation and depth also take lists of per-image maps
of different sizes. `load_metric(name)` gives the same metrics as offline `evaluate` modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

METRIC_NAMES = ("accuracy", "mean_iou", "depth")


def _tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(np.asarray(x))


def _maps(x: Any) -> list[torch.Tensor]:
    """Per-image 2-D maps from a (B, H, W) / (H, W) array or a list of (H, W) arrays."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        t = _tensor(x)
        if t.ndim == 2:
            return [t]
        if t.ndim == 3:
            return list(t)
        raise ValueError(f"Expected maps of shape (H, W) or (B, H, W), got {tuple(t.shape)}.")
    if isinstance(x, Sequence) and not isinstance(x, str):
        maps = [_tensor(item) for item in x]
        if maps and all(m.ndim == 1 for m in maps):  # a single (H, W) map given as nested lists
            return [_tensor(x)]
        for m in maps:
            if m.ndim != 2:
                raise ValueError(f"Expected each map to be 2-D (H, W), got shape {tuple(m.shape)}.")
        return maps
    raise TypeError(f"Expected a tensor, an array or a list of maps, got {type(x).__name__}.")


def _paired_maps(predictions: Any, references: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    preds, refs = _maps(predictions), _maps(references)
    if len(preds) != len(refs):
        raise ValueError(f"Got {len(preds)} prediction maps but {len(refs)} reference maps.")
    for i, (p, r) in enumerate(zip(preds, refs)):
        if p.shape != r.shape:
            raise ValueError(
                f"Prediction {i} has shape {tuple(p.shape)} but its reference has shape {tuple(r.shape)}; resize the "
                "prediction to the reference size first (e.g. post_process_semantic_segmentation(outputs, "
                "target_sizes=...))."
            )
    return list(zip(preds, refs))


# -- classification -------------------------------------------------------------------------------------------------


def accuracy(predictions: Any, references: Any, top_k: int = 1) -> float:
    """Fraction of correct predictions.

    predictions: (N,) predicted class indices, or (N, C) scores / logits (then a hit is the reference among the
    `top_k` highest scores). references: (N,) class indices.
    """
    preds, refs = _tensor(predictions), _tensor(references).reshape(-1)
    if preds.shape[0] != refs.shape[0]:
        raise ValueError(f"Got {preds.shape[0]} predictions but {refs.shape[0]} references.")
    if refs.numel() == 0:
        return float("nan")
    if preds.ndim == 2:
        if not 1 <= top_k <= preds.shape[1]:
            raise ValueError(f"top_k must be in [1, {preds.shape[1]}] for {preds.shape[1]} classes, got {top_k}.")
        hits = (preds.topk(top_k, dim=1).indices == refs[:, None]).any(dim=1)
    elif preds.ndim == 1:
        if top_k != 1:
            raise ValueError("top_k > 1 needs (N, C) scores, not class indices.")
        hits = preds == refs
    else:
        raise ValueError(f"predictions must be (N,) class indices or (N, C) scores, got shape {tuple(preds.shape)}.")
    return hits.double().mean().item()


# -- semantic segmentation ------------------------------------------------------------------------------------------


def intersect_and_union(
    prediction: Any, reference: Any, num_labels: int, ignore_index: int | None = 255, reduce_labels: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class pixel counts of one map: (intersection, union, predicted area, reference area), each (num_labels,).

    Pixels whose reference is `ignore_index` are left out. `reduce_labels` first maps reference 0 to 255 and
    subtracts 1 from the others (ADE20K's "0 = other" convention). Reference values outside [0, num_labels) that
    are not ignored raise a ValueError, as do predictions outside that range.
    """
    pred, ref = _tensor(prediction).long(), _tensor(reference).long()
    if pred.shape != ref.shape:
        raise ValueError(f"Prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}.")
    if reduce_labels:
        ref = torch.where(ref == 0, torch.full_like(ref, 255), ref - 1)
        ref = torch.where(ref == 254, torch.full_like(ref, 255), ref)
    keep = torch.ones_like(ref, dtype=torch.bool) if ignore_index is None else ref != ignore_index
    pred, ref = pred[keep], ref[keep]
    for name, values in (("reference", ref), ("prediction", pred)):
        if values.numel() and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(
                f"{name} labels must lie in [0, {num_labels - 1}] (num_labels={num_labels}) or equal ignore_index="
                f"{ignore_index}; got values in [{values.min().item()}, {values.max().item()}]."
            )
    area_pred = torch.bincount(pred, minlength=num_labels)
    area_ref = torch.bincount(ref, minlength=num_labels)
    intersect = torch.bincount(ref[pred == ref], minlength=num_labels)
    return intersect, area_pred + area_ref - intersect, area_pred, area_ref


def iou_from_areas(
    intersect: torch.Tensor, union: torch.Tensor, area_pred: torch.Tensor, area_ref: torch.Tensor
) -> dict[str, Any]:
    """mIoU summary from per-class counts summed over a dataset (see `mean_iou` for the keys)."""
    intersect, union, area_ref = intersect.double(), union.double(), area_ref.double()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, intersect / union.clamp(min=1), nan)
    acc = torch.where(area_ref > 0, intersect / area_ref.clamp(min=1), nan)
    total = area_ref.sum()
    return {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(acc),
        "overall_accuracy": (intersect.sum() / total).item() if total > 0 else float("nan"),
        "per_category_iou": iou,
        "per_category_accuracy": acc,
    }


def _nanmean(x: torch.Tensor) -> float:
    present = x[~torch.isnan(x)]
    return present.mean().item() if present.numel() else float("nan")


def mean_iou(
    predictions: Any,
    references: Any,
    num_labels: int,
    ignore_index: int | None = 255,
    reduce_labels: bool = False,
) -> dict[str, Any]:
    """Dataset-level IoU, with pixel counts summed over all maps before dividing (as mmseg and `evaluate`'s mean_iou).

    predictions, references: (B, H, W) / (H, W) class maps or lists of (H, W) maps of matching shapes.
    Returns `mean_iou`, `mean_accuracy` (mean per-class recall), `overall_accuracy` (pixel accuracy) as floats and
    `per_category_iou`, `per_category_accuracy` as float64 tensors (num_labels,). A class absent from both the
    predictions and the references has NaN IoU (NaN accuracy if absent from the references) and is left out of the
    means; all-NaN means are NaN.
    """
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}.")
    totals = [torch.zeros(num_labels, dtype=torch.long) for _ in range(4)]
    for pred, ref in _paired_maps(predictions, references):
        for total, area in zip(totals, intersect_and_union(pred, ref, num_labels, ignore_index, reduce_labels)):
            total += area
    return iou_from_areas(*totals)


# -- depth ----------------------------------------------------------------------------------------------------------


def depth_metrics(
    predictions: Any,
    references: Any,
    valid_mask: Any = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
) -> dict[str, float]:
    """Depth errors over the valid pixels, computed per image and averaged over images (the usual NYU / KITTI way).

    Valid pixels: finite reference > 0 (and inside [min_depth, max_depth] when given, the predictions then being
    clamped to that range), and `valid_mask` where given. Images without valid pixels are skipped.
    Returns `rmse` = sqrt(mean((p - g)^2)), `abs_rel` = mean(|p - g| / g), `delta1` / `delta2` / `delta3` = fraction
    of pixels with max(p / g, g / p) < 1.25, 1.25^2, 1.25^3, and `num_images` (the images that counted); the
    metrics are NaN when none did.
    """
    pairs = _paired_maps(predictions, references)
    masks = [None] * len(pairs) if valid_mask is None else _maps(valid_mask)
    if len(masks) != len(pairs):
        raise ValueError(f"Got {len(masks)} valid masks for {len(pairs)} images.")
    keys = ("rmse", "abs_rel", "delta1", "delta2", "delta3")
    per_image: dict[str, list[float]] = {k: [] for k in keys}
    for (pred, gt), mask in zip(pairs, masks):
        pred, gt = pred.double(), gt.double()
        valid = torch.isfinite(gt) & (gt > 0)
        if min_depth is not None:
            valid &= gt >= min_depth
        if max_depth is not None:
            valid &= gt <= max_depth
        if mask is not None:
            if mask.shape != gt.shape:
                raise ValueError(
                    f"valid_mask shape {tuple(mask.shape)} differs from reference shape {tuple(gt.shape)}."
                )
            valid &= mask.bool()
        if not valid.any():
            continue
        p, g = pred[valid], gt[valid]
        if min_depth is not None or max_depth is not None:
            p = p.clamp(min=min_depth, max=max_depth)
        ratio = torch.maximum(p / g, g / p)  # p <= 0 gives inf or nan: never within the thresholds
        per_image["rmse"].append(torch.sqrt(((p - g) ** 2).mean()).item())
        per_image["abs_rel"].append(((p - g).abs() / g).mean().item())
        for k in (1, 2, 3):
            per_image[f"delta{k}"].append((ratio < 1.25**k).double().mean().item())
    count = len(per_image["rmse"])
    result = {k: (sum(v) / count if count else math.nan) for k, v in per_image.items()}
    result["num_images"] = count
    return result


# -- evaluate modules -----------------------------------------------------------------------------------------------


def metric_script_dir(name: str) -> Path:
    """Folder of the offline `evaluate` module `name` (one of METRIC_NAMES) shipped with dinov3_hf."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; dinov3_hf ships {', '.join(METRIC_NAMES)}.")
    return Path(__file__).resolve().parent / name


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` of one of dinov3_hf's offline metric modules ("accuracy", "mean_iou", "depth").

    Needs the `evaluate` package; works without network access. `kwargs` go to `evaluate.load`.
    """
    path = metric_script_dir(name)
    try:
        import evaluate
    except ImportError as error:
        raise ImportError(
            "load_metric needs the `evaluate` package (pip install evaluate); the same metrics are available without "
            "it in dinov3_hf.metrics.functional."
        ) from error
    return evaluate.load(str(path), **kwargs)
