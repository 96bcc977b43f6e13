"""Mixed-size batches: the image processor pads images of different sizes into one batch with a `pixel_mask`, and
the ViT and ConvNeXt give every image of that batch the output of a forward on the image alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import randomize_

from dinov3_hf import (
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
    Dinov3HfImageProcessor,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)

VIT_SIZES = [(32, 48), (64, 64), (48, 80)]  # patch 16: grids 2x3, 4x4, 3x5 in a padded 4x5 grid
CONVNEXT_SIZES = [(32, 64), (96, 64), (64, 128)]  # stride 32: grids 1x2, 3x2, 2x4 in a padded 3x4 grid


def vit(**overrides) -> Dinov3HfViTModel:
    config = Dinov3HfViTConfig.from_preset(
        "vits16", **{"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, **overrides}
    )
    assert config.num_register_tokens == 4
    return randomize_(Dinov3HfViTModel(config), std=1 / math.sqrt(64)).eval()


def convnext() -> Dinov3HfConvNextModel:
    config = Dinov3HfConvNextConfig(depths=[1, 1, 2, 1], hidden_sizes=[16, 24, 32, 40])
    return randomize_(Dinov3HfConvNextModel(config), std=0.1).eval()


def images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=gen) for h, w in sizes]


def padded(pixels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch by hand: zeros at the bottom and right, mask 1 on each image's pixels."""
    height, width = max(x.shape[1] for x in pixels), max(x.shape[2] for x in pixels)
    batch = torch.zeros(len(pixels), 3, height, width)
    mask = torch.zeros(len(pixels), height, width, dtype=torch.long)
    for i, x in enumerate(pixels):
        batch[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, : x.shape[1], : x.shape[2]] = 1
    return batch, mask


def assert_outputs_close(got, want, atol: float = 1e-5) -> None:
    """Every field of two outputs of one image: same fields, shapes and values (nested tuples included)."""
    assert list(got.keys()) == list(want.keys())
    for key in want.keys():
        a, b = (got[key],), (want[key],)
        if isinstance(want[key], tuple):
            a, b = got[key], want[key]
            assert len(a) == len(b), key
        for x, y in zip(a, b):
            assert x.shape == y.shape, (key, x.shape, y.shape)
            torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=lambda m: f"{key}: {m}")


# -- ViT ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "implementation, output_attentions",
    [("sdpa", False), ("sdpa", True), ("eager", False), ("eager", True), ("flex_attention", False)],
)
def test_vit_mixed_batch_equals_separate_forwards(implementation, output_attentions):
    """Every field, hidden states and attention probabilities included, per image as alone under SDPA (sdpa with
    output_attentions runs eager attention, so the mask must follow the implementation actually used). The
    references use SDPA, which the other tests check against transformers, so flex attention compiles once."""
    model = vit()
    pixels = images(VIT_SIZES)
    batch, mask = padded(pixels)
    kwargs = dict(output_hidden_states=True, output_attentions=output_attentions)
    with torch.no_grad():
        alone = [model(x[None], **kwargs) for x in pixels]
        naive = model(batch, **kwargs)  # zero padding without the mask: what plain batching would give
        model.set_attn_implementation(implementation)
        out = model(batch, pixel_mask=mask, **kwargs)
    assert out.patch_mask.shape == (3, 4, 5) and out.patch_mask.dtype == torch.bool
    assert out.patch_mask.sum((1, 2)).tolist() == [6, 16, 15]
    assert out.last_hidden_state.shape == (3, 1 + 4 + 20, 64)
    per_image = out.unpad()
    assert len(per_image) == 3
    for got, want in zip(per_image, alone):
        assert got.patch_mask is None and got.last_hidden_state.shape == want.last_hidden_state.shape
        assert_outputs_close(got, want)
    # the baseline a user would get without pixel_mask is far off on the padded images (the full-size one, 64x64,
    # differs too: its RoPE coordinates and its keys are those of the padded 4x5 grid)
    for i, want in enumerate(alone):
        cls_error = (naive.pooler_output[i] - want.pooler_output[0]).abs().max()
        assert cls_error > 1e-2, (i, cls_error)


def test_vit_unpad_without_pixel_mask_slices_per_image():
    model = vit()
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        alone = [model(x[i : i + 1], output_hidden_states=True) for i in range(2)]
    assert out.patch_mask is None and "patch_mask" not in out.keys() and len(out.to_tuple()) == 6
    for got, want in zip(out.unpad(), alone):
        assert_outputs_close(got, want)  # batch 2 vs batch 1: the gemm blocking differs with threads


def test_vit_padded_rope_scatters_each_image_grid():
    """forward_padded: each image's block holds the (sin, cos) of its own grid, the padding no rotation."""
    rope = vit().rope_embed
    sin, cos = rope.forward_padded([(2, 3), (4, 4)], 4, 5)
    assert sin.shape == cos.shape == (2, 1, 20, rope.head_dim)
    for b, (h, w) in enumerate([(2, 3), (4, 4)]):
        own_sin, own_cos = rope(h, w)
        grid_sin, grid_cos = sin[b, 0].view(4, 5, -1), cos[b, 0].view(4, 5, -1)
        assert torch.equal(grid_sin[:h, :w].reshape(h * w, -1), own_sin)
        assert torch.equal(grid_cos[:h, :w].reshape(h * w, -1), own_cos)
        outside = torch.ones(4, 5, dtype=torch.bool)
        outside[:h, :w] = False
        assert torch.equal(grid_sin[outside], torch.zeros_like(grid_sin[outside]))
        assert torch.equal(grid_cos[outside], torch.ones_like(grid_cos[outside]))


def test_vit_pixel_mask_errors():
    model = vit()
    batch, mask = padded(images(VIT_SIZES))
    holes = mask.clone()
    holes[1, 0, 0] = 0
    with pytest.raises(ValueError, match="image 1 does not mark a top-left rectangle"):
        model(batch, pixel_mask=holes)
    odd = mask.clone()
    odd[0] = 0
    odd[0, :32, :40] = 1  # 32 x 40 real pixels: 40 is no multiple of 16
    with pytest.raises(ValueError, match=r"Image 0 has 32x40 real pixels .* multiples of the model's stride 16"):
        model(batch, pixel_mask=odd)
    with pytest.raises(ValueError, match=r"pass the pixel_mask the image processor returns with do_pad=True"):
        model(batch, pixel_mask=mask[:, :32])
    with pytest.raises(ValueError, match="not a list of crop batches"):
        model([batch, batch], pixel_mask=mask)
    with pytest.raises(TypeError, match="unexpected keyword argument 'pixel_mask'"):  # the backbone view does not pad
        from dinov3_hf import Dinov3HfViTBackbone

        Dinov3HfViTBackbone(model.config)(batch, pixel_mask=mask)
    with pytest.raises(ValueError, match=r"stochastic depth in training \(drop_path_rate=0.1\)"):
        vit(drop_path_rate=0.1).train()(batch, pixel_mask=mask)


# -- ConvNeXt -----------------------------------------------------------------------------------------------------


def test_convnext_mixed_batch_equals_separate_forwards():
    model = convnext()
    pixels = images(CONVNEXT_SIZES)
    batch, mask = padded(pixels)
    with torch.no_grad():
        out = model(batch, pixel_mask=mask, output_hidden_states=True)
        alone = [model(x[None], output_hidden_states=True) for x in pixels]
        naive = model(batch)
    assert out.patch_mask.shape == (3, 3, 4) and out.patch_mask.sum((1, 2)).tolist() == [2, 6, 8]
    for got, want in zip(out.unpad(), alone):
        assert_outputs_close(got, want)
    for i, want in enumerate(alone):  # without the mask: the padding leaks in through the 7x7 convs and the pool
        assert (naive.pooler_output[i] - want.pooler_output[0]).abs().max() > 1e-2


def test_convnext_pixel_mask_needs_multiples_of_the_total_stride():
    model = convnext()
    batch, mask = padded(images([(48, 64), (64, 64)]))
    with pytest.raises(ValueError, match=r"Image 0 has 48x64 real pixels .* multiples of the model's stride 32"):
        model(batch, pixel_mask=mask)


# -- the image processor ------------------------------------------------------------------------------------------


def test_processor_pads_mixed_sizes_with_a_pixel_mask():
    """pixel_mask is 1 exactly on each image's own pixels, which equal the image processed alone; padding is 0."""
    gen = np.random.default_rng(0)
    photos = [gen.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 60), (64, 32), (30, 30)]]
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 32})
    with pytest.raises(ValueError, match="Pass do_pad=True to pad them into one batch with a pixel_mask"):
        processor(photos, return_tensors="pt")
    assert "pixel_mask" not in processor(photos[0], return_tensors="pt")  # off by default
    batch = processor(photos, return_tensors="pt", do_pad=True)
    assert batch.pixel_values.shape == (3, 3, 64, 48) and batch.pixel_mask.shape == (3, 64, 48)
    assert batch.pixel_mask.dtype == torch.int64
    for i, photo in enumerate(photos):
        alone = processor(photo, return_tensors="pt").pixel_values[0]
        h, w = alone.shape[-2:]
        expected_mask = torch.zeros(64, 48, dtype=torch.int64)
        expected_mask[:h, :w] = 1
        assert torch.equal(batch.pixel_mask[i], expected_mask)
        assert torch.equal(batch.pixel_values[i, :, :h, :w], alone)
        assert torch.count_nonzero(batch.pixel_values[i] * (1 - expected_mask)) == 0
    as_numpy = Dinov3HfImageProcessor(size={"shortest_edge": 32}, do_pad=True)(photos, return_tensors="np")
    assert isinstance(as_numpy.pixel_mask, np.ndarray)
    np.testing.assert_array_equal(as_numpy.pixel_mask, batch.pixel_mask.numpy())
    np.testing.assert_array_equal(as_numpy.pixel_values, batch.pixel_values.numpy())
    as_list = processor(photos, do_pad=True)
    assert [tuple(m.shape) for m in as_list.pixel_mask] == [(64, 48)] * 3
    with pytest.raises(ValueError, match="do_pad must be True or False"):
        processor(photos, do_pad="yes")


def test_processor_batch_runs_in_one_forward_as_alone():
    """Processor to model: a padded batch of photos of three aspect ratios, each image as processed and run alone."""
    model = vit()
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"shortest_edge": 32})
    gen = np.random.default_rng(1)
    photos = [gen.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 60), (64, 32), (30, 30)]]
    with torch.no_grad():
        out = model(**processor(photos, return_tensors="pt", do_pad=True))
        for got, photo in zip(out.unpad(), photos):
            assert_outputs_close(got, model(**processor(photo, return_tensors="pt")))
