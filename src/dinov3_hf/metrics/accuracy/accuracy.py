"""Offline `evaluate` module: classification accuracy (dinov3_hf.metrics.functional.accuracy)."""

import datasets
import evaluate
from dinov3_hf.metrics.functional import accuracy

_DESCRIPTION = "Accuracy: the fraction of predictions equal to the reference class index."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): reference class indices.
Returns:
    accuracy (float): fraction of correct predictions, in [0, 1].
Examples:
    >>> metric = dinov3_hf.metrics.load_metric("accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
