"""Hyper-parameter schedules as pure functions of the optimizer step `it` (arXiv 2508.10104 §3, §4; official
`dinov3/train/cosine_lr_scheduler.py` and `build_schedulers` in `dinov3/train/train.py`).

The official code has two builders; each official recipe uses one of them, and so does its config here:

- `linear_warmup_cosine_decay` ("schedules v2", every recipe with a `schedules:` block: the 7B stages, distillation,
  and the DINO local-loss / Gram weights): with W = warmup_iters, C = cosine_iters,
  `start + it·((peak - start) / W)` for `it < W` (a linear warm-up whose last step is one step short of `peak`),
  `(peak - end)·(1 + cos(θ)) / 2 + end` with `θ = (it - W)·π / (C - 1)` for `W <= it < W + C` (`θ = π` at the
  last cosine step, which is exactly `end`; C = 1: `peak`), then `end`. `peak < end` makes it a smooth ramp up.
- `cosine_scheduler` (the legacy `CosineScheduler`, used by recipes without a `schedules:` block: ViT-L ImageNet):
  with W = warmup_iters, T = total_iters, `start + it·((peak - start) / (W - 1))` for `it < W` (`peak` at step W - 1;
  W = 1: `start`), `end + 0.5·(peak - end)·(1 + cos(π·(it - W) / (T - W)))` for `W <= it < T`, then `end`.

Shorthands of `linear_warmup_cosine_decay` (same values):

- `constant`: `value` at every step (start = peak = end).
- `warmup_constant`: `(start, peak, peak, warmup_iters, cosine_iters=0)`: linear warm-up, then `peak`.
- `warmup_cosine`: `(start, peak, end, warmup_iters, cosine_iters=total_iters - warmup_iters)`.
- `half_cosine_ramp`: `(start, start, end, warmup_iters=start_iter, cosine_iters=ramp_iters)`: `start`, then the
  half-cosine to `end` over `ramp_iters` steps, then `end`.

Every value parameter can be a number or an exact arithmetic expression string (`evaluate_number`), e.g. the scaled
learning rate `"1e-3 * (4 * sqrt(2048 / 1024))"`. Iteration counts are integers.
`make_schedule({"kind": "linear_warmup_cosine_decay", "start": 0.0, ...})` turns a config dict into `it -> value`.
"""

from __future__ import annotations

import ast
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_EXPRESSION_HELP = (
    "write a number or an arithmetic expression of numbers with + - * / ** ( ) and sqrt(), "
    "e.g. \"1e-3 * (4 * sqrt(2048 / 1024))\""
)
_BINARY_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.Pow: operator.pow}
_UNARY_OPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPONENT = 1024


def _evaluate_node(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_evaluate_node(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _evaluate_node(node.left), _evaluate_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"exponent {right} is larger than {_MAX_EXPONENT}")
        return _BINARY_OPS[type(node.op)](left, right)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt"
            and len(node.args) == 1 and not node.keywords):
        return math.sqrt(_evaluate_node(node.args[0]))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed")


def evaluate_number(value: Any, key: str = "value") -> int | float:
    """`value` if it is an int or float, else the value of the expression string `value`: numbers, + - * / ** ( )
    and sqrt(), in Python float arithmetic (left to right: "a * (b * c)" and "a * b * c" may differ in the last bit).
    Anything else (names, calls other than sqrt, a non-finite result) raises a ValueError naming `key`."""
    if type(value) in (int, float):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a number or an expression string, got {value!r}; {_EXPRESSION_HELP}.")
    try:
        result = _evaluate_node(ast.parse(value.strip(), mode="eval").body)
        if not math.isfinite(result):
            raise ValueError(f"the result {result} is not finite")
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError) as error:
        raise ValueError(f"{key}: cannot evaluate {value!r} ({error}); {_EXPRESSION_HELP}.") from None
    return result


def _check_iters(**iters: int) -> None:
    for name, value in iters.items():
        if type(value) is not int:
            raise ValueError(f"{name} must be an integer number of steps, got {value!r}.")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")


def linear_warmup_cosine_decay(
    it: int, start: float, peak: float, end: float, warmup_iters: int, cosine_iters: int
) -> float:
    """Official "schedules v2" at step `it` (W = warmup_iters, C = cosine_iters): `start + it·((peak - start) / W)`
    for it < W, `(peak - end)·(1 + cos((it - W)·π / (C - 1))) / 2 + end` for W <= it < W + C (exactly `end` at
    it = W + C - 1; `peak` when C = 1), then `end`."""
    _check_iters(warmup_iters=warmup_iters, cosine_iters=cosine_iters)
    if it < warmup_iters:
        return start + it * ((peak - start) / warmup_iters)
    step = it - warmup_iters
    if step < cosine_iters:
        last = step == cosine_iters - 1 and cosine_iters > 1  # np.linspace(0, π, C) ends exactly at π
        angle = math.pi if last else step * (math.pi / max(cosine_iters - 1, 1))
        return (peak - end) * ((math.cos(angle) + 1) / 2) + end
    return end


def cosine_scheduler(it: int, start: float, peak: float, end: float, warmup_iters: int, total_iters: int) -> float:
    """Official legacy `CosineScheduler` at step `it` (W = warmup_iters, T = total_iters): `start + it·((peak - start)
    / (W - 1))` for it < W (`peak` at it = W - 1, `start` when W = 1), `end + 0.5·(peak - end)·(1 + cos(π·(it - W)
    / (T - W)))` for W <= it < T, then `end`."""
    _check_iters(warmup_iters=warmup_iters, total_iters=total_iters)
    if total_iters < warmup_iters:
        raise ValueError(f"total_iters ({total_iters}) must be >= warmup_iters ({warmup_iters}).")
    if it < warmup_iters:
        if it == warmup_iters - 1:
            return peak if warmup_iters > 1 else start
        return start + it * ((peak - start) / (warmup_iters - 1))
    if it < total_iters:
        return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * (it - warmup_iters) / (total_iters - warmup_iters)))
    return end


def constant(it: int, value: float) -> float:
    """`value` at every step."""
    return value


def warmup_constant(it: int, warmup_iters: int, start: float, peak: float) -> float:
    """`linear_warmup_cosine_decay(it, start, peak, peak, warmup_iters, 0)`: linear warm-up, then `peak`."""
    return linear_warmup_cosine_decay(it, start, peak, peak, warmup_iters, 0)


def warmup_cosine(it: int, warmup_iters: int, total_iters: int, start: float, peak: float, end: float) -> float:
    """`linear_warmup_cosine_decay(it, start, peak, end, warmup_iters, total_iters - warmup_iters)`."""
    _check_iters(warmup_iters=warmup_iters, total_iters=total_iters)
    if total_iters < warmup_iters:
        raise ValueError(f"total_iters ({total_iters}) must be >= warmup_iters ({warmup_iters}).")
    return linear_warmup_cosine_decay(it, start, peak, end, warmup_iters, total_iters - warmup_iters)


def half_cosine_ramp(it: int, start_iter: int, ramp_iters: int, start: float, end: float) -> float:
    """`linear_warmup_cosine_decay(it, start, start, end, start_iter, ramp_iters)`: `start` before `start_iter`, the
    half-cosine `start -> end` over `ramp_iters` steps (exactly `end` at its last), then `end`."""
    return linear_warmup_cosine_decay(it, start, start, end, start_iter, ramp_iters)


SCHEDULE_KINDS: dict[str, Callable[..., float]] = {
    "linear_warmup_cosine_decay": linear_warmup_cosine_decay,
    "cosine_scheduler": cosine_scheduler,
    "constant": constant,
    "warmup_constant": warmup_constant,
    "warmup_cosine": warmup_cosine,
    "half_cosine_ramp": half_cosine_ramp,
}


@dataclass(frozen=True)
class Schedule:
    """A schedule kind with its parameters; `schedule(it)` = `SCHEDULE_KINDS[kind](it, **params)`.

    Expression strings among the params are evaluated once (`evaluate_number`); errors name `name.param`."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    name: str = field(default="schedule", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"{self.name}: unknown schedule kind {self.kind!r}. Known kinds: {', '.join(SCHEDULE_KINDS)}."
            )
        expected = [name for name in inspect.signature(SCHEDULE_KINDS[self.kind]).parameters if name != "it"]
        missing = [name for name in expected if name not in self.params]
        unknown = sorted(set(self.params) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"{self.name}: schedule {self.kind!r} takes exactly {', '.join(expected)}; "
                f"missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}."
            )
        params = {key: evaluate_number(value, f"{self.name}.{key}") for key, value in self.params.items()}
        object.__setattr__(self, "params", params)
        try:
            self(0)  # validates the values (integer, non-negative lengths, total_iters >= warmup_iters)
        except ValueError as error:
            raise ValueError(f"{self.name}: {error}") from None

    def __call__(self, it: int) -> float:
        return float(SCHEDULE_KINDS[self.kind](it, **self.params))


def make_schedule(cfg: dict[str, Any], name: str = "schedule") -> Schedule:
    """Build a `Schedule` from `{"kind": ..., **params}`; raises a ValueError naming `name` (e.g. "recipe.lr") for an
    unknown kind, missing or unknown fields, a bad expression or invalid lengths."""
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise ValueError(
            f"{name}: a schedule config must be a dict with a 'kind' key (one of {', '.join(SCHEDULE_KINDS)}), "
            f"got {cfg!r}."
        )
    params = {key: value for key, value in cfg.items() if key != "kind"}
    return Schedule(cfg["kind"], params, name)
