"""Symmetric InfoNCE (CLIP / LiT loss, official `dinov3/eval/text/train_dinotxt.py`) over the global batch.

With unit embeddings x_i (images) and y_i (texts) of the N pairs of the global batch and s = exp(logit_scale):

    L = −(1/2N) Σ_i [ log softmax_j(s·x_i·y_j)_i + log softmax_j(s·y_i·x_j)_i ]

Under torch.distributed each rank holds B = N / W pairs (the same B on every rank). The embeddings are all-gathered
with autograd and each rank scores its own rows against all N columns, so its loss is the mean over its B rows and
the average over ranks (what DDP's gradient averaging applies) is L. The gather's backward sums every rank's
contribution to the local rows, so each rank's local gradient is W·∂L/∂(its rows) and DDP's 1/W gives ∂L/∂θ.
Computed in fp32 with autocast off.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .koleo import _AllGather


def symmetric_infonce(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor) -> Tensor:
    """L above, for unit image and text embeddings [B, E] of B pairs (row i of each belongs together)."""
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"The contrastive loss needs image-text pairs: image and text embeddings of the same shape [B, E], got "
            f"{tuple(image_embeds.shape)} images and {tuple(text_embeds.shape)} texts. Give one caption per image."
        )
    with torch.autocast(device_type=image_embeds.device.type, enabled=False):
        images, texts = image_embeds.float(), text_embeds.float()
        batch = images.shape[0]
        rows = torch.arange(batch, device=images.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            images, texts = _AllGather.apply(images), _AllGather.apply(texts)
            rows = rows + dist.get_rank() * batch
        scale = logit_scale.float().exp()
        logits_per_image = scale * images[rows] @ texts.t()
        logits_per_text = scale * texts[rows] @ images.t()
        return (F.cross_entropy(logits_per_image, rows) + F.cross_entropy(logits_per_text, rows)) / 2
