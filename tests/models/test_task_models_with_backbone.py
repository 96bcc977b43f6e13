"""Our ViT as `backbone_config` of transformers' DPT (depth) and UperNet (segmentation): run, save, reload."""

from __future__ import annotations

import torch
from helpers import randomize_
from transformers import (
    AutoModelForDepthEstimation,
    DPTConfig,
    DPTForDepthEstimation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from dinov3_hf import Dinov3HfViTBackbone, Dinov3HfViTConfig


def vit_backbone_config(**kwargs) -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset(
        "vits16", hidden_size=64, num_attention_heads=2, num_hidden_layers=4, out_indices=[1, 2, 3, 4], **kwargs
    )


def assert_reload_identical(model, tmp_path, x, output_field):
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert reloaded.config.backbone_config.model_type == "dinov3_hf_vit"
    with torch.inference_mode():
        torch.testing.assert_close(getattr(reloaded(x), output_field), getattr(model(x), output_field))


def test_dpt_depth_with_our_backbone(tmp_path):
    config = DPTConfig(
        backbone_config=vit_backbone_config(reshape_hidden_states=False),
        hidden_size=64, neck_hidden_sizes=[32, 64, 64, 64], fusion_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5],
        head_in_index=-1,
    )
    model = DPTForDepthEstimation(config)
    assert isinstance(model.backbone, Dinov3HfViTBackbone)
    randomize_(model).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        depth = model(x).predicted_depth
    assert depth.shape == (2, 64, 96) and torch.isfinite(depth).all()
    assert_reload_identical(model, tmp_path, x, "predicted_depth")
    assert isinstance(AutoModelForDepthEstimation.from_pretrained(tmp_path).backbone, Dinov3HfViTBackbone)


def test_upernet_segmentation_with_our_backbone(tmp_path):
    config = UperNetConfig(
        backbone_config=vit_backbone_config(reshape_hidden_states=True), hidden_size=32, auxiliary_channels=16,
        num_labels=5, use_auxiliary_head=True,
    )
    model = UperNetForSemanticSegmentation(config)
    assert isinstance(model.backbone, Dinov3HfViTBackbone)
    randomize_(model).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        logits = model(x).logits
    assert logits.shape == (2, 5, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))
    model.train()
    loss = model(x, labels=labels).loss
    loss.backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None
    model.eval()
    assert_reload_identical(model, tmp_path, x, "logits")
