"""Video label propagation: semi-supervised video object segmentation from the first frame's mask by nearest
neighbours in patch-feature space, the protocol of DINOv3's video segmentation tracking evaluation on DAVIS-2017
(arXiv 2508.10104), from DINO (`eval_video_segmentation.py`) and "Space-time correspondence as a
contrastive random walk" (Jabri et al., 2020).

For each new frame t, with L2-normalised patch features f:

    context   = frame 0 (the given mask) and the last `context` frames before t (their propagated probabilities)
    s(i, j)   = <f_t(i), f_c(j)>   for every context patch j within `radius` patches of i (and -inf outside)
    keep      the `topk` largest s(i, .) over the whole context (ties with the k-th kept), -inf elsewhere
    p_t(i)    = sum_j softmax_j(s(i, j) / temperature) p_c(j)

Frame 0's probabilities are the one-hot of its mask downsampled to the patch grid. Each propagated p_t [h, w, M] is
upsampled bilinearly to the mask's size (as DINO; Meta's notebook upsamples by nearest neighbour), each label's map
is min-max normalised to [0, 1] over the frame, and the argmax is the frame's mask.

Defaults are those of Meta's notebook `notebooks/segmentation_tracking.ipynb` (dinov3 repository): 7 context frames,
a circular neighbourhood of radius 12 patches, top-5, temperature 0.2, the first mask downsampled by nearest
neighbour, images of 960 pixels on the shorter side (60 tokens for a ViT/16). DINO's `eval_video_segmentation.py`
uses the same queue (7), radius (12, a square neighbourhood) and top-k (5) with temperature 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from .correspondence import patch_feature_grid

CONTEXT = 7  # previous frames in the queue besides the first frame
TOPK = 5
RADIUS = 12.0  # in patches
TEMPERATURE = 0.2
NEIGHBOURHOODS = ("circle", "square")
SHORT_SIDE_TOKENS = 60  # 960 pixels at patch 16
_CHUNK_ELEMENTS = 1 << 24  # similarity entries computed at once (64 MiB of float32)


@dataclass
class PropagationResult:
    """`masks` int64 [T, H, W]: the label of every pixel of every frame (frame 0 is the given mask); `probabilities`
    float32 [T, M, h, w]: the propagated label distributions on the patch grid; `labels` int64 [M]: the label value
    of each of the M channels (the sorted values of the first mask)."""

    masks: torch.Tensor
    probabilities: torch.Tensor
    labels: torch.Tensor


def grid_positions(height: int, width: int) -> torch.Tensor:
    """float32 [h·w, 2]: the (row, column) of each patch of an (h, w) grid, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()


def within_radius(
    targets: torch.Tensor, sources: torch.Tensor, radius: float, shape: Literal["circle", "square"] = "circle"
) -> torch.Tensor:
    """bool [n, m]: True where source position j [m, 2] lies within `radius` patches of target position i [n, 2], by
    the Euclidean ("circle") or Chebyshev ("square") distance."""
    if shape not in NEIGHBOURHOODS:
        raise ValueError(f"neighbourhood must be one of {', '.join(NEIGHBOURHOODS)}, got {shape!r}.")
    return torch.cdist(targets, sources, p=2.0 if shape == "circle" else float("inf")) <= radius


def first_frame_probabilities(
    first_mask: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int], soft: bool = False
) -> torch.Tensor:
    """float32 [h, w, M]: the one-hot of `first_mask` [H, W] over `labels` [M], on the (h, w) patch grid.

    soft=False: the mask downsampled by nearest neighbour ("nearest-exact"), as Meta's notebook; soft=True: the
    fraction of each patch's pixels that carry each label (area averaging), for masks whose edges cut patches.
    """
    one_hot = (first_mask[None] == labels[:, None, None]).float()[None]  # [1, M, H, W]
    if soft:
        pooled = F.adaptive_avg_pool2d(one_hot, grid)
    else:
        pooled = F.interpolate(one_hot, size=grid, mode="nearest-exact")
    return pooled[0].permute(1, 2, 0).contiguous()


def propagate_frame(
    target: torch.Tensor,
    context_features: torch.Tensor,
    context_probabilities: torch.Tensor,
    grid: tuple[int, int],
    *,
    topk: int = TOPK,
    radius: float = RADIUS,
    temperature: float = TEMPERATURE,
    neighbourhood: Literal["circle", "square"] = "circle",
) -> torch.Tensor:
    """One step: [h·w, M] label distributions of the target patches `target` [h·w, D] from `context_features`
    [t, h·w, D] (all L2-normalised, row-major on the (h, w) `grid`) and `context_probabilities` [t, h·w, M]; see the
    module docstring for the formula. Target rows are taken in chunks against the band of source rows within
    `radius` of them (the only rows the neighbourhood admits), so memory stays bounded for large grids; rows whose
    k-th largest similarity is not tied gather their k sources, tied rows weigh every source that reaches it."""
    height, width = grid
    t, n, _ = context_features.shape
    positions = grid_positions(height, width).to(target.device)
    reach = min(height, math.floor(radius))  # source rows farther than this are outside every neighbourhood
    rows = max(1, min(height, _CHUNK_ELEMENTS // (t * width * width * (1 + 2 * reach))))
    out = target.new_empty(n, context_probabilities.shape[-1])
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        targets = slice(top * width, bottom * width)
        sources = slice(max(0, top - reach) * width, min(height, bottom + reach) * width)
        allowed = within_radius(positions[targets], positions[sources], radius, neighbourhood)  # [c, s]
        similarity = torch.matmul(target[targets], context_features[:, sources].transpose(1, 2))  # [t, c, s]
        similarity.masked_fill_(~allowed, float("-inf"))
        probs = context_probabilities[:, sources].flatten(0, 1)  # [t·s, M]
        size = similarity.shape[2]
        k = min(topk, t * size)
        # the k + 1 largest over the whole context are among each frame's k + 1 largest
        values, index = similarity.topk(min(k + 1, size), dim=2)  # [t, c, k']
        index = index + torch.arange(t, device=index.device)[:, None, None] * size
        values, chosen = values.permute(1, 0, 2).flatten(1).topk(min(k + 1, t * values.shape[2]), dim=1)
        index = index.permute(1, 0, 2).flatten(1).gather(1, chosen)
        kth = values[:, k - 1 : k]
        chunk = torch.softmax(values[:, :k] / temperature, dim=1)[:, :, None].mul(probs[index[:, :k]]).sum(1)
        if values.shape[1] > k:  # a finite (k + 1)-th value equal to the k-th: a tie, and every tied source counts
            tied = ((values[:, k] == values[:, k - 1]) & values[:, k].isfinite()).nonzero()[:, 0]
        else:
            tied = index.new_empty(0)
        if len(tied):
            scores = similarity[:, tied].permute(1, 0, 2).flatten(1)  # [r, t·s]
            scores = scores.masked_fill(scores < kth[tied], float("-inf"))
            chunk[tied] = torch.softmax(scores / temperature, dim=1) @ probs
        out[targets] = chunk
    return out / out.sum(dim=1, keepdim=True)  # sums to 1 up to rounding, which would accumulate over frames


def _check_parameters(context: int, topk: int, radius: float, temperature: float, neighbourhood: str) -> None:
    if context < 0:
        raise ValueError(f"context must be >= 0 previous frames (0 uses the first frame only), got {context}.")
    if topk < 1:
        raise ValueError(f"topk must be >= 1 source patches, got {topk}.")
    if radius < 0:
        raise ValueError(f"radius must be >= 0 patches, got {radius}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(f"neighbourhood must be one of {', '.join(NEIGHBOURHOODS)}, got {neighbourhood!r}.")


def _as_mask(first_mask: torch.Tensor | np.ndarray | Image.Image) -> torch.Tensor:
    array = np.asarray(first_mask) if not isinstance(first_mask, torch.Tensor) else first_mask.cpu().numpy()
    if array.ndim != 2 or array.dtype.kind not in "iub":
        raise ValueError(
            f"first_mask must be a 2-D integer label map [H, W] (e.g. a palette or grayscale PNG read with PIL), got "
            f"shape {array.shape} and dtype {array.dtype}."
        )
    return torch.from_numpy(array.astype(np.int64))


def pixel_masks(probabilities: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """int64 [H, W]: the mask of one frame from its patch-grid probabilities [M, h, w]: bilinear upsampling to
    `size`, per-label min-max normalisation over the frame (a constant map becomes 0), argmax, label values."""
    upsampled = F.interpolate(probabilities[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    high = upsampled.amax(dim=(1, 2), keepdim=True)
    normalised = torch.nan_to_num((upsampled - low) / (high - low), nan=0.0)
    return labels[normalised.argmax(dim=0)]


def propagate_labels(
    frame_features: Sequence[torch.Tensor] | torch.Tensor | Iterable[torch.Tensor],
    first_mask: torch.Tensor | np.ndarray | Image.Image,
    *,
    context: int = CONTEXT,
    topk: int = TOPK,
    radius: float = RADIUS,
    temperature: float = TEMPERATURE,
    neighbourhood: Literal["circle", "square"] = "circle",
    soft_first_mask: bool = False,
    num_frames: int | None = None,
    progress: bool = False,
) -> PropagationResult:
    """Propagate `first_mask` through a video given per-frame patch features (see the module docstring).

    frame_features: one [h, w, D] patch-feature grid per frame (a [T, h, w, D] tensor, a list, or any iterable, e.g.
        a generator that runs a model frame by frame), all on one grid; they are L2-normalised here.
    first_mask: the label map [H, W] of frame 0 (any integer values; 0 is usually the background). The output masks
        have its size and its label values.
    context: previous frames kept in the queue beside frame 0. topk: source patches kept per target patch.
    radius: neighbourhood radius in patches. temperature: softmax temperature on the cosine similarities.
    neighbourhood: "circle" (Euclidean, Meta's notebook) or "square" (Chebyshev, DINO).
    soft_first_mask: area-average the first mask onto the patch grid instead of nearest-neighbour sampling.
    num_frames: the number of frames, for the progress bar of an iterable without a length.
    """
    _check_parameters(context, topk, radius, temperature, neighbourhood)
    mask = _as_mask(first_mask)
    labels = mask.unique()
    if isinstance(frame_features, torch.Tensor) and frame_features.ndim != 4:
        raise ValueError(f"frame_features must be [T, h, w, D] patch grids, got shape {tuple(frame_features.shape)}.")
    if num_frames is None and hasattr(frame_features, "__len__"):
        num_frames = len(frame_features)
    frames = iter(frame_features)
    first = next(frames, None)
    if first is None or first.ndim != 3:
        raise ValueError("frame_features must start with frame 0's [h, w, D] patch grid.")
    height, width, _ = first.shape
    device = first.device
    first_probs = first_frame_probabilities(mask.to(device), labels.to(device), (height, width), soft_first_mask)
    first_probs = first_probs.reshape(height * width, -1)
    first_features = F.normalize(first.float().reshape(height * width, -1), dim=-1)
    queue: list[tuple[torch.Tensor, torch.Tensor]] = []  # (features, probabilities) of the last `context` frames
    probabilities, masks = [first_probs], [mask]
    total = None if num_frames is None else num_frames - 1
    for index, features in enumerate(
        tqdm(frames, desc="propagate", unit="frame", total=total, disable=not progress), start=1
    ):
        if features.ndim != 3 or tuple(features.shape[:2]) != (height, width):
            raise ValueError(
                f"frame {index} has patch features of shape {tuple(features.shape)}, but frame 0 has ({height}, "
                f"{width}, D); give every frame the same size."
            )
        target = F.normalize(features.float().reshape(height * width, -1), dim=-1)
        current = propagate_frame(
            target,
            torch.stack([first_features, *(f for f, _ in queue)]),
            torch.stack([first_probs, *(p for _, p in queue)]),
            (height, width),
            topk=topk,
            radius=radius,
            temperature=temperature,
            neighbourhood=neighbourhood,
        )
        if context > 0:
            queue = [*queue, (target, current)][-context:]
        probabilities.append(current)
        masks.append(pixel_masks(current.T.reshape(-1, height, width), labels.to(device), tuple(mask.shape)).cpu())
    grids = torch.stack([p.T.reshape(-1, height, width) for p in probabilities]).cpu()
    return PropagationResult(torch.stack(masks), grids, labels)


@torch.inference_mode()
def extract_frame_features(model: nn.Module, processor, frame: Image.Image | np.ndarray, size: int) -> torch.Tensor:
    """The [h, w, D] patch features of one frame (`correspondence.patch_feature_grid`: the model's `patch_tokens`)
    after `processor` resizes its shorter side to `size` pixels, without cropping."""
    inputs = processor(frame, size={"shortest_edge": size}, do_center_crop=False, return_tensors="pt")
    parameter = next(model.parameters(), None)
    return patch_feature_grid(model, inputs["pixel_values"]).to(parameter.device if parameter is not None else "cpu")


def propagate_video(
    model: nn.Module,
    processor,
    frames: Sequence[Image.Image | np.ndarray],
    first_mask: torch.Tensor | np.ndarray | Image.Image,
    *,
    size: int | None = None,
    progress: bool = True,
    **propagation,
) -> PropagationResult:
    """`propagate_labels` on the patch features of `model` for each frame, computed one frame at a time under a
    progress bar. model: a dinov3_hf backbone (ViT or ConvNeXt), or `correspondence.RawPixelPatches(p)` for the
    raw-pixel baseline (with a processor whose `size_divisor` is p).

    frames: RGB frames of one size (PIL images or [H, W, 3] arrays); first_mask: frame 0's label map at that size.
    size: the shorter side in pixels before the model (default 60 tokens: 60 x the model's stride, 960 pixels for a
        ViT/16, as Meta's notebook).
    propagation: `context`, `topk`, `radius`, `temperature`, `neighbourhood`, `soft_first_mask` of `propagate_labels`.
    """
    if len(frames) == 0:
        raise ValueError("frames is empty; give at least the first frame.")
    sizes = {(f.height, f.width) if isinstance(f, Image.Image) else np.asarray(f).shape[:2] for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"all frames must have one size, got {sorted(sizes)}; resize them first.")
    mask = _as_mask(first_mask)
    if tuple(mask.shape) != next(iter(sizes)):
        raise ValueError(
            f"first_mask has shape {tuple(mask.shape)} but the frames are {next(iter(sizes))} (height, width); give "
            "the mask at the frames' size."
        )
    size = size if size is not None else SHORT_SIDE_TOKENS * model.config.output_stride
    model.eval()
    features = (extract_frame_features(model, processor, frame, size) for frame in frames)
    return propagate_labels(features, mask, num_frames=len(frames), progress=progress, **propagation)
