"""The ViT backbone's simple feature pyramid (ViTDet, arXiv 2203.16527, Sec. 3): shapes and strides, channels,
gradients, levels recomputed by hand from the weights and the plain backbone's maps, config checks, save / reload."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_
from torch.nn import functional as F
from transformers import AutoBackbone

from dinov3_hf import Dinov3HfViTBackbone, Dinov3HfViTConfig

EPS = 1e-6  # ViTDet's LayerNorm epsilon


def config(**kwargs) -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig(
        **{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_register_tokens": 1, **kwargs}
    )


def backbones(**kwargs) -> tuple[Dinov3HfViTBackbone, Dinov3HfViTBackbone]:
    """A backbone with the pyramid and the same ViT without it (same weights), both randomised and in eval mode."""
    pyramid = randomize_(Dinov3HfViTBackbone(config(**kwargs))).eval()
    plain_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pyramid")}
    plain = Dinov3HfViTBackbone(config(**plain_kwargs)).eval()
    missing, unexpected = plain.load_state_dict(pyramid.state_dict(), strict=False)
    assert not missing and all(key.startswith("pyramid.") for key in unexpected)
    return pyramid, plain


def channel_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """LayerNorm over the channels of NCHW maps, by its formula."""
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * norm.weight[:, None, None] + norm.bias[:, None, None]


def deconv2x2(x: torch.Tensor, deconv) -> torch.Tensor:
    """A 2x2, stride-2 transposed conv: output pixel (2i + a, 2j + b) = sum_c x[c, i, j] W[c, o, a, b] + bias."""
    y = torch.einsum("nchw,coab->nohawb", x, deconv.weight)
    n, o, h, _, w, _ = y.shape
    return y.reshape(n, o, 2 * h, 2 * w) + deconv.bias[:, None, None]


def lateral_and_output(x: torch.Tensor, convs) -> torch.Tensor:
    """1x1 conv -> norm -> 3x3 conv (zero padding 1, as a sum over the 9 shifted copies) -> norm."""
    conv1, norm1, conv3, norm3 = convs
    x = channel_norm(torch.einsum("nchw,oc->nohw", x, conv1.weight[:, :, 0, 0]), norm1)
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    x = sum(
        torch.einsum("nchw,oc->nohw", padded[:, :, dy : dy + h, dx : dx + w], conv3.weight[:, :, dy, dx])
        for dy in range(3)
        for dx in range(3)
    )
    return channel_norm(x, norm3)


@pytest.mark.parametrize(
    "height, width",
    [(64, 64), (96, 128), (80, 112), (70, 90)],  # multiples of 32; of 16 only; of neither (floored to 64 x 80)
)
def test_shapes_strides_and_channels(height, width):
    backbone = Dinov3HfViTBackbone(config(out_indices=[2], pyramid_strides=[4, 8, 16, 32, 64], pyramid_channels=24))
    assert backbone.channels == [24] * 5
    with torch.inference_mode():
        maps = backbone(torch.randn(2, 3, height, width)).feature_maps
    grid_h, grid_w = height // 16, width // 16  # the patch embedding drops the pixels beyond the last full patch
    expected = [(grid_h * 4, grid_w * 4), (grid_h * 2, grid_w * 2), (grid_h, grid_w)]
    expected += [(grid_h // 2, grid_w // 2), (grid_h // 4, grid_w // 4)]  # max-pooling floors odd grids
    assert [tuple(m.shape) for m in maps] == [(2, 24, h, w) for h, w in expected]


def test_an_image_smaller_than_the_largest_stride_raises():
    backbone = Dinov3HfViTBackbone(config(out_indices=[2], pyramid_strides=[16, 32, 64]))
    with pytest.raises(ValueError, match="smaller than the pyramid's largest stride 64; pass images of at least 64"):
        backbone(torch.randn(1, 3, 48, 96))


def test_levels_match_a_hand_computation_on_the_plain_backbone_map():
    pyramid, plain = backbones(out_indices=[2], pyramid_strides=[4, 8, 16, 32], pyramid_channels=16)
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        maps = pyramid(x).feature_maps
        (source,) = plain(x).feature_maps  # the normed last-block map, stride 16
        d4a, n4, _, d4b, *convs4 = pyramid.pyramid.levels[0]
        d8, *convs8 = pyramid.pyramid.levels[1]
        convs32 = list(pyramid.pyramid.levels[3])[1:]
        hand = {
            4: lateral_and_output(deconv2x2(F.gelu(channel_norm(deconv2x2(source, d4a), n4)), d4b), convs4),
            8: lateral_and_output(deconv2x2(source, d8), convs8),
            16: lateral_and_output(source, list(pyramid.pyramid.levels[2])),
            32: lateral_and_output(source.unfold(2, 2, 2).unfold(3, 2, 2).amax((-1, -2)), convs32),
        }
    for level, stride in zip(maps, [4, 8, 16, 32]):
        torch.testing.assert_close(level, hand[stride], atol=1e-4, rtol=1e-4)


def test_one_source_stage_per_stride():
    pyramid, plain = backbones(out_indices=[0, 1, 2], pyramid_strides=[8, 16, 32], pyramid_channels=16)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        maps = pyramid(x).feature_maps
        sources = plain(x).feature_maps  # normed patch embedding, block 1, block 2
        d8, *convs8 = pyramid.pyramid.levels[0]
        convs32 = list(pyramid.pyramid.levels[2])[1:]
        hand = [
            lateral_and_output(deconv2x2(sources[0], d8), convs8),
            lateral_and_output(sources[1], list(pyramid.pyramid.levels[1])),
            lateral_and_output(F.max_pool2d(sources[2], 2), convs32),
        ]
    for level, expected in zip(maps, hand):
        torch.testing.assert_close(level, expected, atol=1e-4, rtol=1e-4)


def test_gradients_reach_the_pyramid_and_the_vit():
    backbone = randomize_(Dinov3HfViTBackbone(config(out_indices=[2], pyramid_strides=[4, 8, 16, 32])))
    maps = backbone(torch.randn(2, 3, 64, 64)).feature_maps
    sum((m * torch.randn_like(m)).mean() for m in maps).backward()
    for name, param in backbone.named_parameters():
        if name.startswith("pyramid.") or name.startswith("blocks.1."):
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_without_pyramid_the_backbone_is_unchanged():
    backbone = Dinov3HfViTBackbone(config(out_indices=[1, 2]))
    assert not hasattr(backbone, "pyramid") and backbone.channels == [32, 32]
    assert not any(name.startswith("pyramid") for name in backbone.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pyramid_strides=[4, 12]), "patch_size \\* 2\\*\\*k"),
        (dict(pyramid_strides=[2, 4]), "one of \\[4, 8, 16, 32, 64\\]"),
        (dict(pyramid_strides=[8, 128]), "one of \\[4, 8, 16, 32, 64\\]"),
        (dict(pyramid_strides=[]), "patch_size \\* 2\\*\\*k"),
        (dict(pyramid_strides=[16, 8]), "unique and ascending; pass \\[8, 16\\]"),
        (dict(pyramid_strides=[8, 8, 16]), "unique and ascending; pass \\[8, 16\\]"),
        (dict(pyramid_strides=[4, 8, 16], out_indices=[1, 2]), "pass one index .* or 3"),
        (dict(pyramid_strides=[4, 8], pyramid_channels=0), "pyramid_channels must be a positive int"),
        (dict(pyramid_strides=[16], reshape_hidden_states=False), "pass reshape_hidden_states=True"),
        (dict(pyramid_strides=[4, 64], patch_size=8), "one of \\[2, 4, 8, 16, 32\\]"),
    ],
)
def test_bad_configs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(**kwargs)


def test_save_and_reload(tmp_path):
    backbone = randomize_(
        Dinov3HfViTBackbone(config(out_indices=[1, 2], pyramid_strides=[16, 32], pyramid_channels=8))
    ).eval()
    backbone.save_pretrained(tmp_path)
    reloaded = AutoBackbone.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, Dinov3HfViTBackbone)
    assert (reloaded.config.pyramid_strides, reloaded.config.pyramid_channels) == ([16, 32], 8)
    assert reloaded.channels == [8, 8]
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        for a, b in zip(backbone(x).feature_maps, reloaded(x).feature_maps):
            assert torch.equal(a, b)


def test_pyramid_on_a_plain_checkpoint(tmp_path):
    """A pretrained ViT folder loads under a pyramid config: the ViT weights as saved, a freshly initialised pyramid
    (unit norms, zero norm biases, convs in U(-b, b) with b = 1 / sqrt(fan_in)); a bad pyramid override raises."""
    plain = randomize_(Dinov3HfViTBackbone(config(out_indices=[2]))).eval()
    plain.save_pretrained(tmp_path)
    torch.manual_seed(0)
    backbone = AutoBackbone.from_pretrained(tmp_path, pyramid_strides=[4, 8, 16, 32], pyramid_channels=16)
    for name, value in plain.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], value), name
    for name, param in backbone.pyramid.named_parameters():
        module = backbone.pyramid.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            bound = (module.in_channels * module.kernel_size[0] * module.kernel_size[1]) ** -0.5
            assert param.abs().max() <= bound * (1 + 1e-6) and param.std() > bound / 4, name  # U(-b, b): std b/√3
        else:
            assert torch.equal(param, torch.full_like(param, 1.0 if name.endswith("weight") else 0.0)), name
    with pytest.raises(ValueError, match="each stride must be patch_size"):
        AutoBackbone.from_pretrained(tmp_path, pyramid_strides=[3, 16])


def test_adding_the_pyramid_keeps_the_vit_initialisation():
    torch.manual_seed(0)
    plain = Dinov3HfViTBackbone(config(out_indices=[2]))
    torch.manual_seed(0)
    with_pyramid = Dinov3HfViTBackbone(config(out_indices=[2], pyramid_strides=[8, 16]))
    for name, value in plain.state_dict().items():
        assert torch.equal(with_pyramid.state_dict()[name], value), name
