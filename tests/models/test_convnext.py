"""DINOv3 ConvNeXt: parity with transformers, checkpoint round trips, errors, outputs, Auto classes and UperNet."""

from __future__ import annotations

import torch
import pytest
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    DINOv3ConvNextBackbone,
    DINOv3ConvNextConfig,
    DINOv3ConvNextModel,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from dinov3_hf.convert import CheckpointError, convert_checkpoint, convnext, export_model, load_model
from dinov3_hf.models.convnext import (
    CONVNEXT_PRESETS,
    Dinov3HfConvNextBackbone,
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
)

CUT_DEPTHS = {name: [1, 1, 1, 1] for name in CONVNEXT_PRESETS} | {"convnext_tiny": [1, 1, 2, 1]}
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter ~ N(0, 0.05); norm weights ~ 1 + N(0, 0.05) and gamma ~ N(0, 0.5) so each branch matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = torch.randn(param.shape, generator=generator) * 0.05
            if name.endswith("gamma"):
                value = value * 10
            elif param.ndim == 1 and "norm" in name and name.endswith("weight"):
                value = value + 1
            param.copy_(value)
    return model.eval()


def tiny_model(depths=(1, 1, 1, 1), **overrides) -> Dinov3HfConvNextModel:
    config = Dinov3HfConvNextConfig(depths=list(depths), hidden_sizes=[16, 24, 32, 40], **overrides)
    return randomise(Dinov3HfConvNextModel(config))


def official_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under exactly the official keys and shapes (`dinov3/models/convnext.py`), norms.3 equal to norm."""
    depths, dims = CUT_DEPTHS[arch], CONVNEXT_PRESETS[arch]["hidden_sizes"]
    shapes = {"downsample_layers.0.0.weight": (dims[0], 3, 4, 4), "downsample_layers.0.0.bias": (dims[0],)}
    shapes |= {"downsample_layers.0.1.weight": (dims[0],), "downsample_layers.0.1.bias": (dims[0],)}
    for i in range(1, 4):
        shapes |= {f"downsample_layers.{i}.0.weight": (dims[i - 1],), f"downsample_layers.{i}.0.bias": (dims[i - 1],)}
        shapes |= {f"downsample_layers.{i}.1.weight": (dims[i], dims[i - 1], 2, 2)}
        shapes |= {f"downsample_layers.{i}.1.bias": (dims[i],)}
    for s, (depth, c) in enumerate(zip(depths, dims)):
        for j in range(depth):
            p = f"stages.{s}.{j}."
            shapes |= {p + "gamma": (c,), p + "dwconv.weight": (c, 1, 7, 7), p + "dwconv.bias": (c,)}
            shapes |= {p + "norm.weight": (c,), p + "norm.bias": (c,)}
            shapes |= {p + "pwconv1.weight": (4 * c, c), p + "pwconv1.bias": (4 * c,)}
            shapes |= {p + "pwconv2.weight": (c, 4 * c), p + "pwconv2.bias": (c,)}
    shapes |= {"norm.weight": (dims[-1],), "norm.bias": (dims[-1],)}
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=generator) * 0.05 for k, shape in shapes.items()}
    state |= {"norms.3.weight": state["norm.weight"].clone(), "norms.3.bias": state["norm.bias"].clone()}
    return state


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# -- parity with transformers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """convnext_tiny with depths cut to [1, 1, 2, 1], ours and transformers' with the same random weights."""
    ours = randomise(Dinov3HfConvNextModel(Dinov3HfConvNextConfig.from_preset("convnext_tiny", depths=[1, 1, 2, 1])))
    folder = tmp_path_factory.mktemp("hf_tiny")
    export_model(ours, folder, to="hf")
    return ours, DINOv3ConvNextModel.from_pretrained(folder).eval(), folder


@pytest.mark.parametrize("size", [(224, 224), (256, 384), (512, 512)])
def test_parity_with_transformers(tiny_pair, size):
    ours, theirs, _ = tiny_pair
    pixels = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(pixels, output_hidden_states=True), theirs(pixels, output_hidden_states=True)
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-5
    assert (a.patch_tokens - b.last_hidden_state[:, 1:]).abs().max() <= 1e-5
    assert (a.last_hidden_state - b.last_hidden_state).abs().max() <= 1e-5
    assert len(a.hidden_states) == len(b.hidden_states) == 5
    for x, y in zip(a.hidden_states, b.hidden_states):  # un-normed maps of magnitude ~10: relative tolerance
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_backbone_parity_with_transformers(tiny_pair):
    ours, _, folder = tiny_pair
    theirs = DINOv3ConvNextBackbone.from_pretrained(folder, out_features=STAGES).eval()
    config = Dinov3HfConvNextConfig.from_preset("convnext_tiny", depths=[1, 1, 2, 1], out_features=STAGES)
    backbone = Dinov3HfConvNextBackbone(config)
    backbone.load_state_dict(ours.state_dict())
    pixels = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        a, b = backbone.eval()(pixels), theirs(pixels)
    assert backbone.channels == theirs.channels == [96, 192, 384, 768]
    assert backbone.num_features == theirs.num_features
    for x, y in zip(a.feature_maps, b.feature_maps, strict=True):
        assert x.shape == y.shape and (x - y).abs().max() <= 1e-5


# -- checkpoint round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(CONVNEXT_PRESETS))
def test_official_round_trip(tmp_path, arch):
    state = official_state(arch)
    torch.save(state, tmp_path / "official.pth")
    model = load_model(tmp_path / "official.pth", arch=arch)
    assert model.config.depths == CUT_DEPTHS[arch]
    assert model.config.hidden_sizes == CONVNEXT_PRESETS[arch]["hidden_sizes"]
    assert "norms.3.weight" not in model.state_dict()
    assert torch.equal(model.norm.weight, state["norm.weight"])
    out = convert_checkpoint(tmp_path / "official.pth", tmp_path / "back.pth", arch=arch, to="official")
    assert_same_state(torch.load(out, weights_only=True), state)


@pytest.mark.parametrize("arch", list(CONVNEXT_PRESETS))
def test_transformers_round_trip(tmp_path, arch):
    preset = CONVNEXT_PRESETS[arch]
    theirs = DINOv3ConvNextModel(DINOv3ConvNextConfig(depths=CUT_DEPTHS[arch], hidden_sizes=preset["hidden_sizes"]))
    randomise(theirs).save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    assert isinstance(model, Dinov3HfConvNextModel) and model.config.depths == CUT_DEPTHS[arch]
    in_memory = convnext.hf_to_ours(theirs.state_dict(), model.config)  # `model.stages.*` keys
    assert_same_state({k: fn() for k, fn in in_memory.items()}, model.state_dict())
    assert type(Dinov3HfConvNextModel.from_pretrained(tmp_path / "hf")) is Dinov3HfConvNextModel
    out = convert_checkpoint(tmp_path / "hf", tmp_path / "back", to="hf")
    assert_same_state(load_file(out / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors"))
    assert DINOv3ConvNextConfig.from_pretrained(out).depths == CUT_DEPTHS[arch]


def test_save_pretrained_round_trip(tmp_path):
    model = tiny_model(patch_size=16)
    model.save_pretrained(tmp_path)
    loaded = Dinov3HfConvNextModel.from_pretrained(tmp_path).eval()
    assert loaded.config.patch_size == 16 and loaded.config.depths == [1, 1, 1, 1]
    assert_same_state(loaded.state_dict(), model.state_dict())
    pixels = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(pixels).last_hidden_state, model(pixels).last_hidden_state)
    backbone = Dinov3HfConvNextBackbone.from_pretrained(tmp_path, out_features=STAGES)
    assert_same_state(backbone.state_dict(), model.state_dict())


# -- errors ---------------------------------------------------------------------------------------------------------


def test_official_key_errors(tmp_path):
    state = official_state("convnext_tiny")
    del state["stages.2.1.pwconv2.bias"]
    state["head.weight"] = torch.zeros(3)
    state["stages.0.0.pwconv1.weight"] = torch.zeros(100, 96)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pth", arch="convnext_tiny")
    message = str(err.value)
    assert "missing keys (1): stages.2.1.pwconv2.bias" in message
    assert "unexpected keys (1): head.weight" in message
    assert "stages.0.0.pwconv1.weight: checkpoint (100, 96), model (384, 96)" in message


def test_norms3_must_equal_norm(tmp_path):
    state = official_state("convnext_tiny")
    state["norms.3.bias"] = state["norm.bias"] + 1
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"norms\.3\.bias differs from norm\.bias"):
        load_model(tmp_path / "bad.pth", arch="convnext_tiny")


def test_preset_mismatch(tmp_path):
    torch.save(official_state("convnext_tiny"), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"does not match preset 'convnext_base': hidden_sizes: checkpoint \[96"):
        load_model(tmp_path / "tiny.pth", arch="convnext_base")


def test_input_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"shape \[batch, 3, height, width\], got \(1, 1, 64, 64\)"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(31x64\) is smaller than the ConvNeXt's total stride of 32"):
        model(torch.zeros(1, 3, 31, 64))
    with pytest.raises(ValueError, match="out of range"):
        model.get_intermediate_layers(torch.zeros(1, 3, 64, 64), n=5)
    with pytest.raises(ValueError, match="4 stages"):
        Dinov3HfConvNextConfig(depths=[1, 1, 1])
    with pytest.raises(ValueError, match="Unknown ConvNeXt preset"):
        Dinov3HfConvNextConfig.from_preset("convnext_huge")


# -- outputs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (100, 70), (96, 160)])
def test_outputs_any_size(size):
    model = tiny_model()
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
    h, w = size[0] // 32, size[1] // 32
    assert out.last_hidden_state.shape == (2, 1 + h * w, 40)
    assert out.register_tokens is None
    assert torch.equal(out.patch_tokens, out.last_hidden_state[:, 1:])
    assert torch.equal(out.pooler_output, out.last_hidden_state[:, 0])
    final = out.hidden_states[-1]
    assert torch.equal(out.prenorm_hidden_state, final.flatten(2).transpose(1, 2))
    expected = model.norm(torch.cat([final.mean((-2, -1))[:, None], out.prenorm_hidden_state], dim=1))
    assert torch.allclose(out.last_hidden_state, expected, atol=1e-6)
    assert torch.equal(out.hidden_states[0], pixels)
    assert model(pixels, return_dict=False)[0].shape == out.last_hidden_state.shape
    crops = model([pixels, pixels[:1, :, :32, :32]])
    assert torch.allclose(crops[0].last_hidden_state, out.last_hidden_state, atol=1e-6)
    assert crops[1].patch_tokens.shape[1] == 1  # a 32 x 32 crop has a 1 x 1 stride-32 grid


def test_get_intermediate_layers():
    model = tiny_model()
    pixels = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
        maps = out.hidden_states[1:]
        last = model.get_intermediate_layers(pixels)
        assert len(last) == 1 and torch.allclose(last[0], out.patch_tokens, atol=1e-6)
        ((patches, pool),) = model.get_intermediate_layers(pixels, n=[-1], return_class_token=True)
        assert torch.allclose(pool, out.pooler_output, atol=1e-6)
        assert torch.allclose(patches, out.patch_tokens, atol=1e-6)

        # norm=True normalises the last stage only; earlier stages are returned raw, as official
        layers = model.get_intermediate_layers(pixels, n=4, reshape=True, return_class_token=True)
        for i, (fmap, pool) in enumerate(layers[:3]):
            assert torch.equal(fmap, maps[i]) and torch.allclose(pool, maps[i].mean((-2, -1)))
        assert layers[3][0].shape == maps[3].shape == (2, 40, 3, 5)
        assert torch.allclose(layers[3][0].flatten(2).transpose(1, 2), out.patch_tokens, atol=1e-6)

        raw = model.get_intermediate_layers(pixels, n=[0, 3], reshape=True, norm=False)
        assert torch.equal(raw[0], maps[0]) and torch.equal(raw[1], maps[3])
        flat = model.get_intermediate_layers(pixels, n=[1, 2], norm=False)
        assert flat[0].shape == (2, 12 * 20, 24) and torch.equal(flat[1], maps[2].flatten(2).transpose(1, 2))


def test_get_intermediate_layers_patch_size():
    model = tiny_model(patch_size=16)
    pixels = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        maps = model(pixels, output_hidden_states=True).hidden_states[1:]
        layers = model.get_intermediate_layers(pixels, n=2, reshape=True, norm=False, return_class_token=True)
        assert [tuple(fmap.shape) for fmap, _ in layers] == [(1, 32, 6, 10), (1, 40, 6, 10)]
        expected = F.interpolate(maps[3], size=(6, 10), mode="bilinear", antialias=True)
        assert torch.equal(layers[1][0], expected) and torch.equal(layers[1][1], maps[3].mean((-2, -1)))
        (normed,) = model.get_intermediate_layers(pixels, n=1)
        assert torch.allclose(normed, model.norm(expected.flatten(2).transpose(1, 2)), atol=1e-6)


def test_drop_path_and_gradient_checkpointing():
    model = tiny_model(drop_path_rate=0.5).train()
    assert [b.drop_path_rate for s in model.stages for b in s] == pytest.approx([0, 1 / 6, 2 / 6, 0.5])
    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for stage in model.stages for block in stage)
    model(torch.randn(2, 3, 64, 64)).pooler_output.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# -- Auto classes and heads -----------------------------------------------------------------------------------------


def test_auto_classes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), Dinov3HfConvNextConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is Dinov3HfConvNextModel
    backbone = AutoBackbone.from_pretrained(tmp_path, out_features=["stem", "stage2", "stage4"])
    assert type(backbone) is Dinov3HfConvNextBackbone and backbone.channels == [3, 24, 40]
    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = backbone(pixels, output_hidden_states=True)
        maps = model(pixels, output_hidden_states=True).hidden_states
    assert [tuple(f.shape) for f in out.feature_maps] == [(1, 3, 64, 96), (1, 24, 8, 12), (1, 40, 2, 3)]
    assert torch.equal(out.feature_maps[1], maps[2]) and len(out.hidden_states) == 5
    assert type(AutoModel.from_config(model.config)) is Dinov3HfConvNextModel


def test_upernet(tmp_path):
    backbone_config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 24, 32, 40], out_features=STAGES)
    config = UperNetConfig(
        backbone_config=backbone_config, hidden_size=16, auxiliary_channels=8, auxiliary_in_channels=32, num_labels=3
    )
    model = UperNetForSemanticSegmentation(config).eval()
    assert isinstance(model.backbone, Dinov3HfConvNextBackbone)
    pixels = torch.randn(1, 3, 64, 96)
    labels = torch.randint(0, 3, (1, 64, 96))
    with torch.no_grad():
        out = model(pixels, labels=labels)
    assert out.logits.shape == (1, 3, 64, 96) and torch.isfinite(out.loss)
    model.save_pretrained(tmp_path)
    reloaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert reloaded.config.backbone_config.model_type == "dinov3_hf_convnext"
    reloaded_state = reloaded.state_dict()
    assert all(torch.equal(reloaded_state[key], value) for key, value in model.state_dict().items())
    with torch.no_grad():  # same weights; the reloaded tensors' memory layout may change the summation order
        torch.testing.assert_close(reloaded(pixels).logits, out.logits, atol=1e-6, rtol=0)
