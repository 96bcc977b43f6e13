"""Losses and the bins-to-depth conversion of the official linear depth probe (`dinov3/eval/depth/`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIGLOSS_EPS = 1e-3  # added inside the logs, "to avoid grad explode" (official)
SIGLOSS_MEAN_WEIGHT = 0.15  # loss = sqrt(var(g) + 0.15 * mean(g)^2)
DEPTH_NORM_EPS = 0.1  # "linear" norm: ReLU(logits) + 0.1, then normalised over the bins


MIXLOG_SCALE = 8.0  # CHMv2 was trained on depth / 8: its bins span [min, max / 8] and its output is multiplied by 8
MIXLOG_MAX_SHIFT = 1e-4  # "mixlog" norm: ReLU(logits) + clamp(-min, 0, 1e-4) + 1e-8, normalised over the bins
MIXLOG_SHIFT_EPS = 1e-8
MIXLOG_EPS = 1e-12  # floor of the normaliser, the bins and the depth in the "mixlog" norm


def depth_bins(
    n_bins: int,
    min_depth: float,
    max_depth: float,
    strategy: str = "linear",
    device=None,
    mixlog_scale: float = MIXLOG_SCALE,
) -> torch.Tensor:
    """Centres of the depth bins: `linspace(min_depth, max_depth, n_bins)`, its log-spaced analogue for "log", or
    CHMv2's "mixlog": `t * log_bins + (1 - t) * linear_bins` with t going from 1 to 0, both over
    [min_depth, max_depth / mixlog_scale] (the scale is undone by the "mixlog" norm in `logits_to_depth`)."""
    if strategy == "linear":
        return torch.linspace(min_depth, max_depth, n_bins, device=device)
    if strategy == "log":
        return torch.exp(torch.linspace(math.log(min_depth), math.log(max_depth), n_bins, device=device))
    if strategy == "mixlog":
        top = max_depth / mixlog_scale
        linear = torch.linspace(min_depth, top, n_bins, device=device)
        # float32 logs of float32 tensors, as the official `create_chmv2_mixlog_bins`
        log = torch.exp(
            torch.linspace(torch.log(torch.tensor(min_depth)), torch.log(torch.tensor(top)), n_bins, device=device)
        )
        t = torch.linspace(1.0, 0.0, n_bins, device=device)
        return t * log + (1.0 - t) * linear
    raise ValueError(f"bins strategy must be 'linear', 'log' or 'mixlog', got {strategy!r}.")


def bin_weights(logits: torch.Tensor, strategy: str = "linear") -> torch.Tensor:
    """Per-pixel weights over the bins (dim 1) that sum to 1.

    "linear" (official, AdaBins): (ReLU(logits) + 0.1) / sum; "softmax"; "sigmoid": sigmoid(logits) / sum;
    "mixlog" (CHMv2): y = ReLU(logits), (y + clamp(-min(y), 0, 1e-4) + 1e-8) / max(sum, 1e-12), a non-finite sum
    counting as 1.
    """
    if strategy == "linear":
        weights = torch.relu(logits) + DEPTH_NORM_EPS
    elif strategy == "sigmoid":
        weights = torch.sigmoid(logits)
    elif strategy == "softmax":
        return torch.softmax(logits, dim=1)
    elif strategy == "mixlog":
        y = torch.relu(logits)
        shift = (-y.amin(dim=1, keepdim=True)).clamp_min(0.0).clamp_max(MIXLOG_MAX_SHIFT) + MIXLOG_SHIFT_EPS
        y = y + shift
        denom = torch.nan_to_num(y.sum(dim=1, keepdim=True), nan=1.0, posinf=1.0, neginf=1.0).clamp_min(MIXLOG_EPS)
        return y / denom
    else:
        raise ValueError(f"norm strategy must be 'linear', 'softmax', 'sigmoid' or 'mixlog', got {strategy!r}.")
    return weights / weights.sum(dim=1, keepdim=True)


def logits_to_depth(
    logits: torch.Tensor,
    min_depth: float,
    max_depth: float,
    bins_strategy: str = "linear",
    norm_strategy: str = "linear",
    mixlog_scale: float = MIXLOG_SCALE,
) -> torch.Tensor:
    """Bin logits (B, n_bins, h, w) -> depth (B, 1, h, w) = sum over bins of weight * bin centre.

    With the "mixlog" norm (CHMv2) the bins are floored at 1e-12, the depth too, and it is multiplied by
    `mixlog_scale`, as the official `create_outputs_with_chmv2_mixlog_norm`.
    """
    bins = depth_bins(
        logits.shape[1], min_depth, max_depth, bins_strategy, device=logits.device, mixlog_scale=mixlog_scale
    ).to(logits.dtype)
    weights = bin_weights(logits, norm_strategy)
    if norm_strategy == "mixlog":
        depth = (weights * bins.clamp_min(MIXLOG_EPS).view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        return depth.clamp_min(MIXLOG_EPS) * mixlog_scale
    return torch.einsum("bkhw,k->bhw", weights, bins).unsqueeze(1)


def valid_depth_mask(target: torch.Tensor) -> torch.Tensor:
    """Pixels with ground truth: finite and > 0 (0 marks missing depth in NYU / KITTI)."""
    return torch.isfinite(target) & (target > 0)


def sig_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    mean_only: bool = False,
    eps: float = SIGLOSS_EPS,
    mean_weight: float = SIGLOSS_MEAN_WEIGHT,
) -> torch.Tensor:
    """Scale-invariant log loss (AdaBins / BinsFormer, as in the official depth probe).

    g = log(prediction + eps) - log(target + eps) over the valid pixels of the whole batch;
    loss = sqrt(var(g) + mean_weight * mean(g)^2), with the unbiased variance (torch.var's default). With `mean_only`
    (the warm-up) the variance term is left out. If the radicand is <= 0 its absolute value is returned, as upstream.
    `valid_mask` defaults to `valid_depth_mask(target)`; without valid pixels the loss is 0 (still in the graph).
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"sig_loss needs prediction and target of the same shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}."
        )
    if valid_mask is None:
        valid_mask = valid_depth_mask(target)
    pred, gt = prediction[valid_mask], target[valid_mask]
    if pred.numel() == 0:
        return prediction.sum() * 0.0
    g = torch.log(pred + eps) - torch.log(gt + eps)
    radicand = mean_weight * g.mean() ** 2
    if not mean_only and g.numel() > 1:
        radicand = radicand + g.var()
    if radicand <= 0:
        return radicand.abs()
    return torch.sqrt(radicand)


class SigLoss(nn.Module):
    """`sig_loss` with the official warm-up: the first `warmup_steps` calls in training mode use the mean term only.

    The counter is a plain attribute: it counts calls since the module was built (a resumed run warms up again).
    """

    def __init__(self, warmup_steps: int = 100):
        super().__init__()
        self.warmup_steps = warmup_steps
        self.calls = 0

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mean_only = False
        if self.training and self.calls < self.warmup_steps:
            mean_only = True
            self.calls += 1
        return sig_loss(prediction, target, valid_mask, mean_only=mean_only)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of logits (B, C, h, w) bilinearly upsampled to the labels' (B, H, W) size, ignoring `ignore_index`.

    Without any labelled pixel the loss is 0 (still in the graph) instead of NaN.
    """
    upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if not (labels != ignore_index).any():
        return upsampled.sum() * 0.0
    return F.cross_entropy(upsampled, labels.long(), ignore_index=ignore_index)
