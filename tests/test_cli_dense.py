"""`dinov3-hf depth` and `dinov3-hf segment` on a real photo with tiny saved head models: outputs at the photo's
size, raw depth equal to the model's post-processed prediction, label maps whose values are class indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from dinov3_hf import Dinov3HfImageProcessor, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import main
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfSemanticSegmentationConfig,
)

LABELS = {0: "cup", 1: "saucer", 2: "table"}


def tiny_vit() -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset(
        "vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=8
    )


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> tuple:
    path = tmp_path_factory.mktemp("photos") / "coffee.jpg"
    Image.fromarray(data.coffee()).resize((150, 100)).save(path)  # 150 x 100, not a multiple of the patch
    return path, (150, 100)


@pytest.fixture(scope="module")
def seg_model_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = Dinov3HfForSemanticSegmentation(
        Dinov3HfSemanticSegmentationConfig(backbone_config=tiny_vit(), id2label=LABELS)
    )
    with torch.no_grad():  # several classes win somewhere
        model.classifier.weight.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("seg_model")
    model.save_pretrained(path)
    Dinov3HfImageProcessor.for_model_config(model.config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def depth_model_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = Dinov3HfForDepthEstimation(
        Dinov3HfDepthEstimationConfig(backbone_config=tiny_vit(), n_bins=16, max_depth=5.0)
    )
    with torch.no_grad():
        model.conv_depth.weight.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("depth_model")
    model.save_pretrained(path)  # no processor saved: the CLI builds one from the config
    return str(path)


def test_depth_writes_coloured_png_and_raw_depth_at_photo_size(tmp_path, photo, depth_model_dir):
    path, size = photo
    assert main(["depth", str(path), "--model", depth_model_dir, "--out", str(tmp_path), "--size", "48"]) == 0
    coloured = Image.open(tmp_path / "coffee_depth.png")
    assert coloured.size == size and coloured.mode == "RGB"
    raw = np.load(tmp_path / "coffee_depth.npy")
    assert raw.shape == (size[1], size[0]) and raw.dtype == np.float32
    assert raw.min() > 0 and raw.max() <= 5.0 and raw.std() > 0

    # the raw depth is the model's prediction at --size, post-processed to the photo's size
    model = Dinov3HfForDepthEstimation.from_pretrained(depth_model_dir)
    processor = Dinov3HfImageProcessor.for_model_config(model.config)
    image = Image.open(path).convert("RGB")
    inputs = processor(image, size={"shortest_edge": 48}, return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    expected = processor.post_process_depth_estimation(output, target_sizes=[(size[1], size[0])])[0]
    np.testing.assert_allclose(raw, expected["predicted_depth"].numpy(), rtol=1e-5, atol=1e-5)

    out2 = tmp_path / "st"
    args = ["depth", str(path), "-m", depth_model_dir, "-o", str(out2), "--size", "48", "--raw-format", "safetensors"]
    assert main(args) == 0
    np.testing.assert_array_equal(load_file(out2 / "coffee_depth.safetensors")["depth"].numpy(), raw)


def test_segment_writes_label_map_and_overlay_at_photo_size(tmp_path, photo, seg_model_dir, capsys):
    path, size = photo
    assert main(["segment", str(path), "--model", seg_model_dir, "--out", str(tmp_path), "--size", "48"]) == 0
    mask = Image.open(tmp_path / "coffee_mask.png")
    overlay = Image.open(tmp_path / "coffee_overlay.png")
    assert mask.size == size and overlay.size == size
    assert mask.mode == "P" and overlay.mode == "RGB"
    labels = np.asarray(mask)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= set(LABELS) and len(np.unique(labels)) > 1
    # overlay = 0.5 * photo + 0.5 * class colour
    photo_rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert np.abs(np.asarray(overlay, dtype=np.float64) - photo_rgb).mean() > 5
    err = capsys.readouterr().err
    assert "coffee.jpg:" in err and any(name in err for name in LABELS.values())


def test_dense_commands_reject_backbones_and_wrong_tasks(tmp_path, photo, seg_model_dir, capsys):
    path, _ = photo
    backbone = tmp_path / "backbone"
    Dinov3HfViTModel(tiny_vit()).save_pretrained(backbone)
    assert main(["depth", str(path), "--model", str(backbone), "--out", str(tmp_path / "o")]) == 1
    assert "bare backbone" in capsys.readouterr().err
    assert main(["depth", str(path), "--model", seg_model_dir, "--out", str(tmp_path / "o")]) == 1
    assert "not a depth-estimation model" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.jpg"), "--model", seg_model_dir, "--out", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err
