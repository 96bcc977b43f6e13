"""Block-wise (BEiT-style) patch masks for iBOT (arXiv 2508.10104 §3; official `dinov3/data/masking.py`,
`dinov3/data/collate.py`).

``MaskingGenerator`` masks exactly n patches of an h × w grid: it repeatedly drops a random
rectangle (area ~ U(min_num_patches, max per block), aspect ratio log-uniform in
[min_aspect, max_aspect], up to 10 tries per block, only newly masked patches counted, never
more than still needed), then tops up with random unmasked patches if blocks stop fitting.
The largest block is ``max_block_patches(crop_size, patch_size)``, the official train loop's
formula. ``sample_masks`` builds a batch: image i < n = ``int(n_images · mask_probability)`` gets
``masked_patch_counts(...)[i]`` patches (the official collate's float32 ratio spread); the
others get none; the rows are shuffled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_ATTEMPTS_PER_BLOCK = 10


class MaskingGenerator:
    """Callable giving a bool mask [h, w] with exactly the requested number of True patches."""

    def __init__(
        self,
        grid_size: tuple[int, int],
        max_num_patches: float,
        min_num_patches: int = 4,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        height, width = grid_size
        if height < 1 or width < 1:
            raise ValueError(f"grid_size must be positive, got {grid_size}")
        if min_aspect <= 0 or (max_aspect is not None and max_aspect < min_aspect):
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}")
        self.height, self.width = height, width
        self.num_patches = height * width
        self.max_num_patches = max_num_patches
        self.min_num_patches = min_num_patches
        max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
        self.log_aspect_range = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: Tensor, max_new: int, generator: torch.Generator | None) -> int:
        """Mask a random rectangle adding 1 to min(max_new, max_num_patches) patches; returns how many (0: none fit)."""
        low, high = self.min_num_patches, min(self.max_num_patches, max_new)  # high < low is allowed: U(high, low)
        for _ in range(_ATTEMPTS_PER_BLOCK):
            u_area, u_aspect, u_top, u_left = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
            area = low + (high - low) * u_area
            log_low, log_high = self.log_aspect_range
            aspect = math.exp(log_low + (log_high - log_low) * u_aspect)
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < self.height and 0 < w < self.width):
                continue
            top = int(u_top * (self.height - h + 1))
            left = int(u_left * (self.width - w + 1))
            block = mask[top : top + h, left : left + w]
            new = h * w - int(block.sum())
            if 0 < new <= high:
                block.fill_(True)
                return new
        return 0

    def __call__(self, num_masking_patches: int, generator: torch.Generator | None = None) -> Tensor:
        if not 0 <= num_masking_patches <= self.num_patches:
            raise ValueError(f"num_masking_patches must be in [0, {self.num_patches}], got {num_masking_patches}")
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < num_masking_patches:
            added = self._add_block(mask, num_masking_patches - count, generator)
            if added == 0:
                break
            count += added
        if count < num_masking_patches:
            flat = mask.view(-1)
            unmasked = (~flat).nonzero().squeeze(1)
            pick = torch.randperm(unmasked.numel(), generator=generator)[: num_masking_patches - count]
            flat[unmasked[pick]] = True
        return mask


def max_block_patches(crop_size: int, patch_size: int) -> float:
    """Largest block area of the official train loop, ``0.5 * crop_size // patch_size * crop_size // patch_size``
    with Python's left-to-right precedence: ``((0.5·S // p)·S) // p`` = ⌊g/2⌋·g for a crop of g patches
    (S = g·p), not 0.5·g² when g is odd."""
    return 0.5 * crop_size // patch_size * crop_size // patch_size


def masked_patch_counts(
    n_images: int, num_patches: int, mask_probability: float = 0.5, ratio_range: tuple[float, float] = (0.1, 0.5)
) -> list[int]:
    """Masked patches of the first n = int(n_images · mask_probability) images, as the official collate computes
    them: ``int(num_patches · p[i + 1])`` with ``p = torch.linspace(*ratio_range, n + 1)`` in float32 (and the
    product in float32)."""
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(f"mask_probability must be in [0, 1], got {mask_probability}")
    if not 0.0 <= ratio_range[0] <= ratio_range[1] <= 1.0:
        raise ValueError(f"ratio_range must satisfy 0 <= min <= max <= 1, got {ratio_range}")
    n_masked = int(n_images * mask_probability)
    ratios = torch.linspace(ratio_range[0], ratio_range[1], n_masked + 1, dtype=torch.float32)
    return [int(num_patches * ratios[i + 1]) for i in range(n_masked)]


def sample_masks(
    n_images: int,
    grid_size: tuple[int, int],
    mask_probability: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
    max_num_patches: float | None = None,
) -> Tensor:
    """Bool masks [n_images, h·w] for a batch of global crops: image i gets ``masked_patch_counts(...)[i]`` patches
    (none past the first int(n_images · mask_probability)), then the rows are shuffled with ``generator``.

    ``max_num_patches``: largest block area, ``max_block_patches(crop_size, patch_size)`` of the crops; None: the
    value of that formula for any square crop of h × h patches (``max_block_patches(h, 1)``).
    """
    height, width = grid_size
    if max_num_patches is None:
        if height != width:
            raise ValueError(
                f"grid_size {grid_size} is not square: pass max_num_patches=max_block_patches(crop_size, patch_size)."
            )
        max_num_patches = max_block_patches(height, 1)
    num_patches = height * width
    counts = masked_patch_counts(n_images, num_patches, mask_probability, ratio_range)
    masking = MaskingGenerator(grid_size, max_num_patches=max_num_patches)
    masks = torch.zeros(n_images, num_patches, dtype=torch.bool)
    for i, count in enumerate(counts):
        masks[i] = masking(count, generator).view(-1)
    return masks[torch.randperm(n_images, generator=generator)]
