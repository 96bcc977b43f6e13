"""The `open-vocabulary-segmentation` pipeline task: a label map for free-text class names, with dino.txt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Pipeline
from transformers.image_utils import load_image

from ..models.dinotxt.zero_shot import DEFAULT_TEMPLATES, class_text_embeddings, open_vocab_segmentation

OPEN_VOCAB_SEGMENTATION_TASK = "open-vocabulary-segmentation"
_UNSET = object()  # `window=None` is meaningful (the whole image), so "not given" needs its own marker


class OpenVocabularySegmentationPipeline(Pipeline):
    """`pipe(image, candidate_labels=["cat", "grass", "sky"])` ->
    `{"segmentation": LongTensor (H, W) of label indices at the image's size, "labels": the candidate labels,
    "scores": (C, H, W) class probabilities}`.

    Options: `templates` (prompt templates with a `{}`; default `DEFAULT_TEMPLATES`), `shortest_edge` (the shorter
    image side before the model, default 512 as upstream), `window` / `stride` (sliding windows in pixels of the
    resized image, default 384 / 192; `window=None` runs the whole image at once).
    """

    _load_image_processor = True
    _load_tokenizer = True
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, candidate_labels=None, templates=None, shortest_edge=None, window=_UNSET, stride=None):
        preprocess, forward = {}, {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        if shortest_edge is not None:
            preprocess["shortest_edge"] = shortest_edge
        if templates is not None:
            forward["templates"] = templates
        if window is not _UNSET:
            forward["window"] = window
        if stride is not None:
            forward["stride"] = stride
        return preprocess, forward, {}

    def preprocess(self, image, candidate_labels: Sequence[str] | str | None = None, shortest_edge: int = 512):
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        if not candidate_labels:
            raise ValueError(
                "open-vocabulary-segmentation needs candidate_labels, a non-empty list of class names "
                "(e.g. candidate_labels=['cat', 'grass', 'sky'])."
            )
        image = load_image(image)
        inputs = self.image_processor(
            image, size={"shortest_edge": shortest_edge}, do_center_crop=False, resample="bicubic", return_tensors="pt"
        )
        return {
            "pixel_values": inputs["pixel_values"].to(self.dtype),
            "candidate_labels": list(candidate_labels),
            "image_size": (image.height, image.width),
        }

    def _forward(self, model_inputs: dict[str, Any], templates=DEFAULT_TEMPLATES, window=384, stride=192):
        labels = model_inputs["candidate_labels"]
        class_embeds = class_text_embeddings(self.model, self.tokenizer, labels, templates, patch_aligned=True)
        probs = open_vocab_segmentation(self.model, model_inputs["pixel_values"], class_embeds, window, stride)
        return {"probs": probs, "candidate_labels": labels, "image_size": model_inputs["image_size"]}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        probs = F.interpolate(model_outputs["probs"], size=model_outputs["image_size"], mode="bilinear")[0]
        return {
            "segmentation": probs.argmax(dim=0).to(torch.long),
            "labels": model_outputs["candidate_labels"],
            "scores": probs,
        }
