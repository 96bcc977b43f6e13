"""Zero-shot classification and open-vocabulary segmentation with dino.txt (official
`notebooks/dinotxt_segmentation_inference.ipynb`; arXiv 2508.10104 Sec. 7.3).

Class embeddings: per class, the L2-normalised text embeddings of its prompts (one per template) are averaged and
re-normalised. Segmentation uses the patch-aligned half of the text embedding (dims D..2D, the half that faces the
mean patch token) against the vision head's patch tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...common import snap_to_multiple, window_starts
from .modeling import Dinov3HfDinoTxtModel

# Prompt templates written for this package (a short, varied set; pass your own for a task).
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of the {}.",
    "an image showing a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of the {}.",
    "a good photo of a {}.",
    "there is a {} in this photo.",
    "a cropped picture of a {}.",
)


def _check_labels(labels: Sequence[str], templates: Sequence[str]) -> None:
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of class names, got the string {labels!r}; split it first.")
    if not labels or any(not str(label).strip() for label in labels):
        raise ValueError(f"Need a non-empty list of non-empty class names, got {list(labels)!r}.")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"Every template needs one '{{}}' placeholder for the class name, got {list(templates)!r}.")


@torch.no_grad()
def class_text_embeddings(
    model: Dinov3HfDinoTxtModel,
    tokenizer,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    patch_aligned: bool = False,
    batch_size: int = 256,
) -> torch.Tensor:
    """(C, E) unit class embeddings: mean over templates of normalised text embeddings, re-normalised.

    patch_aligned: use the second half of each text embedding (E = D), the part compared with patch tokens.
    """
    _check_labels(labels, templates)
    texts = [template.format(label) for label in labels for template in templates]
    device = model.text_projection.weight.device
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="text embeddings", leave=False, disable=len(texts) <= batch_size):
        ids = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        chunks.append(model.get_text_features(ids["input_ids"].to(device)))
    embeds = torch.cat(chunks)
    if patch_aligned:
        embeds = embeds[:, model.config.backbone_config.hidden_size :]
    embeds = F.normalize(embeds.float(), dim=-1).view(len(labels), len(templates), -1).mean(dim=1)
    return F.normalize(embeds, dim=-1)


@torch.no_grad()
def zero_shot_logits(model: Dinov3HfDinoTxtModel, pixel_values: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """(B, C) = exp(logit_scale) * cos(image embedding, class embedding)."""
    images = F.normalize(model.get_image_features(pixel_values).float(), dim=-1)
    return model.logit_scale.exp().float() * images @ class_embeds.to(images.device).t()


@torch.no_grad()
def open_vocab_segmentation(
    model: Dinov3HfDinoTxtModel,
    pixel_values: torch.Tensor,
    class_embeds: torch.Tensor,
    window: int | None = 384,
    stride: int = 192,
) -> torch.Tensor:
    """Per-pixel class probabilities (B, C, H, W) at the input's size, by the official sliding-window procedure.

    Each window (`window` x `window` every `stride` pixels, the last flush with the border; the whole image when
    `window` is None or covers it) is stretched (bicubic) to a multiple of the patch size; the cosine between each
    L2-normalised head patch token and each patch-aligned class embedding (`class_text_embeddings(...,
    patch_aligned=True)`) is upsampled bilinearly to the window, softmaxed over classes and averaged over overlapping
    windows.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}.")
    if window is not None and (window < 1 or not 1 <= stride <= window):
        raise ValueError(f"Need window >= 1 and 1 <= stride <= window, got window={window}, stride={stride}.")
    batch, _, height, width = pixel_values.shape
    patch = model.config.backbone_config.patch_size
    class_embeds = class_embeds.to(pixel_values.device, torch.float32)
    probs = pixel_values.new_zeros(batch, class_embeds.shape[0], height, width, dtype=torch.float32)
    counts = pixel_values.new_zeros(1, 1, height, width, dtype=torch.float32)
    win_h, win_w = (height, width) if window is None else (min(window, height), min(window, width))
    for top in window_starts(height, win_h, stride):
        for left in window_starts(width, win_w, stride):
            crop = pixel_values[..., top : top + win_h, left : left + win_w]
            size = (snap_to_multiple(win_h, patch), snap_to_multiple(win_w, patch))
            if size != (win_h, win_w):
                crop = F.interpolate(crop, size=size, mode="bicubic", align_corners=False)
            vision = model.encode_image(crop)
            grid_h, grid_w = size[0] // patch, size[1] // patch
            tokens = F.normalize(vision.patch_tokens.float(), dim=-1)
            cosine = (tokens @ class_embeds.t()).transpose(1, 2).reshape(batch, -1, grid_h, grid_w)
            cosine = F.interpolate(cosine, size=(win_h, win_w), mode="bilinear", align_corners=False)
            probs[..., top : top + win_h, left : left + win_w] += cosine.softmax(dim=1)
            counts[..., top : top + win_h, left : left + win_w] += 1
    return probs / counts
