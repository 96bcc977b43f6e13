"""Offline `evaluate` module: depth-estimation errors (dinov3_hf.metrics.functional.depth_metrics)."""

import datasets
import evaluate
import numpy as np
from dinov3_hf.metrics.functional import depth_metrics

_DESCRIPTION = (
    "Depth errors over pixels with reference depth > 0, per image then averaged: RMSE, AbsRel and the threshold "
    "accuracies delta1..3 (fraction with max(pred / gt, gt / pred) < 1.25^k)."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D float arrays): predicted depth maps.
    references (list of 2-D float arrays): reference depth maps, same shapes; values <= 0 mark missing depth.
    min_depth, max_depth (float, optional): evaluation range; references outside it are ignored and predictions
        are clamped to it.
Returns:
    rmse, abs_rel, delta1, delta2, delta3 (float), num_images (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Depth(evaluate.Metric):
    def _info(self):
        depth_map = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": depth_map, "references": depth_map}),
        )

    def _compute(self, predictions, references, min_depth=None, max_depth=None):
        return depth_metrics(
            [np.asarray(p, dtype=np.float32) for p in predictions],
            [np.asarray(r, dtype=np.float32) for r in references],
            min_depth=min_depth,
            max_depth=max_depth,
        )
