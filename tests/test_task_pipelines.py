"""transformers pipelines on saved task models: image-classification, image-segmentation, depth-estimation,
with outputs at the input image's size; the processor's post-processing; unsupported image modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from transformers import pipeline

from dinov3_hf import Dinov3HfConvNextConfig, Dinov3HfImageProcessor, Dinov3HfViTConfig
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
)

LABELS = {0: "sky", 1: "person", 2: "rocket"}


def vit_config() -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset("vits16", hidden_size=64, num_attention_heads=2, num_hidden_layers=2)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((60, 44))  # W x H = 60 x 44, not a multiple of 16


def save(model, path) -> str:
    """The model and its processor (32 x 48 inputs) in one folder, as a pipeline loads them."""
    model.save_pretrained(path)
    Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 32, "width": 48}).save_pretrained(path)
    return str(path)


def classifier() -> Dinov3HfForImageClassification:
    config = Dinov3HfImageClassificationConfig(backbone_config=vit_config(), id2label=LABELS)
    return Dinov3HfForImageClassification(config)


def test_image_classification_pipeline(tmp_path, photo):
    model = classifier()
    classify = pipeline("image-classification", model=save(model, tmp_path))
    assert isinstance(classify.model, Dinov3HfForImageClassification)
    out = classify(photo)
    assert {o["label"] for o in out} == set(LABELS.values())
    assert sum(o["score"] for o in out) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("backbone", ["vit", "convnext"])
def test_image_segmentation_pipeline_returns_masks_at_image_size(tmp_path, photo, backbone):
    if backbone == "vit":
        backbone_config = vit_config()
    else:
        backbone_config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])
    config = Dinov3HfSemanticSegmentationConfig(backbone_config=backbone_config, id2label=LABELS)
    model = Dinov3HfForSemanticSegmentation(config)
    with torch.no_grad():  # make several classes win somewhere
        model.classifier.weight.normal_(0, 1.0)
    segment = pipeline("image-segmentation", model=save(model, tmp_path))
    assert isinstance(segment.model, Dinov3HfForSemanticSegmentation)
    out = segment(photo)
    assert out and all(o["mask"].size == photo.size and o["score"] is None for o in out)
    assert {o["label"] for o in out} <= set(LABELS.values())
    coverage = sum(np.asarray(o["mask"], dtype=np.int64) // 255 for o in out)
    assert np.all(coverage == 1)  # the masks partition the image


def test_depth_estimation_pipeline_matches_model_and_post_processing(tmp_path, photo):
    model = Dinov3HfForDepthEstimation(Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), max_depth=5.0))
    with torch.no_grad():
        model.conv_depth.weight.normal_(0, 1.0)
    path = save(model, tmp_path)
    estimate = pipeline("depth-estimation", model=path)
    out = estimate(photo)
    assert out["predicted_depth"].shape == (44, 60) and out["depth"].size == photo.size
    processor = Dinov3HfImageProcessor.from_pretrained(path)
    with torch.no_grad():
        outputs = estimate.model(**processor(photo, return_tensors="pt"))
    expected = processor.post_process_depth_estimation(outputs, target_sizes=[(44, 60)])[0]["predicted_depth"]
    torch.testing.assert_close(out["predicted_depth"], expected)
    assert 0 < expected.min() and expected.max() < 5.0


def test_post_processing_shapes_and_errors():
    processor = Dinov3HfImageProcessor()
    assert not hasattr(processor, "post_process_panoptic_segmentation")
    assert not hasattr(processor, "post_process_instance_segmentation")
    logits = torch.zeros(2, 3, 2, 3)
    logits[0, 2, :, 1:] = 1.0
    maps = processor.post_process_semantic_segmentation(logits)
    assert [m.shape for m in maps] == [(2, 3), (2, 3)]
    assert maps[0].tolist() == [[0, 2, 2], [0, 2, 2]] and maps[0].dtype == torch.long
    resized = processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(4, 6), (5, 7)])
    assert [m.shape for m in resized] == [(4, 6), (5, 7)]
    with pytest.raises(ValueError, match="2 target_sizes for a batch of 1"):
        processor.post_process_semantic_segmentation(logits[:1], target_sizes=[(4, 6), (4, 6)])
    depth = processor.post_process_depth_estimation(torch.ones(1, 2, 3), target_sizes=torch.tensor([[8, 9]]))
    assert depth[0]["predicted_depth"].shape == (8, 9) and torch.all(depth[0]["predicted_depth"] == 1)


def test_unsupported_image_mode(tmp_path):
    image = Image.new("La", (32, 32))
    with pytest.raises(ValueError, match="Unsupported PIL image mode 'La'"):
        Dinov3HfImageProcessor()(image)
    model = classifier()
    classify = pipeline("image-classification", model=save(model, tmp_path))
    # the pipeline converts to RGB itself first (transformers.image_utils.load_image); PIL refuses this mode
    with pytest.raises(ValueError, match="La"):
        classify(image)
