"""ONNX export through torch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`) with dynamic shapes.

An image model's graph has the one input `pixel_values` [batch, 3, height, width] and one output per tensor field of
the model's output (e.g. `last_hidden_state`, `pooler_output`, `logits`, `predicted_depth`); the dino.txt text
tower has the one input `input_ids` [batch, sequence] and the output `text_embeds`. Batch, height, width and sequence
are symbolic, so one file serves every batch size, every image size that is a multiple of the model's stride (at
least 2 strides, 3 for a DPT head) and every text length up to the context length. RoPE and attention come out as
plain ONNX operators (Sin, Cos, MatMul, Softmax, ...).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..models.dinotxt import Dinov3HfDinoTxtModel
from ..models.vit.layers.rope import RopePositionEmbedding

DINOTXT_TOWERS = ("image", "text")
# a dino.txt end-of-text token id: the text tower reads its output at argmax(input_ids)
_EOT = 49407


class _Graph(nn.Module):
    """`fn(model, input)` as a module returning a flat tuple of tensors (ONNX outputs are positional); the input is
    cast to `input_dtype` first unless that is None."""

    def __init__(self, model: nn.Module, fn: Callable, input_dtype: torch.dtype | None):
        super().__init__()
        self.model, self.fn, self.input_dtype = model, fn, input_dtype

    def named_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        return _flatten(self.fn(self.model, x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.named_outputs(x).values())


def _flatten(output) -> dict[str, torch.Tensor]:
    """Name -> tensor of a model output: each tensor field under its name, each tuple field as name_0, name_1, ..."""
    flat = {}
    for name, value in output.items():
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, (tuple, list)):
            flat.update({f"{name}_{i}": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
    return flat


def _image_output(model: nn.Module, pixel_values: torch.Tensor):
    return model(pixel_values=pixel_values, return_dict=True)


def _dinotxt_image_output(model: Dinov3HfDinoTxtModel, pixel_values: torch.Tensor):
    return model.encode_image(pixel_values)


def _dinotxt_text_output(model: Dinov3HfDinoTxtModel, input_ids: torch.Tensor):
    return {"text_embeds": model.get_text_features(input_ids)}


def check_onnx_installed() -> None:
    """Raise an ImportError naming the extra to install unless onnx and onnxscript import."""
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"ONNX export needs {' and '.join(missing)}: pip install 'dinov3-hf[onnx]' (onnx, onnxscript, onnxruntime)."
        )


def _half(model: nn.Module) -> nn.Module:
    """A float16 copy of `model` whose RoPE periods keep their dtype (float32 by default), as `config.rope_dtype`
    says: `half()` alone would round them and compute the angles in float16."""
    model = copy.deepcopy(model)
    periods = {rope: rope.periods for rope in model.modules() if isinstance(rope, RopePositionEmbedding)}
    model.half()
    for rope, value in periods.items():
        rope.periods = value
    return model


def export_onnx(
    model: nn.Module,
    output_path: str | os.PathLike,
    *,
    opset: int | None = None,
    fp16: bool = False,
    example_size: tuple[int, int] = (224, 288),
    tower: str | None = None,
) -> Path:
    """Export `model` to the ONNX file `output_path` (its folder is created) and return that path.

    model: a backbone (`Dinov3HfViTModel`, `Dinov3HfConvNextModel`), a task model (classification, segmentation,
        depth) or, with `tower="image"` or `"text"`, one tower of a `Dinov3HfDinoTxtModel`. It is traced in eval mode
        (its mode is restored afterwards) and is not modified.
    opset: the ONNX opset; default: the exporter's.
    fp16: export float16 weights and compute (the input stays float32 and is cast in the graph; RoPE angles keep the
        config's `rope_dtype`); the outputs are float16.
    example_size: the (height, width) of the example image the exporter traces; any other size works at run time.
        Give a non-square size of a few patches at least, so that the exporter keeps height and width apart.
    tower: for a dino.txt model, "image" (`pixel_values` -> `image_embeds`, `patch_tokens`, as
        `Dinov3HfDinoTxtModel.encode_image`) or "text" (`input_ids` -> `text_embeds`, as `get_text_features`: not
        normalised); None for any other model.
    """
    check_onnx_installed()
    from torch.export import Dim

    is_dinotxt = isinstance(model, Dinov3HfDinoTxtModel)
    if is_dinotxt and tower not in DINOTXT_TOWERS:
        raise ValueError(
            f"a dino.txt model exports one tower per file: pass tower='image' or tower='text', got {tower!r}."
        )
    if not is_dinotxt and tower is not None:
        raise ValueError(f"tower= applies to dino.txt models only, not to a {type(model).__name__}; leave it None.")
    config = model.config
    rope_dtypes = {str(r.periods.dtype) for r in model.modules() if isinstance(r, RopePositionEmbedding)}
    if rope_dtypes - {"torch.float32", "torch.float64"}:
        raise ValueError(
            f"ONNX export needs RoPE periods in float32 or float64, but the model has {', '.join(sorted(rope_dtypes))} "
            "(rope_dtype in its config, or a model cast with .half() / .to(bfloat16)); export the float32 model, "
            "with fp16=True for a float16 graph."
        )
    source = _half(model) if fp16 else model
    dtype = torch.float16 if fp16 else torch.float32

    if tower == "text":
        fn, input_name = _dinotxt_text_output, "input_ids"
        context = config.text_context_length
        example = torch.full((2, min(7, context)), 320, dtype=torch.long)
        example[:, -1] = _EOT
        dynamic = {0: Dim("batch"), 1: Dim("sequence", min=1, max=context)}
        axis_names = ["batch", "sequence"]
        input_dtype = None
    else:
        fn = _dinotxt_image_output if is_dinotxt else _image_output
        input_name = "pixel_values"
        stride = getattr(config, "output_stride", None) or config.backbone_config.output_stride
        height, width = example_size
        # the smallest grid: 2 patches (a size-1 dimension would be fixed at 1), 3 for a DPT head (its x0.5 map)
        least = (3 if getattr(config, "head_type", None) == "dpt" else 2) * stride
        if min(height, width) < least or height == width:
            raise ValueError(
                f"example_size must be non-square and at least {least} pixels ({least // stride} x the stride) on "
                f"each side, got {example_size}: a square or smaller example lets the exporter tie height to width or "
                "fix a size."
            )
        example = torch.randn(2, getattr(getattr(config, "backbone_config", config), "num_channels", 3), height, width)
        # sizes in whole patches (stride-sized cells), so that no padding or cropping depends on the size
        dynamic = {
            0: Dim("batch"),
            2: stride * Dim("height_patches", min=least // stride),
            3: stride * Dim("width_patches", min=least // stride),
        }
        axis_names = ["batch", "height", "width"]
        input_dtype = dtype

    training = source.training
    source.eval()
    try:
        graph = _Graph(source, fn, input_dtype).eval()
        with torch.no_grad():
            names = list(graph.named_outputs(example))
        # torch.export first, so that a model that ties a dynamic size to the example fails here: torch.onnx.export
        # would fall back to its draft export, which lets such failures through
        try:
            exported = torch.export.export(graph, (example,), dynamic_shapes={"x": dynamic}, strict=False)
        except torch._dynamo.exc.UserError as err:
            raise RuntimeError(
                f"{type(model).__name__} does not export with a dynamic {', '.join(axis_names)}: {err}"
            ) from err
        program = torch.onnx.export(
            exported,
            dynamo=True,
            opset_version=opset,
            input_names=[input_name],
            output_names=names,
            dynamic_shapes={"x": dict(zip(dynamic, axis_names))},  # names the ONNX axes
            verbose=False,
        )
    finally:
        source.train(training)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    return path
