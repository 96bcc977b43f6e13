"""The bottom layer: facts and rules shared by `models/` and `processing/`. It imports nothing from dinov3_hf."""

from __future__ import annotations

import math

# Input normalisation (mean, std) per pretraining dataset: web images (LVD-1689M) and satellite images (SAT-493M).
NORMALIZATION = {
    "lvd1689m": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "sat493m": ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143)),
}
PRETRAINING_DATA = tuple(NORMALIZATION)


def snap_to_multiple(length: float, divisor: int) -> int:
    """`length` rounded to the nearest multiple of `divisor` (halves round up), and at least `divisor`."""
    return max(divisor, int(math.floor(length / divisor + 0.5)) * divisor)


def window_starts(length: int, window: int, step: int) -> list[int]:
    """Starts of sliding windows along one side of `length`: 0, step, 2 step, ... below length - window, then
    length - window (the last window flush with the border); [0] when one window covers the side. The window grid
    of Meta's sliding-window inference (`dinov3/eval/segmentation/inference.py`)."""
    if length <= window:
        return [0]
    return [*range(0, length - window, step), length - window]
