"""Export to deployment formats: ONNX with dynamic batch, height and width (`export_onnx`), and its int8
dynamic quantization for CPU inference (`quantize_dynamic_int8`)."""

from .onnx import DINOTXT_TOWERS, check_onnx_installed, export_onnx
from .quantize import quantize_dynamic_int8

__all__ = ["DINOTXT_TOWERS", "check_onnx_installed", "export_onnx", "quantize_dynamic_int8"]
