"""Offline `evaluate` module: semantic-segmentation IoU (dinov3_hf.metrics.functional.mean_iou)."""

import datasets
import evaluate
import numpy as np
from dinov3_hf.metrics.functional import mean_iou

_DESCRIPTION = (
    "Mean Intersection-over-Union over classes, with pixel counts summed over all images; classes absent from both "
    "predictions and references get NaN IoU and are left out of the mean."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class maps.
    references (list of 2-D int arrays): reference class maps, same shapes.
    num_labels (int): number of classes.
    ignore_index (int, default 255): reference value left out of the counts.
    reduce_labels (bool, default False): map reference 0 to 255 and subtract 1 from the other labels.
Returns:
    mean_iou, mean_accuracy, overall_accuracy (float), per_category_iou, per_category_accuracy (np.ndarray).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255, reduce_labels=False):
        result = mean_iou(
            [np.asarray(p) for p in predictions],
            [np.asarray(r) for r in references],
            num_labels=num_labels,
            ignore_index=ignore_index,
            reduce_labels=reduce_labels,
        )
        result["per_category_iou"] = result["per_category_iou"].numpy()
        result["per_category_accuracy"] = result["per_category_accuracy"].numpy()
        return result
