"""int8 dynamic quantization for CPU inference, with ONNX Runtime's `onnxruntime.quantization.quantize_dynamic`.

Dynamic quantization stores the weight of every linear layer (qkv, attention output, FFN, heads) as int8 and quantizes
that layer's input to uint8 at run time, from the input's own range; the matmul runs in integer arithmetic
(`DynamicQuantizeLinear` -> `MatMulInteger`). No calibration data is needed. Everything else (the patch embedding,
norms, RoPE, the attention scores and softmax, the depthwise convolutions of the ConvNeXts) stays float32.

ONNX Runtime is the int8 path because it is the faster one on CPU: on a shared 2-core x86 machine (one thread),
ViT-S/16 at 224 with batch 8 ran at 12.0 images/s in int8 with ONNX Runtime against 8.6 with torch's
`torch.ao.quantization.quantize_dynamic` (which torch deprecates) and 4.7 in float32 PyTorch; bench/bench_quantized.py
measures it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .onnx import export_onnx


def _require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ImportError(
            "int8 quantization needs onnxruntime: pip install 'dinov3-hf[onnx]' (onnx, onnxscript, onnxruntime)."
        ) from None


def quantize_dynamic_int8(
    source: nn.Module | str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    **export_kwargs: Any,
) -> Path:
    """Write an int8 dynamically quantized ONNX model to `output_path` (its folder is created) and return that path.

    source: a model, exported first with `export_onnx(source, ..., **export_kwargs)`, or the path of a float32 ONNX
        file written by `export_onnx`.
    per_channel: one weight scale per output channel (default) instead of one per weight matrix.
    reduce_range: quantize weights to 7 bits; ONNX Runtime advises it on x86 CPUs without VNNI instructions when
        the int8 outputs drift too far from the float32 ones.

    Inputs, outputs, their names and dynamic axes are those of the float32 export; run the file with
    `onnxruntime.InferenceSession(path)`. Every `MatMul` with a constant weight (the linear layers) becomes int8;
    matmuls between two activations (the attention scores) and all other operators stay float32. Not for fp16 exports.
    """
    _require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(source, nn.Module):
            if export_kwargs.get("fp16"):
                raise ValueError("int8 quantization starts from a float32 export; leave fp16=False.")
            float_path = export_onnx(source, Path(folder) / "float32.onnx", **export_kwargs)
        else:
            if export_kwargs:
                raise TypeError(
                    f"export options {sorted(export_kwargs)} apply only when `source` is a model, not an ONNX file."
                )
            float_path = Path(source)
            if not float_path.is_file():
                raise FileNotFoundError(f"{float_path} is not a file; pass a model or the path of an ONNX file.")
            if float_path.resolve() == output.resolve():
                raise ValueError(f"output_path {output} is the source file; write the int8 model to another path.")
        quantize_dynamic(
            str(float_path),
            str(output),
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )
    return output
