"""Official head checkpoints (D5 part 2): each released layout is generated here with random tensors (the ViT-7B
classifier at its real 8192 -> 1000 shape; the DPT depther and CHMv2 with their official structure on a tiny
backbone), loaded strictly, exported back bit-exactly; wrong files fail with the listed keys. The real-size DPT
layouts are checked on the meta device against a key list enumerated independently from the official structure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinov3_hf import Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.convert import (
    OFFICIAL_HEADS,
    CheckpointError,
    build_official_head_model,
    load_official_head,
    official_head_config,
    official_head_shapes,
    ours_to_official_head,
    save_official_head,
)
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
)


def tiny_vit() -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=4)


def random_state(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in an official layout (BatchNorm variances positive, counters integers)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


def dpt_official_keys(use_cls_token: bool, use_batchnorm: bool, use_bias: bool, projection: bool) -> set[str]:
    """The official DPTHead state-dict keys, enumerated from the module structure (not from our module)."""
    keys = set()
    for i in range(4):
        rb = "reassemble_blocks"
        keys |= {f"{rb}.projects.{i}.conv.weight", f"{rb}.projects.{i}.conv.bias", f"convs.{i}.conv.weight"}
        if i != 2:  # resize layer 2 is an Identity
            keys |= {f"{rb}.resize_layers.{i}.weight", f"{rb}.resize_layers.{i}.bias"}
        if use_cls_token:
            keys |= {f"{rb}.readout_projects.{i}.0.weight", f"{rb}.readout_projects.{i}.0.bias"}
        if use_batchnorm:
            keys |= {
                f"{rb}.batchnorm_layers.{i}.{p}"
                for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            }
        fb = f"fusion_blocks.{i}"
        keys |= {f"{fb}.project.conv.weight", f"{fb}.project.conv.bias"}
        for unit in (("res_conv_unit2",) if i == 0 else ("res_conv_unit1", "res_conv_unit2")):
            for conv in ("conv1", "conv2"):
                keys.add(f"{fb}.{unit}.{conv}.conv.weight")
                if use_bias:
                    keys.add(f"{fb}.{unit}.{conv}.conv.bias")
    if projection:
        keys |= {"project.conv.weight", "project.conv.bias"}
    keys |= {f"conv_depth.head.{j}.{p}" for j in (0, 2, 4) for p in ("weight", "bias")}
    return keys


# -- the ViT-7B ImageNet linear classifier --------------------------------------------------------------------------


def test_vit7b_classifier_at_real_shape_loads_and_exports_bit_exactly(tmp_path):
    config = official_head_config("dinov3_vit7b16_lc")
    assert official_head_shapes(config) == {"weight": (1000, 8192), "bias": (1000,)}
    state = random_state({"weight": (1000, 8192), "bias": (1000,)})
    path = tmp_path / "dinov3_vit7b16_imagenet1k_linear_head.pth"
    torch.save(state, path)
    with torch.device("meta"):  # the 7B backbone costs no memory on the meta device
        model = Dinov3HfForImageClassification(config)
    load_official_head(model, path)
    assert not model.classifier.weight.is_meta
    assert torch.equal(model.classifier.weight, state["weight"]) and torch.equal(model.classifier.bias, state["bias"])
    exported = torch.load(save_official_head(model, tmp_path / "out.pth"), weights_only=True)
    assert list(exported) == ["weight", "bias"]
    assert all(torch.equal(exported[k], state[k]) for k in state)


def test_classifier_head_on_a_small_backbone_computes_the_official_logits(tmp_path):
    config = official_head_config("dinov3_vit7b16_lc", backbone_config=tiny_vit())
    model = Dinov3HfForImageClassification(config).eval()
    state = random_state(official_head_shapes(config), seed=3)  # weight (1000, 64)
    torch.save({"model": state}, tmp_path / "wrapped.pth")  # a training snapshot wraps it under "model"
    load_official_head(model, tmp_path / "wrapped.pth")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.backbone(x)
        features = torch.cat([out.pooler_output, out.patch_tokens.mean(1)], -1)  # [CLS ; mean patch], as upstream
        torch.testing.assert_close(model(x).logits, F.linear(features, state["weight"], state["bias"]))


# -- the DPT depth heads -------------------------------------------------------------------------------------------

STRUCTURE = {  # (use_cls_token, use_batchnorm, dpt_use_bias, dpt_projection_after_fusion) of the released heads
    "dinov3_vit7b16_dd": (False, True, False, True),
    "dinov3_vitl16_chmv2": (True, False, True, False),
}


@pytest.mark.parametrize("name", list(STRUCTURE))
def test_real_size_dpt_layouts(name):
    shapes = official_head_shapes(official_head_config(name))
    assert set(shapes) == dpt_official_keys(*STRUCTURE[name])
    if name == "dinov3_vit7b16_dd":
        expected = {
            "reassemble_blocks.batchnorm_layers.0.running_var": (4096,),
            "reassemble_blocks.projects.0.conv.weight": (2048, 4096, 1, 1),
            "reassemble_blocks.resize_layers.0.weight": (2048, 2048, 4, 4),
            "reassemble_blocks.resize_layers.1.weight": (2048, 2048, 2, 2),
            "reassemble_blocks.resize_layers.3.weight": (2048, 2048, 3, 3),
            "convs.3.conv.weight": (512, 2048, 3, 3),
            "fusion_blocks.3.res_conv_unit1.conv2.conv.weight": (512, 512, 3, 3),
            "project.conv.weight": (512, 512, 3, 3),
            "conv_depth.head.0.weight": (256, 512, 3, 3),
            "conv_depth.head.2.weight": (32, 256, 3, 3),
            "conv_depth.head.4.weight": (256, 32, 1, 1),
        }
    else:
        expected = {
            "reassemble_blocks.readout_projects.0.0.weight": (1024, 2048),
            "reassemble_blocks.projects.0.conv.weight": (128, 1024, 1, 1),
            "reassemble_blocks.projects.3.conv.weight": (1024, 1024, 1, 1),
            "reassemble_blocks.resize_layers.0.weight": (128, 128, 4, 4),
            "reassemble_blocks.resize_layers.3.weight": (1024, 1024, 3, 3),
            "convs.1.conv.weight": (256, 256, 3, 3),
            "fusion_blocks.1.res_conv_unit1.conv1.conv.bias": (256,),
            "conv_depth.head.0.weight": (128, 256, 3, 3),
            "conv_depth.head.2.weight": (128, 128, 3, 3),
            "conv_depth.head.4.weight": (256, 128, 1, 1),
        }
    assert {k: shapes[k] for k in expected} == expected


def tiny_dpt_config(name: str) -> Dinov3HfDepthEstimationConfig:
    """The released head's structure and depth settings, at tiny widths on a 4-block ViT."""
    return official_head_config(
        name, backbone_config=tiny_vit(), layers=[0, 1, 2, 3], post_process_channels=[8, 8, 16, 16],
        dpt_channels=16, dpt_hidden_channels=8 if name == "dinov3_vit7b16_dd" else 12,
    )


@pytest.mark.parametrize("name", list(STRUCTURE))
def test_dpt_head_layout_loads_strictly_and_round_trips(tmp_path, name):
    config = tiny_dpt_config(name)
    shapes = official_head_shapes(config)
    assert set(shapes) == dpt_official_keys(*STRUCTURE[name])
    state = random_state(shapes, seed=7)
    path = tmp_path / f"{name}_dpt_head.pth"
    torch.save(state, path)
    model = Dinov3HfForDepthEstimation(config).eval()
    load_official_head(model, path)
    ours = model.state_dict()
    assert all(torch.equal(ours[f"dpt_head.{k}"], v) for k, v in state.items())
    exported = ours_to_official_head(model)
    assert list(exported) == list(shapes)  # the official registration order
    assert all(torch.equal(exported[k], state[k]) and exported[k].dtype == state[k].dtype for k in state)
    saved = torch.load(save_official_head(model, tmp_path / "again.pth"), weights_only=True)
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    with torch.no_grad():
        depth = model(torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))).predicted_depth
    assert depth.shape == (1, 32, 32) and torch.isfinite(depth).all()
    assert config.min_depth <= depth.min() and depth.max() <= config.max_depth


def test_wrong_files_list_missing_unexpected_and_misshaped_keys(tmp_path):
    config = tiny_dpt_config("dinov3_vit7b16_dd")
    model = Dinov3HfForDepthEstimation(config)
    state = random_state(official_head_shapes(config))
    del state["convs.2.conv.weight"]
    state["decoder.extra.weight"] = torch.zeros(3)
    state["conv_depth.head.4.weight"] = torch.zeros(99, 8, 1, 1)
    with pytest.raises(CheckpointError) as err:
        load_official_head(model, state)
    message = str(err.value)
    assert "missing keys (1): convs.2.conv.weight" in message
    assert "unexpected keys (1): decoder.extra.weight" in message
    assert "misshaped keys (1): conv_depth.head.4.weight: checkpoint (99, 8, 1, 1), model (256, 8, 1, 1)" in message

    # a CHMv2 file into a model configured like the ViT-7B depther: the keys say which switches differ
    chmv2 = random_state(official_head_shapes(tiny_dpt_config("dinov3_vitl16_chmv2")))
    with pytest.raises(CheckpointError, match=r"(?s)readout_projects.*use_cls_token=True.*use_batchnorm=False"):
        load_official_head(model, chmv2)

    # the BatchNorm counters may be absent (filled with 0); everything else is required
    state = random_state(official_head_shapes(config))
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(counters) == 4
    load_official_head(model, {k: v for k, v in state.items() if k not in counters})
    assert model.dpt_head.reassemble_blocks.batchnorm_layers[0].num_batches_tracked.item() == 0

    # the linear depth probe has no released file, hence no official layout
    linear = Dinov3HfForDepthEstimation(Dinov3HfDepthEstimationConfig(backbone_config=tiny_vit()))
    with pytest.raises(CheckpointError, match="No official head checkpoint layout"):
        load_official_head(linear, state)
    with pytest.raises(CheckpointError, match="Unknown official head"):
        official_head_config("dinov3_vitl16_dd_nyu")


class _NotATensor:
    pass


def test_pickles_that_run_code_are_refused(tmp_path):
    torch.save({"weight": torch.zeros(1000, 8192), "extra": _NotATensor()}, tmp_path / "evil.pth")
    with torch.device("meta"):
        model = Dinov3HfForImageClassification(official_head_config("dinov3_vit7b16_lc"))
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_official_head(model, tmp_path / "evil.pth")


def test_build_official_head_model_on_a_backbone(tmp_path):
    backbone = Dinov3HfViTModel(tiny_vit()).eval()
    config = tiny_dpt_config("dinov3_vitl16_chmv2")
    state = random_state(official_head_shapes(config), seed=11)
    torch.save(state, tmp_path / "chmv2.pth")
    fields = {k: getattr(config, k) for k in ("layers", "post_process_channels", "dpt_channels", "dpt_hidden_channels")}
    model = build_official_head_model("dinov3_vitl16_chmv2", tmp_path / "chmv2.pth", backbone, **fields)
    assert isinstance(model, Dinov3HfForDepthEstimation) and not model.training
    assert model.config.norm_strategy == "mixlog" and model.config.max_depth == 96.0
    assert torch.equal(model.dpt_head.conv_depth.head[4].weight, state["conv_depth.head.4.weight"])
    assert torch.equal(model.backbone.cls_token, backbone.cls_token)
    assert set(OFFICIAL_HEADS) == {"dinov3_vit7b16_lc", "dinov3_vit7b16_dd", "dinov3_vitl16_chmv2"}
