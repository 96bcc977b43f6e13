"""Official head checkpoints: each released layout is generated here with random tensors (the ViT-7B
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
from dinov3_hf.cli import main
from dinov3_hf.convert.heads import official_linear_probe_config
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfSemanticSegmentationConfig,
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

    # a DPT file into a linear depth probe: its keys are listed, the linear layout explained
    linear = Dinov3HfForDepthEstimation(Dinov3HfDepthEstimationConfig(backbone_config=tiny_vit()))
    with pytest.raises(CheckpointError, match=r"(?s)missing keys .*conv_depth.weight.*unexpected keys .*convs.0.conv"):
        load_official_head(linear, state)
    with pytest.raises(CheckpointError, match="No official head checkpoint layout"):
        official_head_shapes(tiny_vit())
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
    assert {"dinov3_vit7b16_lc", "dinov3_vit7b16_dd", "dinov3_vitl16_chmv2", "dinov3_vit7b16_de"} <= set(OFFICIAL_HEADS)


# -- the linear probes of the official training scripts -------------------------------------------------------------

# `dinov3/eval/segmentation/train.py` saves {"model": <the `segmentation_model.1.*` entries of the FeatureDecoder, whose
# module 1 is the LinearHead (batchnorm_layer = SyncBatchNorm(C), conv = Conv2d(C, classes, 1))>, "optimizer": ...};
# the depth probe's file holds the LinearHead (batchnorm_layer, conv_depth = Conv2d(C, bins, 1)) under "model".
SEG, DEPTH = "segmentation_model.1.", ""
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def linear_probe_file(path, prefix: str, conv: str, channels: int, outputs: int, batchnorm: bool = True, seed=0):
    """Write an official-layout linear-probe file (key names spelled out here), with an optimizer state beside the
    head as the training script saves it; return the head state dict."""
    shapes = {f"{prefix}batchnorm_layer.{p}": (channels,) for p in BN[:4]} if batchnorm else {}
    if batchnorm:
        shapes[f"{prefix}batchnorm_layer.num_batches_tracked"] = ()
    shapes |= {f"{prefix}{conv}.weight": (outputs, channels, 1, 1), f"{prefix}{conv}.bias": (outputs,)}
    state = random_state(shapes, seed=seed)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))]).state_dict()
    torch.save({"model": state, "optimizer": optimizer}, path)
    return state


def patch_maps(backbone, x):
    """Final-normed patch tokens as [B, C, h, w] maps (row-major grid) and the normed class token."""
    out = backbone(x)
    b, n, c = out.patch_tokens.shape
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    return out.patch_tokens.transpose(1, 2).reshape(b, c, h, w), out.pooler_output


def bn_conv(features, state, prefix, conv):
    """The official LinearHead at inference: BatchNorm with the running statistics, then the 1x1 conv."""
    if f"{prefix}batchnorm_layer.weight" in state:
        bn = {p: state[f"{prefix}batchnorm_layer.{p}"] for p in BN[:4]}
        features = F.batch_norm(
            features, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], training=False, eps=1e-5
        )
    return F.conv2d(features, state[f"{prefix}{conv}.weight"], state[f"{prefix}{conv}.bias"])


def written_back(model, path, state):
    """save_official_head's file: {"model": the same keys in the same order, bit-identical tensors}."""
    saved = torch.load(save_official_head(model, path), weights_only=True)
    assert list(saved) == ["model"] and list(saved["model"]) == list(state)
    assert all(torch.equal(saved["model"][k], v) and saved["model"][k].dtype == v.dtype for k, v in state.items())


@pytest.fixture(scope="module")
def backbone() -> Dinov3HfViTModel:
    torch.manual_seed(0)
    return Dinov3HfViTModel(tiny_vit()).eval()


def test_linear_segmentation_probe_loads_computes_and_round_trips(tmp_path, backbone):
    state = linear_probe_file(tmp_path / "model_final.pth", SEG, "conv", channels=32, outputs=5)
    model = build_official_head_model("linear_segmentation", tmp_path / "model_final.pth", backbone)
    assert isinstance(model, Dinov3HfForSemanticSegmentation) and not model.training
    assert (model.config.num_labels, model.config.use_batchnorm, model.config.layers) == (5, True, [-1])
    x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, _ = patch_maps(backbone, x)
        reference = bn_conv(features, state, SEG, "conv")
        assert reference.shape == (2, 5, 3, 4)
        torch.testing.assert_close(model(x).logits, reference)
    assert model.batchnorm.num_batches_tracked.item() == 1234
    written_back(model, tmp_path / "again.pth", state)

    # strict both ways: unknown and missing keys are named
    bad = dict(state, **{"segmentation_model.1.extra.weight": torch.zeros(2)})
    del bad["segmentation_model.1.conv.bias"]
    with pytest.raises(CheckpointError) as err:
        load_official_head(model, bad)
    assert "missing keys (1): segmentation_model.1.conv.bias" in str(err.value)
    assert "unexpected keys (1): segmentation_model.1.extra.weight" in str(err.value)
    # a segmentation probe into a depth probe: the keys say which it is
    depth = Dinov3HfForDepthEstimation(Dinov3HfDepthEstimationConfig(backbone_config=tiny_vit(), n_bins=5))
    with pytest.raises(CheckpointError, match="keys are those of the official linear segmentation probe"):
        load_official_head(depth, state)


@pytest.mark.parametrize("batchnorm, use_cls", [(True, False), (False, True)])
def test_linear_depth_probe_loads_computes_and_round_trips(tmp_path, backbone, batchnorm, use_cls):
    channels = 64 if use_cls else 32  # [patch ; class token] doubles the channels
    state = linear_probe_file(tmp_path / "depth.pth", DEPTH, "conv_depth", channels, outputs=8, batchnorm=batchnorm)
    model = build_official_head_model("linear_depth", tmp_path / "depth.pth", backbone)
    assert (model.config.head_type, model.config.n_bins) == ("linear", 8)
    assert (model.config.use_batchnorm, model.config.use_cls_token) == (batchnorm, use_cls)
    x = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features, cls = patch_maps(backbone, x)
        if use_cls:
            features = torch.cat([features, cls[:, :, None, None].expand_as(features)], dim=1)
        torch.testing.assert_close(model.bin_logits(x)[0], bn_conv(features, state, DEPTH, "conv_depth"))
    written_back(model, tmp_path / "again.pth", state)
    assert list(ours_to_official_head(model)) == list(state)


def test_convert_cli_reads_and_writes_linear_probes(tmp_path, backbone, capsys):
    backbone.save_pretrained(tmp_path / "backbone")
    state = linear_probe_file(tmp_path / "seg.pth", SEG, "conv", channels=64, outputs=3, seed=4)
    args = ["convert", str(tmp_path / "seg.pth"), str(tmp_path / "ours"), "--head", "linear_segmentation"]
    assert main([*args, "--backbone", str(tmp_path / "backbone"), "--layers", "1", "3"]) == 0
    model = Dinov3HfForSemanticSegmentation.from_pretrained(tmp_path / "ours")
    assert (model.config.layers, model.config.num_labels) == ([1, 3], 3)
    assert torch.equal(model.classifier.weight, state["segmentation_model.1.conv.weight"])
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth"), "--to", "official", *args[3:]]) == 0
    saved = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert list(saved) == list(state) and all(torch.equal(saved[k], v) for k, v in state.items())

    # the probe's channels must fit the layers; the wrong head kind is refused
    capsys.readouterr()
    assert main([*args, "--backbone", str(tmp_path / "backbone")]) == 1  # 64 channels, one 32-wide layer
    assert "segmentation_model.1.conv.weight: checkpoint (3, 64, 1, 1), model (3, 32, 1, 1)" in capsys.readouterr().err
    export = ["convert", str(tmp_path / "ours"), str(tmp_path / "x.pth"), "--to", "official"]
    assert main([*export, "--head", "linear_depth"]) == 1
    assert "linear_segmentation layout, not the linear_depth" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no segmentation_model.1.conv.weight"):
        official_linear_probe_config("linear_segmentation", {"conv_depth.weight": torch.zeros(1)}, tiny_vit())
