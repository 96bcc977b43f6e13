"""Image classification with the official linear probe: Linear(2D, num_labels) on [CLS ; mean patch token]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from .base import Dinov3HfHeadPreTrainedModel
from .configuration import Dinov3HfImageClassificationConfig

class Dinov3HfForImageClassification(Dinov3HfHeadPreTrainedModel):
    """DINOv3 backbone + the official linear classifier on [CLS ; mean patch token] (`dinov3/hub/classifiers.py`).

    logits = Linear(2 * D, num_labels)(concat(pooler_output, mean(patch_tokens))), both from the final norm; for a
    ConvNeXt the "CLS" is its normed pooled feature. The loss follows `config.problem_type` (cross-entropy for
    integer labels).
    """

    config: Dinov3HfImageClassificationConfig
    config_class = Dinov3HfImageClassificationConfig
    pipeline_tag = "image-classification"
    _head_size_fields = ("num_labels",)

    def __init__(self, config: Dinov3HfImageClassificationConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.classifier = nn.Linear(config.classifier_in_features, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels: (B,) class indices for single-label classification (or (B, num_labels) floats for multi-label,
            (B,) floats for regression with num_labels == 1).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        with self._backbone_context():
            outputs = self.backbone(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        features = outputs.pooler_output
        if self.config.use_mean_patch_token:
            features = torch.cat([features, outputs.patch_tokens.mean(dim=1)], dim=-1)
        logits = self.classifier(features)
        loss = self.classification_loss(logits, labels) if labels is not None else None
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.device)
        if labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"Got {labels.shape[0]} labels for a batch of {logits.shape[0]} images (labels shape "
                f"{tuple(labels.shape)}, logits shape {tuple(logits.shape)})."
            )
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif not labels.is_floating_point():
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.float().reshape(logits.shape[0]))
        if problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        if labels.ndim != 1:
            raise ValueError(
                f"Single-label classification needs labels of shape (batch,), got {tuple(labels.shape)}."
            )
        scored = labels[labels != -100]
        if scored.numel() and (scored.min() < 0 or scored.max() >= self.num_labels):
            raise ValueError(
                f"Class labels must lie in [0, {self.num_labels - 1}] (num_labels={self.num_labels}) or be -100 "
                f"(ignored); got values in [{scored.min().item()}, {scored.max().item()}]."
            )
        return F.cross_entropy(logits, labels.long())
