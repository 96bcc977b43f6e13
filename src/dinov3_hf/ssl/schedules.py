"""Hyper-parameter schedules as pure functions of the optimizer step `it` (official_dinov3.md §6.6, §6.7).

Learning rate, weight decay, teacher temperature, EMA momentum and loss weights are all built from four shapes:

- `constant`: `value` at every step.
- `warmup_constant`: linear `start -> peak` over `warmup_iters` (endpoint excluded), then `peak` (DINOv3 7B lr).
- `warmup_cosine`: the same warmup, then half-cosine `peak -> end` until `total_iters`, then `end`.
- `half_cosine_ramp`: `start` until `start_iter`, half-cosine `start -> end` over `ramp_iters`, then `end`.

`make_schedule({"kind": "warmup_cosine", "warmup_iters": 10, ...})` turns a config dict into a callable `it -> value`.
Examples: teacher temperature `{"kind": "warmup_constant", "warmup_iters": N, "start": 0.04, "peak": 0.07}`;
EMA momentum `{"kind": "warmup_cosine", "warmup_iters": 0, "total_iters": T, "start": m, "peak": m, "end": 1.0}`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _check_iters(**iters: int) -> None:
    for name, value in iters.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")


def _half_cosine(progress: float, start: float, end: float) -> float:
    """`end + (start - end)·(1 + cos(π·progress)) / 2`: `start` at progress 0, `end` at progress 1."""
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def constant(it: int, value: float) -> float:
    """`value` at every step."""
    return value


def warmup_constant(it: int, warmup_iters: int, start: float, peak: float) -> float:
    """`start + (peak - start)·it / warmup_iters` for `it < warmup_iters`, else `peak`."""
    _check_iters(warmup_iters=warmup_iters)
    if it < warmup_iters:
        return start + (peak - start) * it / warmup_iters
    return peak


def warmup_cosine(it: int, warmup_iters: int, total_iters: int, start: float, peak: float, end: float) -> float:
    """Linear warmup as `warmup_constant`, then `end + (peak - end)·(1 + cos(π·(it - W) / (T - W))) / 2` for
    `W <= it < T` (W = warmup_iters, T = total_iters), then `end`."""
    _check_iters(warmup_iters=warmup_iters, total_iters=total_iters)
    if total_iters < warmup_iters:
        raise ValueError(f"total_iters ({total_iters}) must be >= warmup_iters ({warmup_iters}).")
    if it < warmup_iters:
        return start + (peak - start) * it / warmup_iters
    if it < total_iters:
        return _half_cosine((it - warmup_iters) / (total_iters - warmup_iters), peak, end)
    return end


def half_cosine_ramp(it: int, start_iter: int, ramp_iters: int, start: float, end: float) -> float:
    """`start` for `it < start_iter`, `end + (start - end)·(1 + cos(π·(it - start_iter) / ramp_iters)) / 2` for
    `start_iter <= it < start_iter + ramp_iters`, then `end`."""
    _check_iters(start_iter=start_iter, ramp_iters=ramp_iters)
    if it < start_iter:
        return start
    if it < start_iter + ramp_iters:
        return _half_cosine((it - start_iter) / ramp_iters, start, end)
    return end


SCHEDULE_KINDS: dict[str, Callable[..., float]] = {
    "constant": constant,
    "warmup_constant": warmup_constant,
    "warmup_cosine": warmup_cosine,
    "half_cosine_ramp": half_cosine_ramp,
}


@dataclass(frozen=True)
class Schedule:
    """A schedule kind with its parameters; `schedule(it)` = `SCHEDULE_KINDS[kind](it, **params)`."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"Unknown schedule kind {self.kind!r}. Known kinds: {', '.join(SCHEDULE_KINDS)}.")
        expected = [name for name in inspect.signature(SCHEDULE_KINDS[self.kind]).parameters if name != "it"]
        missing = [name for name in expected if name not in self.params]
        unknown = sorted(set(self.params) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"Schedule {self.kind!r} takes exactly {', '.join(expected)}; "
                f"missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}."
            )
        self(0)  # validates the values (negative lengths, total_iters < warmup_iters)

    def __call__(self, it: int) -> float:
        return float(SCHEDULE_KINDS[self.kind](it, **self.params))


def make_schedule(cfg: dict[str, Any]) -> Schedule:
    """Build a `Schedule` from `{"kind": ..., **params}`; raises ValueError for an unknown kind or wrong fields."""
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise ValueError(
            f"A schedule config must be a dict with a 'kind' key (one of {', '.join(SCHEDULE_KINDS)}), got {cfg!r}."
        )
    params = {key: value for key, value in cfg.items() if key != "kind"}
    return Schedule(cfg["kind"], params)
