"""Dense correspondences between two images from patch features (of a DINOv3 backbone, arXiv 2508.10104, or any
model with the same interface): mutual nearest neighbours by cosine similarity, Lowe's ratio test (Lowe, IJCV 2004),
and an optional sub-patch refinement on upsampled features.

Coordinates. On a patch grid of (h, w) tokens a point is (x, y) in grid units with the grid spanning [0, w] x [0, h]:
patch (row r, column c) covers [c, c + 1) x [r, r + 1) and sits at its centre (c + 0.5, r + 0.5). In an image of
W x H pixels a point is (x, y) in pixels with pixel centres at integers, as in OpenCV and `skimage.transform`; the
grid point (u, v) of an image resized to the grid without cropping is pixel (u W / w - 0.5, v H / h - 0.5).

The results have the keys of transformers' `post_process_keypoint_matching` (`keypoints0`, `keypoints1`,
`matching_scores`), with float coordinates where transformers rounds them to int32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from transformers.utils import ModelOutput

from ..viz import _colormap, rgb_image
from .upsample import upsample_features

REFINEMENTS = ("argmax", "soft-argmax")
Refinement = Literal["argmax", "soft-argmax"]


class Matches(TypedDict):
    """Matches between image (or grid) A and B, one row per match.

    keypoints0, keypoints1: (N, 2) float32 (x, y) in A and in B.
    matching_scores: (N,) float32 cosine similarity of the matched patch features.
    """

    keypoints0: torch.Tensor
    keypoints1: torch.Tensor
    matching_scores: torch.Tensor


def match_features(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    *,
    mutual: bool = True,
    ratio: float | None = None,
    refine: Refinement | None = None,
    refine_factor: int = 4,
    fine_feats_b: torch.Tensor | None = None,
    window: int = 1,
    temperature: float = 0.05,
    chunk_size: int = 4096,
) -> Matches:
    """Match the patches of grid A to those of grid B by cosine similarity s(i, j) = <a_i, b_j> / (|a_i| |b_j|).

    feats_a, feats_b: (h_a, w_a, D) and (h_b, w_b, D) patch features.
    Each patch i of A goes to its nearest neighbour j = argmax_j s(i, j) in B. It is kept
      - if mutual: only when i is also the nearest neighbour of j in A (mutual nearest neighbours);
      - if ratio: only when d1 < ratio * d2, with d1, d2 the distances of the best and second-best patch of B, and
        d = sqrt(2 - 2 s) the Euclidean distance of the unit features (the test passes when B has a single patch).
    Keypoints are in grid units (see the module docstring), ordered by A's patch index (row-major).

    refine: move each keypoint of B off its patch centre, inside a window of (2 window + 1)^2 patches around it, to
    the fine cell whose feature is most similar to A's patch feature ("argmax": that cell's centre; "soft-argmax":
    the softmax(s / temperature)-weighted mean of the cell centres in the window). The fine features are
    `fine_feats_b` (H_f, W_f, D) with H_f = f h_b, W_f = f w_b for an integer f (e.g. from `upsample_features`), else
    B's features bilinearly upsampled by f = refine_factor; fine cell (i, j) sits at ((j + 0.5) / f, (i + 0.5) / f).
    The scores stay the coarse patch similarities.
    chunk_size: rows of A per similarity block, which bounds memory to chunk_size x h_b w_b similarities.
    """
    _check_grid(feats_a, "feats_a")
    _check_grid(feats_b, "feats_b")
    if feats_a.shape[-1] != feats_b.shape[-1]:
        raise ValueError(
            f"feats_a and feats_b must have the same feature dimension, got {feats_a.shape[-1]} and "
            f"{feats_b.shape[-1]}; extract both with the same model."
        )
    if ratio is not None and not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio is Lowe's best / second-best distance threshold in (0, 1], got {ratio}; e.g. 0.9.")
    if refine is not None and refine not in REFINEMENTS:
        raise ValueError(f"refine must be None or one of {', '.join(REFINEMENTS)}, got {refine!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    (h_a, w_a), (h_b, w_b) = feats_a.shape[:2], feats_b.shape[:2]
    a = F.normalize(feats_a.reshape(h_a * w_a, -1).float(), dim=-1)
    b = F.normalize(feats_b.reshape(h_b * w_b, -1).float(), dim=-1)
    best, best_sim, second_sim, back = _nearest_neighbours(a, b, chunk_size)

    keep = torch.ones_like(best, dtype=torch.bool)
    if mutual:
        keep &= back[best] == torch.arange(len(best), device=best.device)
    if ratio is not None:
        distance = torch.sqrt((2.0 - 2.0 * torch.stack([best_sim, second_sim])).clamp_min(0.0))
        keep &= distance[0] < ratio * distance[1]
    index_a = torch.nonzero(keep)[:, 0]
    index_b = best[index_a]
    keypoints1 = _patch_centres(index_b, w_b)
    if refine is not None:
        fine = _fine_features(feats_b, fine_feats_b, refine_factor)
        keypoints1 = _refine(a[index_a], fine, index_b, (h_b, w_b), refine, window, temperature)
    return Matches(
        keypoints0=_patch_centres(index_a, w_a),
        keypoints1=keypoints1,
        matching_scores=best_sim[index_a],
    )


def _check_grid(feats: torch.Tensor, name: str) -> None:
    if feats.ndim != 3 or min(feats.shape) < 1:
        raise ValueError(
            f"{name} must be a non-empty (h, w, D) grid of patch features, got shape {tuple(feats.shape)}; reshape "
            "a model's patch_tokens (1, h * w, D) with .reshape(h, w, D)."
        )


def _nearest_neighbours(
    a: torch.Tensor, b: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For unit rows a (N_a, D), b (N_b, D): each a_i's nearest b (index, similarity), the second-best similarity
    (-1, i.e. distance 2, when N_b = 1) and each b_j's nearest a (index), in blocks of `chunk_size` rows of a."""
    best, best_sim, second_sim = [], [], []
    back_sim = torch.full((len(b),), -torch.inf, device=b.device)
    back = torch.zeros(len(b), dtype=torch.long, device=b.device)
    for start in range(0, len(a), chunk_size):
        sim = a[start : start + chunk_size] @ b.T
        top = sim.topk(min(2, len(b)), dim=1)
        best.append(top.indices[:, 0])
        best_sim.append(top.values[:, 0])
        second_sim.append(top.values[:, 1] if len(b) > 1 else torch.full_like(top.values[:, 0], -1.0))
        column_sim, column_arg = sim.max(dim=0)
        better = column_sim > back_sim  # ties keep the earlier row of A
        back_sim = torch.where(better, column_sim, back_sim)
        back = torch.where(better, column_arg + start, back)
    return torch.cat(best), torch.cat(best_sim), torch.cat(second_sim), back


def _patch_centres(index: torch.Tensor, width: int) -> torch.Tensor:
    """Grid points (c + 0.5, r + 0.5) of the row-major patch indices r * width + c."""
    return torch.stack([index % width, index // width], dim=-1).float() + 0.5


def _fine_features(feats_b: torch.Tensor, fine_feats_b: torch.Tensor | None, factor: int) -> tuple[torch.Tensor, int]:
    """(unit fine features (H_f, W_f, D), integer factor f = H_f / h_b = W_f / w_b)."""
    h, w = feats_b.shape[:2]
    if fine_feats_b is None:
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"refine_factor must be a positive int (the upsampling factor), got {factor!r}.")
        fine_feats_b = upsample_features(feats_b.float(), size=(factor * h, factor * w), method="bilinear")
    else:
        _check_grid(fine_feats_b, "fine_feats_b")
        factor = fine_feats_b.shape[0] // h
        if factor < 1 or fine_feats_b.shape[:2] != (factor * h, factor * w):
            raise ValueError(
                f"fine_feats_b must be (f * {h}, f * {w}, D) for an integer f, B's ({h}, {w}) grid upsampled; got "
                f"{tuple(fine_feats_b.shape)}."
            )
        if fine_feats_b.shape[-1] != feats_b.shape[-1]:
            raise ValueError(
                f"fine_feats_b has {fine_feats_b.shape[-1]} channels, feats_b {feats_b.shape[-1]}; they must be B's "
                "features at two resolutions."
            )
    return F.normalize(fine_feats_b.float(), dim=-1), factor


def _refine(
    queries: torch.Tensor,
    fine: tuple[torch.Tensor, int],
    index_b: torch.Tensor,
    grid_b: tuple[int, int],
    mode: Refinement,
    window: int,
    temperature: float,
    chunk: int = 256,
) -> torch.Tensor:
    """Refined grid points in B of the unit `queries` (N, D) matched to B's patches `index_b` (see match_features)."""
    if not isinstance(window, int) or window < 0:
        raise ValueError(f"window is a radius in patches and must be an int >= 0, got {window!r}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    features, factor = fine
    height, width = features.shape[:2]
    side = (2 * window + 1) * factor
    offsets = torch.arange(side, device=features.device) - window * factor
    points = []
    for start in range(0, len(queries), chunk):
        rows = (index_b[start : start + chunk] // grid_b[1])[:, None] * factor + offsets  # (n, side)
        cols = (index_b[start : start + chunk] % grid_b[1])[:, None] * factor + offsets
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        cells = features[rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]
        sim = torch.einsum("nijd,nd->nij", cells, queries[start : start + chunk]).masked_fill(~inside, -torch.inf)
        centres_y = (rows.float() + 0.5) / factor
        centres_x = (cols.float() + 0.5) / factor
        flat = sim.flatten(1)
        if mode == "argmax":
            best = flat.argmax(dim=1)
            n = torch.arange(len(best), device=best.device)
            points.append(torch.stack([centres_x[n, best % side], centres_y[n, best // side]], dim=-1))
        else:
            weights = torch.softmax(flat / temperature, dim=1).unflatten(1, (side, side))
            x = (weights.sum(dim=1) * centres_x).sum(dim=1)
            y = (weights.sum(dim=2) * centres_y).sum(dim=1)
            points.append(torch.stack([x, y], dim=-1))
    return torch.cat(points) if points else queries.new_zeros(0, 2)


def grid_to_pixels(points: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Grid points (x, y) of an (h, w) grid -> pixel (x W / w - 0.5, y H / h - 0.5) of the (H, W) image that was resized
    (without cropping) to that grid."""
    scale = points.new_tensor([image_size[1] / grid[1], image_size[0] / grid[0]])
    return points * scale - 0.5


def pixels_to_grid(points: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """The inverse of `grid_to_pixels`."""
    scale = points.new_tensor([grid[1] / image_size[1], grid[0] / image_size[0]])
    return (points + 0.5) * scale


# -- from images -------------------------------------------------------------------------------------------------------


@dataclass
class _StrideConfig:
    output_stride: int


@dataclass
class PixelPatchOutput(ModelOutput):
    """patch_tokens: (B, h * w, 3 p^2), row-major over the (H / p, W / p) grid."""

    patch_tokens: torch.Tensor | None = None


class RawPixelPatches(nn.Module):
    """The raw-pixel baseline with a backbone's interface (`config.output_stride`, `patch_tokens`): the descriptor
    of each p x p patch is its processed (normalised) pixels, 3 p^2 values channel-major, minus their mean when
    `subtract_mean` (then the cosine similarity of two patches is their normalised cross-correlation), scaled to unit
    L2 norm."""

    def __init__(self, patch_size: int, subtract_mean: bool = True):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
        self.config = _StrideConfig(output_stride=patch_size)
        self.subtract_mean = subtract_mean

    def forward(self, pixel_values: torch.Tensor) -> PixelPatchOutput:
        p = self.config.output_stride
        patches = F.unfold(pixel_values.float(), kernel_size=p, stride=p).transpose(1, 2)  # (B, h * w, 3 p^2)
        if self.subtract_mean:
            patches = patches - patches.mean(dim=-1, keepdim=True)
        return PixelPatchOutput(patch_tokens=F.normalize(patches, dim=-1))


def patch_feature_grid(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """(h, w, D) float32 patch features of the first image: `model(pixel_values=...).patch_tokens` reshaped to the
    (H / stride, W / stride) grid of the (1, 3, H, W) input, stride = `model.config.output_stride`."""
    stride = model.config.output_stride
    height, width = pixel_values.shape[-2] // stride, pixel_values.shape[-1] // stride
    parameter = next(model.parameters(), None)
    if parameter is not None:
        pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
    tokens = model(pixel_values=pixel_values).patch_tokens
    if tokens is None or tokens.shape[1] != height * width:
        raise ValueError(
            f"{type(model).__name__} must return patch_tokens (B, {height * width}, D) for a "
            f"{tuple(pixel_values.shape[-2:])} input (a {height}x{width} grid at stride {stride}); pass a DINOv3 "
            "backbone (Dinov3HfViTModel, Dinov3HfConvNextModel) or RawPixelPatches."
        )
    return tokens[0].reshape(height, width, -1).float().cpu()


@torch.no_grad()
def match_images(
    model: nn.Module,
    processor: Any,
    image_a: Image.Image | np.ndarray | torch.Tensor,
    image_b: Image.Image | np.ndarray | torch.Tensor,
    *,
    size: int | None = None,
    mutual: bool = True,
    ratio: float | None = None,
    refine: Refinement | None = None,
    refine_factor: int = 4,
    upsample: str = "bilinear",
    window: int = 1,
    temperature: float = 0.05,
) -> Matches:
    """Matches between two images: each is preprocessed by `processor` (shorter side resized to `size` pixels and
    snapped to the stride when `size` is given, else the processor's own size; never cropped), `model` gives its
    patch-feature grid (`patch_feature_grid`), `match_features` matches the grids, and the keypoints are mapped to
    pixels (x, y) of each original image (pixel centres at integers): patch (r, c) of an (h, w) grid on a W x H image
    is at ((c + 0.5) W / w - 0.5, (r + 0.5) H / h - 0.5). Run `model.eval()` first.

    image_a, image_b: PIL images, (H, W[, C]) arrays or (C, H, W) tensors, as the processor takes them.
    model: a backbone with `config.output_stride` returning `patch_tokens`, or `RawPixelPatches` (the baseline).
    upsample: how `refine` upsamples B's features by `refine_factor`: a method of `upsample_features` ("bilinear", or
    "bilateral", guided by image B).
    Other arguments: as `match_features`.
    """
    kwargs: dict[str, Any] = {"do_center_crop": False, "return_tensors": "pt"}
    if size is not None:
        kwargs["size"] = {"shortest_edge": size}
    grids, sizes = [], []
    for image in (image_a, image_b):
        grids.append(patch_feature_grid(model, processor(image, **kwargs)["pixel_values"]))
        sizes.append(_image_size(image))
    fine_feats_b = None
    if refine is not None and upsample != "bilinear":
        fine_size = (refine_factor * grids[1].shape[0], refine_factor * grids[1].shape[1])
        fine_feats_b = upsample_features(grids[1], image=image_b, size=fine_size, method=upsample)
    matches = match_features(
        *grids,
        mutual=mutual,
        ratio=ratio,
        refine=refine,
        refine_factor=refine_factor,
        fine_feats_b=fine_feats_b,
        window=window,
        temperature=temperature,
    )
    return Matches(
        keypoints0=grid_to_pixels(matches["keypoints0"], grids[0].shape[:2], sizes[0]),
        keypoints1=grid_to_pixels(matches["keypoints1"], grids[1].shape[:2], sizes[1]),
        matching_scores=matches["matching_scores"],
    )


def _image_size(image: Image.Image | np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(H, W) of a PIL image, an (H, W[, C]) array or a (C, H, W) tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, torch.Tensor):
        return tuple(image.shape[-2:])
    return tuple(np.shape(image)[:2])


def top_matches(matches: Matches, max_matches: int | None) -> Matches:
    """The `max_matches` highest-scoring matches (all when None), in order of decreasing score."""
    order = torch.argsort(matches["matching_scores"], descending=True, stable=True)[:max_matches]
    return Matches(**{key: value[order] for key, value in matches.items()})


def draw_matches(
    image_a: Image.Image, image_b: Image.Image, matches: Matches, cmap: str = "turbo", line_width: int = 1
) -> Image.Image:
    """A and B side by side (B to the right of A, tops aligned, black below the shorter one) with one line per
    match between the pixels nearest to keypoints0 and to keypoints1 (x shifted by A's width), coloured by `cmap` at
    the match's score min-max scaled over the matches drawn (the colour of 1 when all scores are equal), and a dot of
    radius `line_width` at each end. Lines are drawn in order of increasing score, so the best lie on top."""
    image_a, image_b = rgb_image(image_a), rgb_image(image_b)
    canvas = Image.new("RGB", (image_a.width + image_b.width, max(image_a.height, image_b.height)))
    canvas.paste(image_a, (0, 0))
    canvas.paste(image_b, (image_a.width, 0))
    scores = matches["matching_scores"].double().numpy()
    spread = scores.max() - scores.min() if len(scores) else 0.0
    levels = (scores - scores.min()) / spread if spread > 0 else np.ones_like(scores)
    colours = (_colormap(levels, cmap) * 255).round().astype(np.uint8)
    draw = ImageDraw.Draw(canvas)
    shift = np.array([image_a.width, 0.0])
    # (N, 2 ends, 2) nearest pixels, halves rounded up
    ends = np.stack([matches["keypoints0"].double().numpy(), matches["keypoints1"].double().numpy() + shift], axis=1)
    ends = np.floor(ends + 0.5)
    for i in np.argsort(scores, kind="stable"):
        (x0, y0), (x1, y1) = ends[i].astype(int).tolist()
        colour = tuple(int(v) for v in colours[i])
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=line_width)
        for x, y in ((x0, y0), (x1, y1)):
            draw.ellipse([x - line_width, y - line_width, x + line_width, y + line_width], fill=colour)
    return canvas
