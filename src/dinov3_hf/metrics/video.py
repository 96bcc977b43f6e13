"""Semi-supervised video object segmentation metrics of the DAVIS benchmark (davis2017-evaluation: `metrics.py`
`db_eval_iou`, `evaluation.py` `_evaluate_semisupervised`), as DINOv3's video segmentation tracking evaluation uses them
on DAVIS-2017 (arXiv 2508.10104): region similarity J, contour accuracy F and their mean J&F.

    J(o, t) = |P ∩ G| / |P ∪ G| over non-void pixels, P = (prediction == o), G = (reference == o); 1 if P ∪ G = ∅
    F(o, t) = boundary F-measure of P and G (`metrics.boundary.boundary_f_measure`, tolerance 0.008 of the diagonal)
    J(o) = mean over the evaluated frames t, F(o) likewise;  J = mean over objects of J(o), F likewise
    J&F = (J + F) / 2

DAVIS conventions kept here: the objects are the ids 1..N with N the largest id in the first reference frame (0 is
the background, never scored); an object absent from a frame still counts there (1 if the prediction leaves it out
too, else 0); the first frame (given) and the last frame are not evaluated; reference pixels equal to `void_index`
(255) are void and removed from both masks; a prediction holding an id above N is an error. For a dataset, DAVIS
averages J(o) and F(o) over all objects of all sequences (`per_object`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .boundary import boundary_f_measure
from .functional import _tensor


@dataclass
class VideoSegmentationScores:
    """J, F and J&F of one sequence; `j` and `f` [N, T'] hold each object's score on each evaluated frame (`frames`),
    for the object ids `object_ids`."""

    j_mean: float
    f_mean: float
    jf_mean: float
    j: torch.Tensor
    f: torch.Tensor
    object_ids: list[int]
    frames: list[int]

    @property
    def per_object(self) -> dict[int, tuple[float, float]]:
        """Object id -> (J(o), F(o)), the per-object means that DAVIS pools across sequences."""
        return {
            o: (float(j), float(f)) for o, j, f in zip(self.object_ids, self.j.mean(1), self.f.mean(1), strict=True)
        }


def region_similarity(pred_mask: Any, gt_mask: Any, void_mask: Any | None = None) -> float:
    """DAVIS region similarity J of two (H, W) binary masks: intersection over union of the non-void pixels, 1 when
    the union is empty (`db_eval_iou`)."""
    pred, gt = _tensor(pred_mask).bool(), _tensor(gt_mask).bool()
    if pred.shape != gt.shape:
        raise ValueError(f"pred_mask has shape {tuple(pred.shape)} but gt_mask has shape {tuple(gt.shape)}.")
    keep = torch.ones_like(gt) if void_mask is None else ~_tensor(void_mask).bool()
    union = int(((pred | gt) & keep).sum())
    return 1.0 if union == 0 else int((pred & gt & keep).sum()) / union


def video_j_and_f(
    predictions: Any,
    references: Any,
    *,
    void_index: int | None = 255,
    bound_th: float = 0.008,
    skip_first_and_last: bool = True,
) -> VideoSegmentationScores:
    """J, F and J&F of one sequence (see the module docstring).

    predictions, references: label maps [T, H, W] (tensors or arrays; frame 0's reference is the given mask).
    skip_first_and_last: DAVIS's semi-supervised protocol (False scores every frame).
    """
    preds, refs = _tensor(predictions).long(), _tensor(references).long()
    if preds.ndim != 3 or preds.shape != refs.shape:
        raise ValueError(
            f"predictions and references must be label maps of one shape [T, H, W], got {tuple(preds.shape)} and "
            f"{tuple(refs.shape)}."
        )
    frames = list(range(1, refs.shape[0] - 1)) if skip_first_and_last else list(range(refs.shape[0]))
    if not frames:
        raise ValueError(
            f"a sequence of {refs.shape[0]} frames has none to score once the first and last are left out; give at "
            "least 3 frames (or skip_first_and_last=False)."
        )
    void = refs == void_index if void_index is not None else torch.zeros_like(refs, dtype=torch.bool)
    first = refs[0][~void[0]]
    num_objects = int(first.max()) if first.numel() else 0
    if num_objects < 1:
        raise ValueError("the first reference frame holds no object (ids 1..N); there is nothing to track.")
    predicted = preds[frames][~void[frames]]
    if predicted.numel() and (int(predicted.max()) > num_objects or int(predicted.min()) < 0):
        raise ValueError(
            f"the predictions hold ids {sorted(set(predicted.unique().tolist()) - set(range(num_objects + 1)))} "
            f"outside 0..{num_objects} (the ids of the first reference frame)."
        )
    object_ids = list(range(1, num_objects + 1))
    j = torch.zeros(num_objects, len(frames), dtype=torch.float64)
    f = torch.zeros_like(j)
    for column, t in enumerate(frames):
        for row, o in enumerate(object_ids):
            j[row, column] = region_similarity(preds[t] == o, refs[t] == o, void[t])
            f[row, column] = boundary_f_measure(preds[t] == o, refs[t] == o, bound_th, void[t])
    j_mean, f_mean = float(j.mean()), float(f.mean())
    return VideoSegmentationScores(j_mean, f_mean, (j_mean + f_mean) / 2, j, f, object_ids, frames)
