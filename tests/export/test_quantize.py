"""int8 dynamic quantization (ONNX Runtime) of the shipped default model: the int8 file really holds int8 weights
and integer matmuls, and its CLS and patch tokens on a real photo stay close to the float32 model's."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

import onnx
import onnxruntime as ort
from transformers import AutoModel

from dinov3_hf.export import quantize_dynamic_int8
from dinov3_hf.pretrained_models import default_model_path
from dinov3_hf.processing import Dinov3HfImageProcessor

# Measured with bench/bench_quantized.py on astronaut, chelsea, coffee and rocket at 28 and 112 pixels: CLS cosine
# >= 0.9998, patch cosine >= 0.9999 (mean 0.99999) for the int8 model against float32. The bounds allow 5-10x more
# error; every weight scale off by 5 % gives a CLS cosine of 0.995.
MIN_CLS_COSINE = 0.999
MIN_MEAN_PATCH_COSINE = 0.999
MIN_PATCH_COSINE = 0.995


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    model = AutoModel.from_pretrained(default_model_path()).eval()
    path = quantize_dynamic_int8(model, tmp_path_factory.mktemp("int8") / "model.int8.onnx", example_size=(28, 36))
    return model, path


def test_int8_file_holds_int8_weights_and_integer_matmuls(quantized):
    model, path = quantized
    graph = onnx.load(str(path)).graph
    ops = Counter(node.op_type for node in graph.node)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert ops["MatMulInteger"] == len(linears)
    assert ops["DynamicQuantizeLinear"] >= 1
    # every linear weight is stored as int8: the weight input of each integer matmul is an int8 initializer
    initializers = {t.name: t for t in graph.initializer}
    weights = [initializers[node.input[1]] for node in graph.node if node.op_type == "MatMulInteger"]
    assert all(w.data_type == onnx.TensorProto.INT8 for w in weights)
    assert sorted(int(np.prod(w.dims)) for w in weights) == sorted(m.weight.numel() for m in linears)
    float_weights = [t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                     and min(t.dims) > 1 and int(np.prod(t.dims)) >= model.config.hidden_size ** 2]
    assert not float_weights, f"float32 weight matrices left: {float_weights}"
    # matmuls left in float are the two activation x activation ones of each attention block
    assert ops["MatMul"] == 2 * model.config.num_hidden_layers


def test_int8_features_match_float32_on_a_real_photo(quantized):
    model, path = quantized
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 112, "width": 84})
    pixel_values = processor([data.astronaut(), data.chelsea()], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        reference = model(pixel_values).last_hidden_state
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"pixel_values": pixel_values.numpy()})))
    tokens = torch.from_numpy(outputs["last_hidden_state"])
    assert tokens.shape == reference.shape
    assert not torch.allclose(tokens, reference, atol=1e-5), "the int8 model gives float32 outputs: nothing quantized"
    first_patch = 1 + model.config.num_register_tokens
    cls = F.cosine_similarity(tokens[:, 0], reference[:, 0], dim=-1)
    patches = F.cosine_similarity(tokens[:, first_patch:], reference[:, first_patch:], dim=-1)
    assert cls.min() >= MIN_CLS_COSINE, cls
    assert patches.mean() >= MIN_MEAN_PATCH_COSINE, patches.mean()
    assert patches.min() >= MIN_PATCH_COSINE, patches.min()


def test_export_options_need_a_model(tmp_path):
    with pytest.raises(TypeError, match="only when `source` is a model"):
        quantize_dynamic_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx", opset=18)
    with pytest.raises(FileNotFoundError, match="pass a model or the path"):
        quantize_dynamic_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")
