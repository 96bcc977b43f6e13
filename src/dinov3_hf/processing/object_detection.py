"""Image processor and post-processing of the Plain-DETR detector (`Dinov3HfForPlainDetrDetection`).

Preprocessing is [`Dinov3HfImageProcessor`]'s (antialiased bilinear resize, ImageNet mean / std normalisation,
optional bottom / right padding with a `pixel_mask`), with defaults chosen for the detector: the shorter side
resized to 1024 px and both sides snapped to multiples of 48 (3 windows x 16-px patches, so that the official
`WindowsWrapper` cuts equal windows and drops no pixel). Meta's code fixes neither the test resolution nor the
normalisation of the detector (`dinov3/eval/detection` has no evaluation transform); ImageNet statistics are those of
every other DINOv3 head. Pass `size=` to choose another resolution.

Post-processing follows the official `PostProcess(reparam=True)` (`dinov3/eval/detection/models/detr.py`) on
plain tensors: sigmoid scores, top-k over all (query, class) pairs, cxcywh -> xyxy, boxes clamped to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .image_processing import Dinov3HfImageProcessor, _output_field, _target_sizes

DETECTION_SHORTEST_EDGE = 1024
DETECTION_SIZE_DIVISOR = 48


def post_process_object_detection(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    image_sizes: torch.Tensor | Sequence[Sequence[int]],
    threshold: float = 0.0,
    target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
    top_k: int = 1500,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image as transformers' object-detection format `{"scores", "labels", "boxes"}`.

    logits [B, Q, C] and pred_boxes [B, Q, 4] (cxcywh pixels of the model's input tensor); image_sizes: each image's
    (height, width) in that tensor. Per image: `p = sigmoid(logits)` flattened query-major (index q * C + c), the
    `top_k` best (score, index) pairs, query `index // C`, label `index % C`; the query's box in xyxy, x clamped to
    [0, width] and y to [0, height]; then scaled by target_size / image_size (target_sizes: e.g. the original
    image sizes; None keeps input-tensor pixels). Detections with score <= threshold are dropped, sorted by score.
    """
    if logits.ndim != 3 or pred_boxes.shape[:2] != logits.shape[:2] or pred_boxes.shape[-1] != 4:
        raise ValueError(
            f"Expected logits [B, Q, C] and pred_boxes [B, Q, 4], got {tuple(logits.shape)} and "
            f"{tuple(pred_boxes.shape)}."
        )
    batch, _, num_classes = logits.shape
    sizes = torch.as_tensor(image_sizes, dtype=torch.float32).reshape(batch, 2)
    targets = _target_sizes(target_sizes, batch)
    results = []
    for b in range(batch):
        prob = logits[b].float().sigmoid().flatten()
        scores, index = prob.topk(min(top_k, prob.numel()))
        query, labels = index // num_classes, index % num_classes
        cx, cy, w, h = pred_boxes[b, query].float().unbind(-1)
        height, width = sizes[b].tolist()
        boxes = torch.stack(
            (
                (cx - 0.5 * w).clamp(0, width),
                (cy - 0.5 * h).clamp(0, height),
                (cx + 0.5 * w).clamp(0, width),
                (cy + 0.5 * h).clamp(0, height),
            ),
            dim=-1,
        )
        if targets[b] is not None:
            scale_h, scale_w = targets[b][0] / height, targets[b][1] / width
            boxes = boxes * torch.tensor([scale_w, scale_h, scale_w, scale_h])
        keep = scores > threshold
        results.append({"scores": scores[keep], "labels": labels[keep], "boxes": boxes[keep]})
    return results


class Dinov3HfDetectionImageProcessor(Dinov3HfImageProcessor):
    """[`Dinov3HfImageProcessor`] with the detector's defaults (shorter side 1024, multiples of 48, padding on) and
    `post_process_object_detection`, for `pipeline("object-detection")`."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("size", {"shortest_edge": DETECTION_SHORTEST_EDGE})
        kwargs.setdefault("size_divisor", DETECTION_SIZE_DIVISOR)
        kwargs.setdefault("do_pad", True)
        kwargs.setdefault("top_k", 1500)
        self.top_k = int(kwargs.pop("top_k"))
        super().__init__(**kwargs)

    @classmethod
    def for_model_config(cls, config: Any, **overrides: Any) -> "Dinov3HfDetectionImageProcessor":
        """The config's mean / std, sides snapped to `n_windows_sqrt * patch_size`, top_k = `config.topk`."""
        backbone = getattr(config, "backbone_config", config)
        overrides.setdefault("size_divisor", getattr(config, "n_windows_sqrt", 3) * backbone.patch_size)
        overrides.setdefault("top_k", getattr(config, "topk", 1500))
        return super().for_model_config(config, **overrides)

    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.0,
        target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """`post_process_object_detection` on a detector output (`logits`, `pred_boxes`, `image_sizes`)."""
        return post_process_object_detection(
            _output_field(outputs, "logits"),
            _output_field(outputs, "pred_boxes"),
            _output_field(outputs, "image_sizes"),
            threshold,
            target_sizes,
            self.top_k if top_k is None else top_k,
        )
