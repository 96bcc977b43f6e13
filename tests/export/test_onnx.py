"""ONNX export: onnxruntime reproduces PyTorch (fp32, <= 1e-4) at the traced size and at sizes never seen at export,
and each graph has exactly the expected inputs and outputs. Models have 2 blocks and tiny widths."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import randomize_

from dinov3_hf import (
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
    Dinov3HfDinoTxtConfig,
    Dinov3HfDinoTxtModel,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)
from dinov3_hf.export import export_onnx
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfSemanticSegmentationConfig,
)

EXAMPLE = (64, 96)  # the traced size


def sizes(stride: int) -> list[tuple[int, int, int]]:
    """(batch, height, width): the traced size, then two never seen at export (other batches, other aspect ratios,
    another parity of the patch grid)."""
    return [(2, *EXAMPLE), (1, 3 * stride, 5 * stride), (3, 7 * stride, 3 * stride)]


TEXT_SIZES = [(2, 7), (1, 3), (4, 77)]  # (batch, length): the traced shape, a shorter and a full-context text
VIT_OUTPUTS = ["last_hidden_state", "pooler_output", "register_tokens", "patch_tokens", "prenorm_hidden_state"]


def vit_config(preset: str = "vits16") -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset(preset, num_hidden_layers=2, hidden_size=64, num_attention_heads=2)


def dpt_model() -> Dinov3HfForDepthEstimation:
    config = Dinov3HfDepthEstimationConfig(
        backbone_config=vit_config(), head_type="dpt", layers=[0, 1, 0, 1], post_process_channels=[8, 16, 16, 24],
        dpt_channels=16, dpt_hidden_channels=8, n_bins=12, min_depth=0.5, max_depth=8.0,
    )
    return Dinov3HfForDepthEstimation(config)


def dinotxt_model() -> Dinov3HfDinoTxtModel:
    return Dinov3HfDinoTxtModel(
        Dinov3HfDinoTxtConfig(
            backbone_config=vit_config(), vision_head_layers=1, text_hidden_size=32, text_num_hidden_layers=2,
            text_num_attention_heads=2,
        )
    )


# case -> (model builder, tower, graph input, graph outputs)
CASES = {
    "vit": (lambda: Dinov3HfViTModel(vit_config()), None, "pixel_values", VIT_OUTPUTS),
    "vit_swiglu": (lambda: Dinov3HfViTModel(vit_config("vits16plus")), None, "pixel_values", VIT_OUTPUTS),
    "convnext": (
        lambda: Dinov3HfConvNextModel(Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])),
        None,
        "pixel_values",
        ["last_hidden_state", "pooler_output", "patch_tokens", "prenorm_hidden_state"],
    ),
    "segmentation": (
        lambda: Dinov3HfForSemanticSegmentation(
            Dinov3HfSemanticSegmentationConfig(backbone_config=vit_config(), num_labels=5, layers=[0, 1])
        ),
        None,
        "pixel_values",
        ["logits"],
    ),
    "dpt_depth": (dpt_model, None, "pixel_values", ["predicted_depth"]),
    "dinotxt_text": (dinotxt_model, "text", "input_ids", ["text_embeds"]),
}  # the dino.txt image tower: tests/export/test_cli_export.py


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    build, tower, input_name, outputs = CASES[request.param]
    model = randomize_(build(), std=0.1).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", example_size=EXAMPLE, tower=tower)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return request.param, model, path, session


def pytorch_outputs(case: str, model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if case == "dinotxt_text":
            return {"text_embeds": model.get_text_features(x)}
        return dict(model(pixel_values=x, return_dict=True))


def inputs(case: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(sum(shape))
    if case == "dinotxt_text":
        ids = torch.randint(1, 49000, shape, generator=gen)
        ids[:, shape[1] // 2] = 49407  # EOT mid-sequence: the embedding is read there, padding follows
        return ids
    return torch.randn(shape[0], 3, *shape[1:], generator=gen)


def test_graph_inputs_and_outputs_are_named_after_the_model(exported):
    case, _, path, session = exported
    _, _, input_name, outputs = CASES[case]
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    assert [i.name for i in graph.input if i.name not in initializers] == [input_name]  # no stray inputs
    assert [o.name for o in session.get_outputs()] == outputs
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", "sequence"] if input_name == "input_ids" else ["batch", 3, "height", "width"])


@pytest.mark.parametrize("shape", range(3))
def test_onnxruntime_matches_pytorch(exported, shape):
    case, model, _, session = exported
    stride = 32 if case == "convnext" else 16
    x = inputs(case, (TEXT_SIZES if case == "dinotxt_text" else sizes(stride))[shape])
    expected = pytorch_outputs(case, model, x)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x.numpy()})))
    assert set(got) == set(expected)
    for name, value in got.items():
        assert value.shape == tuple(expected[name].shape), name
        np.testing.assert_allclose(value, expected[name].numpy(), atol=1e-4, rtol=0, err_msg=name)


def test_fp16_export_runs_in_onnxruntime(tmp_path):
    model = randomize_(Dinov3HfViTModel(vit_config()), std=0.1).eval()
    path = export_onnx(model, tmp_path / "vit_fp16.onnx", fp16=True, example_size=EXAMPLE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = inputs("vit", sizes(16)[1])
    pooled = session.run(["pooler_output"], {"pixel_values": x.numpy()})[0]
    assert pooled.dtype == np.float16
    with torch.no_grad():
        expected = model(pixel_values=x).pooler_output.numpy()
    np.testing.assert_allclose(pooled.astype(np.float32), expected, atol=2e-2, rtol=0)
    assert model.dtype == torch.float32 and model.rope_embed.periods.dtype == torch.float32  # the model is untouched


def test_clear_errors():
    model = dinotxt_model().eval()
    with pytest.raises(ValueError, match="tower='image' or tower='text'"):
        export_onnx(model, "unused.onnx")
    with pytest.raises(ValueError, match="dino.txt models only"):
        export_onnx(model.backbone, "unused.onnx", tower="text")
    with pytest.raises(ValueError, match="non-square"):
        export_onnx(model.backbone, "unused.onnx", example_size=(64, 64))
