"""`pipeline("image-feature-extraction")` on our backbones: a batch of images of different sizes runs as one padded
forward, and each image's result equals the model on that image alone; other models run as in transformers."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import randomize_
from PIL import Image
from transformers import DINOv3ViTModel, pipeline

from dinov3_hf import (
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
    Dinov3HfImageProcessor,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)
from dinov3_hf.convert import export_model
from dinov3_hf.pipelines import Dinov3HfImageFeatureExtractionPipeline

# Eight photos; at shortest_edge 32 (patch 16) they give 2x3, 2x2, 5x2, 2x9, 2x2, 3x2, 2x4 and 2x5 patch grids, so
# every batch of 3 (and of 2, and the batch of 8) mixes sizes.
SIZES = [(30, 50), (64, 64), (100, 40), (20, 90), (50, 50), (45, 30), (32, 64), (40, 100)]


def photos(seed: int = 0) -> list[Image.Image]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()) for h, w in SIZES
    ]


def vit() -> Dinov3HfViTModel:
    config = Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=2, hidden_size=64, num_attention_heads=2)
    return randomize_(Dinov3HfViTModel(config), std=1 / math.sqrt(64)).eval()


def record_forwards(model: torch.nn.Module) -> list[tuple[int, bool]]:
    """(batch size, whether a pixel_mask came) of every forward of `model`."""
    calls: list[tuple[int, bool]] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((len(kwargs["pixel_values"]), "pixel_mask" in kwargs)),
        with_kwargs=True,
    )
    return calls


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_vit_mixed_sizes_run_as_one_padded_forward_per_batch(tmp_path, batch_size):
    model = vit()
    model.save_pretrained(tmp_path)
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"shortest_edge": 32})
    processor.save_pretrained(tmp_path)
    images = photos()
    extractor = pipeline("image-feature-extraction", model=str(tmp_path))
    assert type(extractor) is Dinov3HfImageFeatureExtractionPipeline and extractor.pads_mixed_sizes
    calls = record_forwards(extractor.model)
    features = extractor(images, batch_size=batch_size, return_tensors=True)
    pooled = extractor(images, batch_size=batch_size, pool=True, return_tensors=True)
    batches = [min(batch_size, len(images) - start) for start in range(0, len(images), batch_size)]
    assert calls == [(n, batch_size > 1) for n in batches] * 2  # one forward per batch, padded when batched
    assert len(features) == len(pooled) == len(images)
    for image, feature, pool in zip(images, features, pooled):
        with torch.no_grad():
            expected = extractor.model(**processor(image, return_tensors="pt"))
        assert feature.shape == expected.last_hidden_state.shape  # (1, 1 + 4 + own grid, 64)
        torch.testing.assert_close(feature, expected.last_hidden_state, atol=1e-5, rtol=0)
        torch.testing.assert_close(pool, expected.pooler_output, atol=1e-5, rtol=0)
    assert [feature.shape[1] - 5 for feature in features] == [6, 4, 10, 18, 4, 6, 8, 10]


def test_convnext_mixed_sizes_through_the_pipeline(tmp_path):
    config = Dinov3HfConvNextConfig(depths=[1, 1, 2, 1], hidden_sizes=[16, 24, 32, 40])
    model = randomize_(Dinov3HfConvNextModel(config), std=0.1).eval()
    model.save_pretrained(tmp_path)
    processor = Dinov3HfImageProcessor.for_model_config(config, size={"shortest_edge": 64})  # multiples of 32
    processor.save_pretrained(tmp_path)
    images = photos(seed=1)[:4]
    extractor = pipeline("image-feature-extraction", model=str(tmp_path))
    calls = record_forwards(extractor.model)
    features = extractor(images, batch_size=4, return_tensors=True)
    assert calls == [(4, True)]
    for image, feature in zip(images, features):
        with torch.no_grad():
            expected = extractor.model(**processor(image, return_tensors="pt")).last_hidden_state
        assert feature.shape == expected.shape
        torch.testing.assert_close(feature, expected, atol=1e-5, rtol=0)


def test_other_models_batch_as_in_transformers(tmp_path):
    """transformers' own DINOv3 ViT gets transformers' collate (no pixel_mask) and per-sample slicing."""
    ours = vit()
    export_model(ours, tmp_path, to="hf")
    processor = Dinov3HfImageProcessor.for_model_config(ours.config, size={"height": 32, "width": 48})
    extractor = pipeline("image-feature-extraction", model=str(tmp_path), image_processor=processor)
    assert isinstance(extractor.model, DINOv3ViTModel) and not extractor.pads_mixed_sizes
    calls = record_forwards(extractor.model)
    images = photos()[:3]
    features = extractor(images, batch_size=3, return_tensors=True)
    assert calls == [(3, False)]
    for image, feature in zip(images, features):
        with torch.no_grad():
            expected = ours(**processor(image, return_tensors="pt")).last_hidden_state
        torch.testing.assert_close(feature, expected, atol=1e-5, rtol=0)
