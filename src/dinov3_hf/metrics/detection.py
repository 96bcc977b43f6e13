"""COCO-style detection, instance and panoptic segmentation metrics on the output formats of transformers'
post-processing (torchmetrics with the pycocotools backend; `pip install torchmetrics pycocotools`).

- `box_map` / `mask_map`: COCO mean average precision (AP averaged over IoU thresholds 0.50:0.05:0.95, 101-point
  interpolated precision, categories averaged, up to 100 detections per image). predictions: one dict per image,
  as `post_process_object_detection` ({"boxes" [N, 4] xyxy pixels, "scores" [N], "labels" [N]}) or
  `post_process_instance_segmentation(..., return_binary_maps=True)` gives them ({"masks" bool [N, H, W], "scores",
  "labels"}); targets: one dict per image with "boxes" or "masks" and "labels" (`PastedObjectsImage.target()`).
- `panoptic_quality`: PQ = sum of the IoUs of matched segments / (TP + FP / 2 + FN / 2) per category, averaged
  over categories, with SQ (mean IoU of the matches) and RQ (the F1 of the matching), PQ = SQ * RQ per category
  (Kirillov et al., "Panoptic Segmentation", CVPR 2019), computed as cocodataset/panopticapi's
  panopticapi/evaluation.py computes it. A predicted and a true segment match when their IoU exceeds 0.5. Inputs
  in `post_process_panoptic_segmentation`'s format: {"segmentation": int [H, W] segment ids, "segments_info":
  [{"id", "label_id"}, ...]}.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch


def _torchmetrics():
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError as error:
        raise ImportError(
            "The detection metrics use torchmetrics with the pycocotools backend: pip install torchmetrics pycocotools"
        ) from error
    return MeanAveragePrecision


def _detections(items: Sequence[dict[str, Any]], key: str, scored: bool, what: str) -> list[dict[str, torch.Tensor]]:
    """`items` as torchmetrics wants them: `key` ("boxes" float / "masks" bool), "labels" int64, "scores" float."""
    if isinstance(items, dict) or not isinstance(items, Sequence):
        raise TypeError(f"{what} must be a list with one dict per image, got {type(items).__name__}.")
    needed = (key, "labels", "scores") if scored else (key, "labels")
    converted = []
    for index, item in enumerate(items):
        missing = [name for name in needed if name not in item]
        if missing:
            raise ValueError(
                f"{what}[{index}] lacks {', '.join(repr(m) for m in missing)}; each needs {', '.join(needed)} "
                f"(got keys {sorted(item)})."
            )
        values = {name: torch.as_tensor(item[name]).detach().cpu() for name in needed}
        values["labels"] = values["labels"].long().reshape(-1)
        if key == "boxes":
            values[key] = values[key].float().reshape(-1, 4)
        else:
            if values[key].ndim != 3:
                raise ValueError(f"{what}[{index}]['masks'] must be [N, H, W], got shape {tuple(values[key].shape)}.")
            values[key] = values[key].bool()
        if scored:
            values["scores"] = values["scores"].float().reshape(-1)
        counts = {name: len(value) for name, value in values.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{what}[{index}] has different numbers of entries per key: {counts}.")
        converted.append(values)
    return converted


def _mean_average_precision(predictions, targets, key: str) -> dict[str, float]:
    if len(predictions) != len(targets):
        raise ValueError(f"Got {len(predictions)} prediction dicts but {len(targets)} target dicts (one per image).")
    predictions = _detections(predictions, key, True, "predictions")
    targets = _detections(targets, key, False, "targets")
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        if key == "masks" and prediction[key].shape[1:] != target[key].shape[1:]:
            raise ValueError(
                f"Prediction {index} has masks of size {tuple(prediction[key].shape[1:])} but its target "
                f"{tuple(target[key].shape[1:])}; post-process at the target size (target_sizes=...)."
            )
    if not any(len(p["labels"]) for p in predictions) and any(len(t["labels"]) for t in targets):
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0}  # pycocotools' mask evaluation fails without detections
    mean_average_precision = _torchmetrics()
    metric = mean_average_precision(iou_type="bbox" if key == "boxes" else "segm", backend="pycocotools")
    metric.update(predictions, targets)
    result = metric.compute()
    # pycocotools reports -1 where a value is undefined (no ground truth)
    return {name: float("nan") if result[name] < 0 else float(result[name]) for name in ("map", "map_50", "map_75")}


def box_map(predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> dict[str, float]:
    """COCO box AP: {"map" (IoU 0.50:0.95), "map_50", "map_75"} as floats, NaN without ground truth.

    predictions: per image {"boxes" [N, 4] xyxy pixels, "scores" [N], "labels" [N]}; targets: per image
    {"boxes" [M, 4], "labels" [M]} (other keys are ignored)."""
    return _mean_average_precision(predictions, targets, "boxes")


def mask_map(predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> dict[str, float]:
    """COCO mask AP: {"map" (IoU 0.50:0.95), "map_50", "map_75"} as floats, NaN without ground truth.

    predictions: per image {"masks" bool [N, H, W], "scores" [N], "labels" [N]}; targets: per image
    {"masks" bool [M, H, W], "labels" [M]} (other keys are ignored)."""
    return _mean_average_precision(predictions, targets, "masks")


def _segments(
    item: dict[str, Any], stuffs: set[int], unlabelled: int | None, what: str
) -> tuple[torch.Tensor, dict[int, int]]:
    """(segment index map [H, W], {segment index: label}) of a transformers panoptic result: index 0 holds the
    pixels of no listed segment (labelled `unlabelled` unless None), the segments of one stuff category merged."""
    if "segmentation" not in item or "segments_info" not in item:
        raise ValueError(f"{what} needs 'segmentation' and 'segments_info' (got keys {sorted(item)}).")
    segmentation = torch.as_tensor(item["segmentation"]).detach().cpu().long()
    if segmentation.ndim != 2:
        raise ValueError(f"{what}['segmentation'] must be [H, W], got shape {tuple(segmentation.shape)}.")
    index_map = torch.zeros(segmentation.shape, dtype=torch.long)
    labels: dict[int, int] = {} if unlabelled is None else {0: unlabelled}
    stuff_index: dict[int, int] = {} if unlabelled is None else {unlabelled: 0}
    for segment in item["segments_info"]:
        label = int(segment["label_id"])
        index = stuff_index.setdefault(label, len(labels) + 1) if label in stuffs else len(labels) + 1
        labels[index] = label
        index_map[segmentation == int(segment["id"])] = index
    return index_map, labels


def panoptic_quality(
    predictions: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    things: Collection[int],
    stuffs: Collection[int] = (),
    unlabelled: int | None = None,
) -> dict[str, float]:
    """Panoptic quality {"pq", "sq", "rq"} averaged over the categories that have a TP, FP or FN, computed as
    panopticapi's evaluation.py computes it (see the module docstring).

    predictions, targets: per image {"segmentation" int [H, W], "segments_info" [{"id", "label_id"}, ...]}; pixels
        of no listed segment (0, or -1 as transformers writes an image without segments) are unlabelled.
    things / stuffs: the label ids of countable and uncountable categories (the segments of one stuff category in an
        image are merged).
    unlabelled: a stuff id given to the unlabelled pixels of predictions and targets (e.g. the background), or
        None: unlabelled target pixels are void (left out of each IoU's union; a predicted segment that is more than
        half void is no false positive) and unlabelled predicted pixels belong to no segment.

    torchmetrics' PanopticQuality also leaves out of the union the target pixels that the prediction leaves
    unlabelled, so a prediction covering 20 of a segment's 25 pixels scores IoU 1 there instead of 0.8; this function
    keeps them, as panopticapi does.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"Got {len(predictions)} prediction dicts but {len(targets)} target dicts (one per image).")
    things, stuffs = {int(t) for t in things}, {int(s) for s in stuffs}
    if things & stuffs:
        raise ValueError(f"Categories {sorted(things & stuffs)} are in both things and stuffs.")
    if unlabelled is not None and unlabelled not in stuffs:
        raise ValueError(f"unlabelled={unlabelled} must be one of the stuffs ids; add it to stuffs.")
    known = things | stuffs
    iou_sum, tp, fp, fn = ({c: 0.0 for c in known} for _ in range(4))
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        pred, pred_labels = _segments(prediction, stuffs, unlabelled, f"predictions[{index}]")
        true, true_labels = _segments(target, stuffs, unlabelled, f"targets[{index}]")
        if pred.shape != true.shape:
            raise ValueError(
                f"Prediction {index} is {tuple(pred.shape)} but its target is {tuple(true.shape)}; post-process at the "
                "target size (target_sizes=...)."
            )
        unknown = sorted({*pred_labels.values(), *true_labels.values()} - known)
        if unknown:
            raise ValueError(f"Image {index} has label ids {unknown} that are in neither things nor stuffs.")
        n_pred = max(pred_labels, default=0) + 1
        n_true = max(true_labels, default=0) + 1
        # counts[t, p] = pixels of target segment t and predicted segment p
        counts = torch.bincount((true * n_pred + pred).reshape(-1), minlength=n_true * n_pred).reshape(n_true, n_pred)
        pred_area, true_area = counts.sum(0).tolist(), counts.sum(1).tolist()
        void = counts[0].tolist() if unlabelled is None else [0] * n_pred  # predicted pixels on void targets
        counts = counts.tolist()
        matched_pred, matched_true = set(), set()
        for t, t_label in true_labels.items():
            for p, p_label in pred_labels.items():
                if t_label != p_label or counts[t][p] == 0:
                    continue
                iou = counts[t][p] / (pred_area[p] + true_area[t] - counts[t][p] - void[p])
                if iou > 0.5:  # at most one match per segment: segments do not overlap
                    matched_pred.add(p)
                    matched_true.add(t)
                    iou_sum[t_label] += iou
                    tp[t_label] += 1
        for t, t_label in true_labels.items():
            fn[t_label] += t not in matched_true
        for p, p_label in pred_labels.items():
            fp[p_label] += p not in matched_pred and void[p] <= 0.5 * pred_area[p]
    scores = []
    for c in sorted(known):
        if tp[c] + fp[c] + fn[c] == 0:
            continue
        sq = iou_sum[c] / tp[c] if tp[c] else 0.0
        rq = tp[c] / (tp[c] + 0.5 * fp[c] + 0.5 * fn[c])
        scores.append((sq * rq, sq, rq))
    if not scores:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan")}
    pq, sq, rq = (sum(column) / len(scores) for column in zip(*scores))
    return {"pq": pq, "sq": sq, "rq": rq}
