"""torch.compile of the backbones: one graph under fullgraph=True, and one dynamic-shape graph serving every resolution.

Dynamo decides graph breaks, guards and recompiles before any backend runs, so the cheap "eager" backend checks both;
counters["stats"]["unique_graphs"] counts every graph Dynamo compiles, the first one and each recompile.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from helpers import randomize_
from torch._dynamo.utils import counters

from dinov3_hf import (
    Dinov3HfConvNextBackbone,
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
    Dinov3HfViTBackbone,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)


def vit(model_class, preset: str, **overrides):
    config = Dinov3HfViTConfig.from_preset(
        preset, num_hidden_layers=2, hidden_size=64, num_attention_heads=2, **overrides
    )
    return randomize_(model_class(config), std=1 / math.sqrt(64)).eval()


def convnext(model_class, **overrides):
    config = Dinov3HfConvNextConfig(depths=[1, 1, 2, 1], hidden_sizes=[16, 24, 32, 40], **overrides)
    return randomize_(model_class(config), std=0.1).eval()


BACKBONES = {
    "vit": lambda: vit(Dinov3HfViTModel, "vits16"),  # GELU MLP, 4 registers, RoPE
    "vit_swiglu": lambda: vit(Dinov3HfViTModel, "vits16plus"),
    "vit_backbone": lambda: vit(Dinov3HfViTBackbone, "vits16", out_indices=[0, -1]),
    "convnext": lambda: convnext(Dinov3HfConvNextModel),
    "convnext_backbone": lambda: convnext(Dinov3HfConvNextBackbone, out_indices=[1, 4]),
}

# (batch, height, width): three resolutions, two of them non-square, and two batch sizes
INPUTS = [(2, 64, 96), (3, 96, 96), (2, 128, 80)]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def tensors(output) -> list[torch.Tensor]:
    """Every tensor of a model output, nested tuples (hidden states, feature maps) flattened in order."""
    items = output.to_tuple() if hasattr(output, "to_tuple") else output
    flat = []
    for item in items:
        flat.extend(tensors(item) if isinstance(item, (tuple, list)) else [item])
    return flat


@pytest.mark.parametrize("name", list(BACKBONES))
def test_one_graph_without_breaks(name):
    model = BACKBONES[name]()
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 96))
    reasons = [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", list(BACKBONES))
def test_dynamic_compile_serves_every_resolution_with_one_graph(name):
    """fullgraph=True also fails on any graph break; output_hidden_states=True compiles the collecting path too."""
    model = BACKBONES[name]()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    for batch, height, width in INPUTS:
        x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        with torch.no_grad():
            got, want = tensors(compiled(x, output_hidden_states=True)), tensors(model(x, output_hidden_states=True))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] == 1, "recompiled for a new input size"


def test_dynamic_compile_returns_attentions_with_one_graph():
    model = vit(Dinov3HfViTModel, "vits16plus", attn_implementation="eager")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    for batch, height, width in INPUTS:
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            got, want = compiled(x, output_attentions=True), model(x, output_attentions=True)
        tokens = 1 + 4 + (height // 16) * (width // 16)
        assert [a.shape for a in got.attentions] == [(batch, 2, tokens, tokens)] * 2
        for a, b in zip(got.attentions, want.attentions):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert counters["stats"]["unique_graphs"] == 1


def test_aot_autograd_traces_the_vit_with_symbolic_shapes():
    """aot_eager adds AOTAutograd's functionalisation of in-place ops (inductor's front end) to the Dynamo trace."""
    model = vit(Dinov3HfViTModel, "vits16plus")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch, height, width in INPUTS[:2]:
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x).last_hidden_state, model(x).last_hidden_state, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] == 1
