"""Tiled (sliding-window) inference for images whose full-image attention does not fit in memory.

The scheme of Meta's sliding-window segmentation inference (`dinov3/eval/segmentation/inference.py`,
`slide_inference`): square windows of `tile` pixels every `tile - overlap` pixels, the last row and column of
windows flush with the bottom and right borders; each output location is the sum of the window outputs that cover it
divided by their count. Here windows also snap to the model's patch grid (`tile` and `overlap` are multiples of
`config.output_stride`), so that patch features are averaged token by token with no resampling.

Memory is bounded by one batch of windows plus the output: nothing image-sized is allocated beyond the stitched
output and a (h, w) count matrix at the output's resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

from ..common import window_starts

Box = tuple[int, int, int, int]  # (top, left, height, width) in input pixels


def default_overlap(tile: int, stride: int) -> int:
    """The default overlap: a quarter of the tile, rounded down to a multiple of `stride`."""
    return tile // 4 // stride * stride


def check_tiling(tile: int, overlap: int, stride: int) -> None:
    """Raise a ValueError unless 0 <= overlap < tile and both are multiples of `stride` (the model's output stride)."""
    if tile < stride or tile % stride:
        raise ValueError(
            f"tile must be a positive multiple of the model's output stride {stride}, got {tile}; e.g. "
            f"{max(stride, tile // stride * stride)}."
        )
    if overlap < 0 or overlap % stride:
        raise ValueError(
            f"overlap must be a multiple of the model's output stride {stride} (0 for none), got {overlap}; e.g. "
            f"{max(0, overlap) // stride * stride}."
        )
    if overlap >= tile:
        raise ValueError(
            f"overlap must be smaller than tile (windows advance by tile - overlap pixels), got overlap {overlap} "
            f">= tile {tile}; e.g. overlap {default_overlap(tile, stride)}."
        )


def tile_boxes(height: int, width: int, tile: int, overlap: int, stride: int) -> list[Box]:
    """The windows (top, left, height, width), row by row, that cover a (height, width) input: sides of
    min(tile, height) x min(tile, width) pixels every tile - overlap pixels (see `common.window_starts`)."""
    check_tiling(tile, overlap, stride)
    if height % stride or width % stride:
        raise ValueError(
            f"The input is {height}x{width} pixels, not a multiple of the model's output stride {stride} on both "
            "sides; resize it with the image processor, which snaps sizes to the stride."
        )
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [
        (top, left, tile_h, tile_w)
        for top in window_starts(height, tile_h, tile - overlap)
        for left in window_starts(width, tile_w, tile - overlap)
    ]


# (B', 3, tile_h, tile_w) windows -> ((B', tile_h / scale, tile_w / scale, C) dense output, (B', K, D) or None)
WindowFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@torch.no_grad()
def _slide(
    pixel_values: torch.Tensor,
    boxes: list[Box],
    scale: int,
    predict: WindowFn,
    batch_size: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H / scale, W / scale, C) = sum over windows of predict's dense output / number of windows covering each
    location, in float32; and the mean over all windows of predict's per-window tokens (None if it returns none)."""
    if batch_size < 1:
        raise ValueError(f"batch_size is the number of windows per forward and must be >= 1, got {batch_size}.")
    batch, _, height, width = pixel_values.shape
    total, tokens = None, None
    count = pixel_values.new_zeros(height // scale, width // scale, 1, dtype=torch.float32)
    with tqdm(total=len(boxes), desc="tiles", unit="tile", disable=not progress, leave=False) as bar:
        for first in range(0, len(boxes), batch_size):
            chunk = boxes[first : first + batch_size]
            windows = torch.cat([pixel_values[..., t : t + h, l : l + w] for t, l, h, w in chunk])
            dense, window_tokens = predict(windows)
            dense = dense.float().unflatten(0, (len(chunk), batch))
            if total is None:
                total = dense.new_zeros(batch, height // scale, width // scale, dense.shape[-1])
            for (t, l, h, w), out in zip(chunk, dense):
                rows, cols = slice(t // scale, (t + h) // scale), slice(l // scale, (l + w) // scale)
                total[:, rows, cols] += out
                count[rows, cols] += 1
            if window_tokens is not None:
                summed = window_tokens.float().unflatten(0, (len(chunk), batch)).sum(0)
                tokens = summed if tokens is None else tokens + summed
            bar.update(len(chunk))
    return total.div_(count), None if tokens is None else tokens / len(boxes)


def _model_windows(
    model: nn.Module, pixel_values: torch.Tensor, tile: int, overlap: int | None
) -> tuple[int, list[Box]]:
    """(the model's output stride, the windows over `pixel_values`); overlap None: `default_overlap`."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}.")
    stride = model.config.output_stride
    overlap = default_overlap(tile, stride) if overlap is None else overlap
    return stride, tile_boxes(*pixel_values.shape[-2:], tile, overlap, stride)


@dataclass
class TiledFeatures:
    """Tiled backbone features, with the field names of the backbone's own output.

    patch_tokens: (B, h * w, D) float32, row-major over the (h, w) = (H / stride, W / stride) grid: per token, the
        mean of that token's features over the windows that contain it.
    pooler_output: (B, D), the mean over all windows of each window's CLS token (ConvNeXt: its pooled token). It is
        not the full image's CLS token, which attends to every patch at once; with a single window it is exactly that.
    register_tokens: (B, R, D), the mean over windows of the register tokens; None when the model returns none
        (ConvNeXt).
    grid: (h, w).
    boxes: the windows, (top, left, height, width) in input pixels.
    """

    patch_tokens: torch.Tensor
    pooler_output: torch.Tensor
    register_tokens: torch.Tensor | None
    grid: tuple[int, int]
    boxes: list[Box]

    def feature_map(self) -> torch.Tensor:
        """The patch features as a (B, D, h, w) map (a view)."""
        return self.patch_tokens.unflatten(1, self.grid).permute(0, 3, 1, 2)


def tiled_patch_features(
    model: nn.Module,
    pixel_values: torch.Tensor,
    tile: int,
    overlap: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> TiledFeatures:
    """Patch features of a ViT or ConvNeXt backbone (`Dinov3HfViTModel`, `Dinov3HfConvNextModel`) on a large input,
    computed on windows of `tile` x `tile` pixels and averaged token by token where windows overlap.

    pixel_values: (B, 3, H, W), H and W multiples of `model.config.output_stride` (the image processor's output).
    tile, overlap: window side and overlap of neighbouring windows in pixels, multiples of the stride, overlap < tile;
        overlap None: `default_overlap` (a quarter of the tile). A tile >= H and W gives one window, i.e. exactly the
        full forward's features.
    batch_size: windows per forward pass (times B images). progress: a tqdm bar over the windows.
    Runs under torch.no_grad and leaves the model's train / eval mode as it is (call `model.eval()` first).
    """
    stride, boxes = _model_windows(model, pixel_values, tile, overlap)
    height, width = pixel_values.shape[-2:]
    tile_grid = boxes[0][2] // stride, boxes[0][3] // stride
    has_registers = False

    def predict(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal has_registers
        output = model(pixel_values=windows)
        patches = output.patch_tokens
        if patches.shape[1] != tile_grid[0] * tile_grid[1]:
            raise ValueError(
                f"{type(model).__name__} returned {patches.shape[1]} patch tokens for a {tuple(windows.shape[-2:])} "
                f"window, not the {tile_grid[0]}x{tile_grid[1]} grid of its output stride {stride}."
            )
        registers = getattr(output, "register_tokens", None)
        has_registers = registers is not None
        prefix = [output.pooler_output[:, None], *([] if registers is None else [registers])]
        return patches.unflatten(1, tile_grid), torch.cat(prefix, dim=1)

    grid, prefix = _slide(pixel_values, boxes, stride, predict, batch_size, progress)
    return TiledFeatures(
        patch_tokens=grid.flatten(1, 2),
        pooler_output=prefix[:, 0],
        register_tokens=prefix[:, 1:] if has_registers else None,
        grid=(height // stride, width // stride),
        boxes=boxes,
    )


def tiled_predict(
    model: nn.Module,
    pixel_values: torch.Tensor,
    tile: int,
    overlap: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> SemanticSegmenterOutput | DepthEstimatorOutput:
    """A dense task model (`Dinov3HfForSemanticSegmentation`, `Dinov3HfForDepthEstimation`) run on windows and
    averaged at pixel level, as Meta's `slide_inference`: each window's `logits` are resized bilinearly to the
    window's pixels (`predicted_depth` already is at that size), summed into an input-sized map and divided by the
    count of windows per pixel. Logits are averaged before any softmax or argmax, as there.

    Returns the model's output type with `logits` (B, C, H, W) or `predicted_depth` (B, H, W) at the input size, in
    float32, for the image processor's `post_process_semantic_segmentation` / `post_process_depth_estimation`.
    Arguments as `tiled_patch_features`.
    """
    boxes = _model_windows(model, pixel_values, tile, overlap)[1]
    field = None

    def predict(windows: torch.Tensor) -> tuple[torch.Tensor, None]:
        nonlocal field
        output = model(pixel_values=windows)
        if getattr(output, "logits", None) is not None:
            field, dense = "logits", output.logits
        elif getattr(output, "predicted_depth", None) is not None:
            field, dense = "predicted_depth", output.predicted_depth[:, None]
        else:
            raise ValueError(
                f"{type(model).__name__} returned {type(output).__name__} without `logits` or `predicted_depth`; "
                "tiled_predict takes a segmentation or depth model (tiled_patch_features takes a backbone)."
            )
        if dense.shape[-2:] != windows.shape[-2:]:
            dense = F.interpolate(dense, size=windows.shape[-2:], mode="bilinear", align_corners=False)
        return dense.permute(0, 2, 3, 1), None

    stitched = _slide(pixel_values, boxes, 1, predict, batch_size, progress)[0].permute(0, 3, 1, 2)
    if field == "logits":
        return SemanticSegmenterOutput(logits=stitched)
    return DepthEstimatorOutput(predicted_depth=stitched[:, 0])
