"""Checks that transformers' common model tests make of every model class: weights missing from a checkpoint are
initialised as the config says, outputs hold only tensors (or None), backbones honour negative `out_indices` and the
config's output flags, and configs validate through transformers' hooks and round-trip through save / load."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from helpers import randomize_
from huggingface_hub.errors import StrictDataclassClassValidationError
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, pipeline

from dinov3_hf import (
    Dinov3HfConvNextBackbone,
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
    Dinov3HfDinoTxtConfig,
    Dinov3HfDinoTxtModel,
    Dinov3HfImageProcessor,
    Dinov3HfViTBackbone,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)
from dinov3_hf.models.convnext.modeling import ChannelsFirstLayerNorm, ConvNextBlock
from dinov3_hf.models.dinotxt.text_tower import TextTransformer
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)
from dinov3_hf.models.vit.layers.attention import LinearKMaskedBias
from dinov3_hf.models.vit.layers.layer_scale import LayerScale
from dinov3_hf.models.vit.layers.rope import RopePositionEmbedding


def vit_config(**overrides) -> Dinov3HfViTConfig:
    fields = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, layerscale_init=0.25)
    return Dinov3HfViTConfig.from_preset("vits16", **{**fields, **overrides})


def convnext_config(**overrides) -> Dinov3HfConvNextConfig:
    fields = dict(depths=[1, 1, 2, 1], hidden_sizes=[16, 24, 32, 40], layerscale_init=0.125)
    return Dinov3HfConvNextConfig(**{**fields, **overrides})


# -- missing weights are initialised as the config says -----------------------------------------------------------


def dinotxt_config() -> Dinov3HfDinoTxtConfig:
    return Dinov3HfDinoTxtConfig(
        backbone_config=vit_config(), vision_head_layers=1, vision_head_layerscale_init=0.5, text_vocab_size=300,
        text_context_length=16, text_hidden_size=32, text_num_hidden_layers=1, text_num_attention_heads=2,
    )


# One small instance of every model class (the ViT variants cover SwiGLU, the untied local norm and the k-bias mask).
TINY_MODELS: dict[str, Callable[[], nn.Module]] = {
    "vit": lambda: Dinov3HfViTModel(vit_config()),
    "vit_backbone": lambda: Dinov3HfViTBackbone(
        vit_config(ffn_type="swiglu", ffn_ratio=6.0, untie_global_and_local_cls_norm=True, out_indices=[0, 2])
    ),
    "convnext": lambda: Dinov3HfConvNextModel(convnext_config()),
    "convnext_backbone": lambda: Dinov3HfConvNextBackbone(convnext_config(out_indices=[1, 4])),
    "classification": lambda: Dinov3HfForImageClassification(
        Dinov3HfImageClassificationConfig(backbone_config=vit_config(), num_labels=5)
    ),
    "segmentation": lambda: Dinov3HfForSemanticSegmentation(
        Dinov3HfSemanticSegmentationConfig(backbone_config=convnext_config(), num_labels=6, layers=[2, 3])
    ),
    "depth_linear": lambda: Dinov3HfForDepthEstimation(
        Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), n_bins=16, use_cls_token=True)
    ),
    "depth_dpt": lambda: Dinov3HfForDepthEstimation(
        Dinov3HfDepthEstimationConfig(
            backbone_config=vit_config(num_hidden_layers=4), head_type="dpt", n_bins=16, use_cls_token=True,
            post_process_channels=[16, 16, 32, 32], dpt_channels=16, dpt_hidden_channels=8,
        )
    ),
    "dinotxt": lambda: Dinov3HfDinoTxtModel(dinotxt_config()),
}


def assert_spread(tensor: torch.Tensor, std: float, what: str) -> None:
    """Mean ~ 0 and std ~ `std` within ~5 standard errors of the estimates."""
    x, n = tensor.detach().double().flatten(), tensor.numel()
    assert abs(x.std().item() / std - 1) < 5 / math.sqrt(2 * n) + 0.05, f"{what}: std {x.std().item():.4g} != {std}"
    assert abs(x.mean().item()) < 5 * std / math.sqrt(n), f"{what}: mean {x.mean().item():.4g} is not ~0"


def assert_constant(tensor: torch.Tensor, value: float, what: str) -> None:
    expected = torch.full_like(tensor, value)
    assert torch.equal(tensor.detach(), expected), f"{what} should be all {value}, got {tensor.flatten()[:4]}"


def expected_periods(config: Dinov3HfViTConfig) -> torch.Tensor:
    """The official RoPE periods, base ** (2k / (head_dim / 2)) for k < head_dim / 4, computed in float64."""
    head_dim = config.hidden_size // config.num_attention_heads
    return torch.tensor([config.rope_base ** (2 * k / (head_dim // 2)) for k in range(head_dim // 4)])


def check_vit_tensor(config: Dinov3HfViTConfig, owner: nn.Module, attr: str, tensor: torch.Tensor, what: str):
    """The official ViT initialisation (`dinov3/models/vision_transformer.py` `init_weights`)."""
    std = config.initializer_range
    if isinstance(owner, nn.LayerNorm):
        assert_constant(tensor, 1.0 if attr == "weight" else 0.0, what)
    elif isinstance(owner, LayerScale):
        assert_constant(tensor, config.layerscale_init, what)
    elif isinstance(owner, RopePositionEmbedding):
        torch.testing.assert_close(tensor, expected_periods(config).to(tensor.dtype), msg=what)
    elif isinstance(owner, LinearKMaskedBias) and attr == "bias_mask":
        third = tensor.numel() // 3
        assert torch.equal(tensor, torch.tensor([1.0] * third + [0.0] * third + [1.0] * third)), what
    elif isinstance(owner, nn.Linear):
        if attr == "bias":
            assert_constant(tensor, 0.0, what)
        else:
            assert_spread(tensor, std, what)
    elif isinstance(owner, nn.Conv2d):  # the patch embedding: U(-b, b), b = 1 / sqrt(fan_in), weight and bias
        bound = 1 / math.sqrt(config.num_channels * config.patch_size**2)
        assert tensor.abs().max() <= bound, what
        assert_spread(tensor, bound / math.sqrt(3), what)
    elif attr == "mask_token":
        assert_constant(tensor, 0.0, what)
    else:
        assert attr in ("cls_token", "storage_tokens"), f"no expectation for {what}"
        assert_spread(tensor, std, what)


def check_convnext_tensor(config: Dinov3HfConvNextConfig, owner: nn.Module, attr: str, tensor: torch.Tensor, what):
    """The official ConvNeXt initialisation (`dinov3/models/convnext.py` `_init_weights`)."""
    if isinstance(owner, (nn.LayerNorm, ChannelsFirstLayerNorm)):
        assert_constant(tensor, 1.0 if attr == "weight" else 0.0, what)
    elif isinstance(owner, ConvNextBlock):
        assert_constant(tensor, config.layerscale_init, what)
    else:
        assert isinstance(owner, (nn.Conv2d, nn.Linear)), f"no expectation for {what}"
        if attr == "bias":
            assert_constant(tensor, 0.0, what)
        else:
            assert_spread(tensor, config.initializer_range, what)


def check_head_tensor(config, owner: nn.Module, attr: str, tensor: torch.Tensor, what: str):
    """Linear heads: N(0, head_initializer_range) weights, zero biases, BatchNorm at identity. DPT head (flagged
    modules): Kaiming-normal (fan_out, ReLU) convs, N(0, 0.02) readout linears. dino.txt: its own scheme."""
    if isinstance(owner, nn.BatchNorm2d):
        assert_constant(tensor, 1.0 if attr in ("weight", "running_var") else 0.0, what)
    elif attr == "bias":
        assert_constant(tensor, 0.0, what)
    elif isinstance(config, Dinov3HfDinoTxtConfig):
        if isinstance(owner, nn.LayerNorm):
            assert_constant(tensor, 1.0, what)
        elif isinstance(owner, LayerScale):
            assert_constant(tensor, config.vision_head_layerscale_init, what)
        elif isinstance(owner, TextTransformer):
            assert_spread(tensor, 0.01, what)
        elif attr == "logit_scale":
            assert_constant(tensor, math.log(1 / 0.07), what)
        else:
            assert isinstance(owner, (nn.Linear, nn.Embedding)), f"no expectation for {what}"
            assert_spread(tensor, config.initializer_range, what)
    elif getattr(owner, "_dpt_init", False) and isinstance(owner, nn.ConvTranspose2d):
        fan_out = owner.in_channels * owner.kernel_size[0] * owner.kernel_size[1]  # torch's fan of (in, out, k, k)
        assert_spread(tensor, math.sqrt(2 / fan_out), what)
    elif getattr(owner, "_dpt_init", False) and isinstance(owner, nn.Conv2d):
        fan_out = owner.out_channels * owner.kernel_size[0] * owner.kernel_size[1]
        assert_spread(tensor, math.sqrt(2 / fan_out), what)
    elif getattr(owner, "_dpt_init", False):
        assert isinstance(owner, nn.Linear), f"no expectation for {what}"
        assert_spread(tensor, 0.02, what)
    else:
        assert isinstance(owner, (nn.Linear, nn.Conv2d)), f"no expectation for {what}"
        assert_spread(tensor, config.head_initializer_range, what)


def check_initialised(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    path, _, attr = key.rpartition(".")
    owner = model.get_submodule(path)
    family, config = model, model.config
    if key.startswith("backbone.") and hasattr(model, "backbone"):
        family, config = model.backbone, model.backbone.config
    if isinstance(family, Dinov3HfViTModel):
        check_vit_tensor(config, owner, attr, tensor, key)
    elif isinstance(family, Dinov3HfConvNextModel):
        check_convnext_tensor(config, owner, attr, tensor, key)
    else:
        check_head_tensor(config, owner, attr, tensor, key)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_missing_weights_are_initialised_as_the_config_says(name, tmp_path):
    """Save a random model, drop each top-level submodule from the checkpoint in turn, reload: the dropped tensors
    follow the config's initialisation (not uninitialised memory), the others are the saved ones."""
    torch.manual_seed(0)
    model = randomize_(TINY_MODELS[name]()).eval()
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    top_level = sorted({key.split(".")[0] for key in saved})
    assert len(top_level) >= 2
    for dropped in top_level:
        kept = {key: value for key, value in saved.items() if key.split(".")[0] != dropped}
        save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
        # transformers' loader itself: the task models' own from_pretrained refuses incomplete checkpoints
        loaded = PreTrainedModel.from_pretrained.__func__(type(model), tmp_path)
        state = loaded.state_dict()
        assert state.keys() == saved.keys()
        for key, tensor in state.items():
            assert torch.isfinite(tensor.float()).all(), f"{key} is not finite after dropping {dropped}"
            if key in kept:
                assert torch.equal(tensor, kept[key]), f"{key} was loaded wrongly"
            else:
                check_initialised(loaded, key, tensor)


# -- outputs hold only tensors or None ------------------------------------------------------------------------------


def model_inputs(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    pixels = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    if name == "dinotxt":
        return {"pixel_values": pixels, "input_ids": torch.tensor([[5, 7, 299, 0], [3, 299, 0, 0]])}
    if name.startswith("depth") or name == "segmentation":
        labels = torch.rand(2, 64, 96) if name.startswith("depth") else torch.randint(0, 6, (2, 64, 96))
        return {"pixel_values": pixels, "labels": labels}
    if name == "classification":
        return {"pixel_values": pixels, "labels": torch.tensor([1, 4])}
    return {"pixel_values": pixels}


def assert_tensor_fields(output) -> None:
    """Every field is a tensor, None, or a tuple of tensors (hidden states, attentions, feature maps): what
    pipelines un-batch and what tracing / ONNX export turns into graph outputs."""
    for field in dataclasses.fields(output):
        value = getattr(output, field.name)
        values = value if isinstance(value, tuple) else (value,)
        assert value is None or all(isinstance(v, torch.Tensor) for v in values), (
            f"{type(output).__name__}.{field.name} is {type(value).__name__}"
        )


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_every_output_field_is_a_tensor_or_none(name):
    model = TINY_MODELS[name]().eval()
    with torch.no_grad():
        output = model(**model_inputs(name, model), output_hidden_states=True)
        assert_tensor_fields(output)
        assert name == "dinotxt" or output.hidden_states is not None
        if name == "dinotxt":
            assert_tensor_fields(model.encode_image(model_inputs(name, model)["pixel_values"]))
    if name == "convnext":
        assert output.register_tokens is None  # no registers: None, not an empty (B, 0, C) tensor
        assert output.patch_tokens.shape == (2, (64 // 32) * (96 // 32), 40)


def test_feature_extraction_pipeline_unbatches_our_vit(tmp_path):
    """`pipeline("image-feature-extraction")` at batch_size=3 over images of several sizes returns, per image, the
    model's output on that image alone (the pipeline slices every output field per sample)."""
    model = randomize_(Dinov3HfViTModel(vit_config())).eval()
    model.save_pretrained(tmp_path)
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 48, "width": 64})
    processor.save_pretrained(tmp_path)
    gen = torch.Generator().manual_seed(0)
    sizes = [(30, 50), (64, 64), (100, 40), (20, 90)]  # a full batch of 3, then a batch of 1
    arrays = [torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy() for h, w in sizes]
    images = [Image.fromarray(array) for array in arrays]
    extractor = pipeline("image-feature-extraction", model=str(tmp_path))
    features = extractor(images, batch_size=3, return_tensors=True)
    pooled = extractor(images, batch_size=3, pool=True, return_tensors=True)
    assert len(features) == len(pooled) == len(images)
    for image, feature, pool in zip(images, features, pooled):
        with torch.no_grad():
            expected = model(**processor(image, return_tensors="pt"))
        assert feature.shape == (1, 1 + 4 + 3 * 4, 64)
        torch.testing.assert_close(feature, expected.last_hidden_state, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pool, expected.pooler_output, rtol=1e-5, atol=1e-5)


# -- backbones: negative out_indices and the config's output flags --------------------------------------------------


@pytest.mark.parametrize(
    "make, negative, positive",
    [
        (lambda **kw: Dinov3HfConvNextBackbone(convnext_config(**kw)), [-2, -1], [3, 4]),
        (lambda **kw: Dinov3HfConvNextBackbone(convnext_config(**kw)), [-4, 2], [1, 2]),
        (lambda **kw: Dinov3HfViTBackbone(vit_config(**kw)), [-3, -1], [0, 2]),
    ],
)
def test_backbone_negative_out_indices_match_positive(make, negative, positive):
    torch.manual_seed(0)
    model = randomize_(make(out_indices=positive)).eval()
    other = make(out_indices=negative).eval()
    other.load_state_dict(model.state_dict())
    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, got = model(pixels).feature_maps, other(pixels).feature_maps
    assert other.out_features == model.out_features and other.channels == model.channels
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_convnext_backbone_honours_config_output_hidden_states():
    model = Dinov3HfConvNextBackbone(convnext_config(out_indices=[1], output_hidden_states=True)).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        output = model(pixels)
        assert [tuple(h.shape) for h in output.hidden_states] == [
            (1, 3, 64, 64), (1, 16, 16, 16), (1, 24, 8, 8), (1, 32, 4, 4), (1, 40, 2, 2)
        ]
        assert torch.equal(output.feature_maps[0], output.hidden_states[1])
        assert model(pixels, output_hidden_states=False).hidden_states is None
        model.config.output_hidden_states = False
        assert model(pixels).hidden_states is None
        model.config.return_dict = False
        assert isinstance(model(pixels), tuple)


# -- configs: transformers' validation hooks, clear errors, save / load round trips ---------------------------------

CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "vit": lambda: vit_config(out_indices=[-2, -1], rope_dtype="bfloat16"),
    "vit_preset": lambda: Dinov3HfViTConfig.from_preset("vit7b16_sat", num_hidden_layers=2),
    "convnext": lambda: convnext_config(out_features=["stage2", "stage4"], patch_size=16),
    "convnext_preset": lambda: Dinov3HfConvNextConfig.from_preset("convnext_base", pretraining_data="sat493m"),
    "classification": lambda: Dinov3HfImageClassificationConfig(
        backbone_config=vit_config(), id2label={0: "cat", 1: "dog", 2: "eel"}, use_mean_patch_token=False
    ),
    "segmentation": lambda: Dinov3HfSemanticSegmentationConfig(
        backbone_config=convnext_config(), num_labels=4, layers=[1, -1], use_batchnorm=False
    ),
    "depth": lambda: Dinov3HfDepthEstimationConfig(
        backbone_config=vit_config(num_hidden_layers=8), head_type="dpt", bins_strategy="chmv2_mixlog",
        norm_strategy="mixlog", max_depth=96.0, freeze_backbone=False,
    ),
    "dinotxt": dinotxt_config,
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_save_load_round_trip(name, tmp_path):
    config = CONFIGS[name]()
    config.save_pretrained(tmp_path)  # runs transformers' `validate()`
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is type(config)
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    if hasattr(config, "backbone_config"):
        assert type(loaded.backbone_config) is type(config.backbone_config)
        assert loaded.backbone_config.to_dict() == config.backbone_config.to_dict()
    if hasattr(config, "out_indices"):
        assert loaded.out_indices == config.out_indices and loaded.out_features == config.out_features


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Dinov3HfViTConfig(hidden_size=100, num_attention_heads=3), "hidden_size=100 is not divisible"),
        (lambda: Dinov3HfViTConfig(hidden_size=36, num_attention_heads=2), "head_dim divisible by 4; got head_dim=18"),
        (lambda: Dinov3HfViTConfig(ffn_type="gelu"), "ffn_type must be 'mlp' or 'swiglu', got 'gelu'"),
        (lambda: Dinov3HfViTConfig(rope_base=None), "either as rope_base, or as rope_min_period and rope_max_period"),
        (lambda: Dinov3HfViTConfig(rope_normalize_coords="mean"), "rope_normalize_coords must be"),
        (lambda: Dinov3HfViTConfig(rope_dtype="int8"), "rope_dtype must name a float dtype"),
        (lambda: Dinov3HfViTConfig(pretraining_data="imagenet"), "pretraining_data must be one of"),
        (lambda: Dinov3HfViTConfig.from_preset("vitz16"), "Unknown ViT preset 'vitz16'"),
        (lambda: Dinov3HfConvNextConfig(depths=[1, 1, 1]), "4 stages: depths and hidden_sizes need 4 entries"),
        (lambda: Dinov3HfConvNextConfig(depths=[1, -1, 1, 1]), "depths must be >= 0"),
        (lambda: Dinov3HfConvNextConfig(patch_size=0), "patch_size must be a positive int or None"),
        (lambda: Dinov3HfConvNextConfig.from_preset("convnext_huge"), "Unknown ConvNeXt preset"),
        (lambda: Dinov3HfSemanticSegmentationConfig(backbone_config=vit_config(), layers=[2]), r"layers=\[2\] must be"),
        (lambda: Dinov3HfDepthEstimationConfig(n_bins=1), "n_bins must be an int >= 2"),
        (lambda: Dinov3HfDepthEstimationConfig(backbone_config=convnext_config(), head_type="dpt"), "needs a ViT"),
        (lambda: Dinov3HfDinoTxtConfig(text_hidden_size=30, text_num_attention_heads=4), "text_hidden_size=30 is not"),
        (lambda: Dinov3HfDinoTxtConfig(backbone_config=convnext_config()), "dino.txt needs a ViT backbone"),
    ],
)
def test_bad_config_values_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "config, field, value, message",
    [
        (Dinov3HfViTConfig, "ffn_type", "gelu", "ffn_type must be 'mlp' or 'swiglu'"),
        (Dinov3HfConvNextConfig, "hidden_sizes", [8, 16, 0, 32], "hidden_sizes >= 1"),
    ],
)
def test_transformers_validate_runs_our_checks(config, field, value, message, tmp_path):
    """Our checks are `@strict` class validators: transformers' own `validate()` (which `save_pretrained` calls)
    runs them alongside its built-in ones, so a config edited into a bad state cannot be saved."""
    config = config()
    config.validate()
    setattr(config, field, value)
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        config.validate()
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
