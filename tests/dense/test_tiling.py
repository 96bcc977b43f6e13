"""Tiled inference (`dinov3_hf.dense.tiling`): one window is the full forward exactly; overlapping windows are
averaged with the weights of a hand computation (fake models whose outputs encode positions); a real model's
overlaps are the mean of its forwards on the crops; clear errors; the `--tile` option of the CLI commands."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from PIL import Image
from safetensors import safe_open
from skimage import data
from torch import nn

from dinov3_hf import Dinov3HfImageProcessor, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import main
from dinov3_hf.dense import tile_boxes, tiled_patch_features, tiled_predict
from dinov3_hf.models.convnext import Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfSemanticSegmentationConfig,
)
from dinov3_hf.viz import pca_image

PATCH = 8


def tiny_vit_config() -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset(
        "vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=PATCH
    )


@pytest.fixture(scope="module")
def vit() -> Dinov3HfViTModel:
    torch.manual_seed(0)
    return randomize_(Dinov3HfViTModel(tiny_vit_config())).eval()  # LayerScale ~0.5: tokens depend on context


@pytest.fixture(scope="module")
def convnext() -> Dinov3HfConvNextModel:
    torch.manual_seed(0)
    config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])
    return randomize_(Dinov3HfConvNextModel(config)).eval()


@pytest.fixture(scope="module")
def photo_pixels() -> torch.Tensor:
    """scikit-image's coffee photo as a normalised (1, 3, 64, 96) input."""
    processor = Dinov3HfImageProcessor.for_model_config(tiny_vit_config())
    return processor(data.coffee(), size={"height": 64, "width": 96}, return_tensors="pt").pixel_values


# -- one window = the full forward -------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [96, 512])
def test_one_window_equals_the_full_vit_forward_exactly(vit, photo_pixels, tile):
    x = torch.cat([photo_pixels, photo_pixels.flip(-1)])
    with torch.no_grad():
        full = vit(pixel_values=x)
    tiled = tiled_patch_features(vit, x, tile=tile, overlap=32)
    assert tiled.boxes == [(0, 0, 64, 96)] and tiled.grid == (8, 12)
    assert torch.equal(tiled.patch_tokens, full.patch_tokens)
    assert torch.equal(tiled.pooler_output, full.pooler_output)
    assert torch.equal(tiled.register_tokens, full.register_tokens)
    assert torch.equal(tiled.feature_map(), full.patch_tokens.unflatten(1, (8, 12)).permute(0, 3, 1, 2))


def test_one_window_equals_the_full_convnext_forward_exactly(convnext, photo_pixels):
    with torch.no_grad():
        full = convnext(pixel_values=photo_pixels)
    tiled = tiled_patch_features(convnext, photo_pixels, tile=128)
    assert tiled.grid == (2, 3) and tiled.register_tokens is None
    assert torch.equal(tiled.patch_tokens, full.patch_tokens)
    assert torch.equal(tiled.pooler_output, full.pooler_output)


# -- overlap averaging: a hand computation -----------------------------------------------------------------------------


class PositionBackbone(nn.Module):
    """A fake backbone with output stride 2: patch features [absolute patch index (read from the pixels), row in the
    window, column in the window, 1]; CLS = the absolute index of the window's top-left patch, one register = that
    of its bottom-right patch."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(output_stride=2)

    def forward(self, pixel_values):
        index = pixel_values[:, 0, ::2, ::2]  # the inputs hold each patch's absolute index in its pixels
        n, rows, cols = index.shape
        row = torch.arange(rows, dtype=index.dtype).view(1, rows, 1).expand(n, rows, cols)
        col = torch.arange(cols, dtype=index.dtype).view(1, 1, cols).expand(n, rows, cols)
        patches = torch.stack([index, row, col, torch.ones_like(index)], dim=-1).flatten(1, 2)
        return SimpleNamespace(
            patch_tokens=patches, pooler_output=index[:, :1, 0], register_tokens=index[:, -1:, -1:]
        )


def test_overlapping_windows_average_with_hand_computed_weights():
    # a 6 x 5 patch grid (12 x 10 pixels at stride 2), windows of 4 x 4 patches every 2 patches (tile 8, overlap 4):
    # rows start at patches 0, 2 (the last flush with the bottom); columns at 0 and 1 (1 = 5 - 4, flush with the
    # right border, although the step is 2)
    index = torch.arange(30.0).view(6, 5)
    pixels = torch.stack([index, index + 100]).repeat_interleave(2, 1).repeat_interleave(2, 2)
    pixels = pixels[:, None].expand(2, 3, 12, 10)
    tiled = tiled_patch_features(PositionBackbone(), pixels, tile=8, overlap=4, batch_size=3)
    assert tiled.boxes == [(0, 0, 8, 8), (0, 2, 8, 8), (4, 0, 8, 8), (4, 2, 8, 8)]
    features = tiled.patch_tokens.unflatten(1, (6, 5))
    assert features.shape == (2, 6, 5, 4)

    # the absolute index is the same in every window, so its mean is itself
    torch.testing.assert_close(features[..., 0], torch.stack([index, index + 100]), rtol=0, atol=0)
    # row in the window: patch rows 0, 1 lie in the first window row only (rows 0, 1), rows 2, 3 in both (2 and 0,
    # 3 and 1), rows 4, 5 in the second only (2, 3)
    rows = torch.tensor([0, 1, (2 + 0) / 2, (3 + 1) / 2, 2, 3]).view(6, 1).expand(6, 5)
    # column in the window: column 0 lies in the first window column only, 1..3 in both (c and c - 1), 4 in the
    # second only (4 - 1)
    cols = torch.tensor([0, (1 + 0) / 2, (2 + 1) / 2, (3 + 2) / 2, 3]).view(1, 5).expand(6, 5)
    torch.testing.assert_close(features[..., 1], rows.expand(2, 6, 5), rtol=0, atol=0)
    torch.testing.assert_close(features[..., 2], cols.expand(2, 6, 5), rtol=0, atol=0)
    torch.testing.assert_close(features[..., 3], torch.ones(2, 6, 5), rtol=0, atol=0)  # normalised by the count
    # CLS: mean of the windows' top-left indices 0, 1, 10, 11; register: of the bottom-right ones 18, 19, 28, 29
    torch.testing.assert_close(tiled.pooler_output, torch.tensor([[5.5], [105.5]]), rtol=0, atol=0)
    torch.testing.assert_close(tiled.register_tokens, torch.tensor([[[23.5]], [[123.5]]]), rtol=0, atol=0)


def test_real_vit_overlaps_are_the_mean_of_the_crop_forwards(vit, photo_pixels):
    # 64 x 96 input, tile 64, overlap 32: windows at columns 0 and 32 px (patch columns 0..7 and 4..11)
    tiled = tiled_patch_features(vit, photo_pixels, tile=64, overlap=32, batch_size=2)
    assert tiled.boxes == [(0, 0, 64, 64), (0, 32, 64, 64)] and tiled.grid == (8, 12)
    with torch.no_grad():
        left = vit(pixel_values=photo_pixels[..., :64])
        right = vit(pixel_values=photo_pixels[..., 32:])
    maps = tiled.patch_tokens.unflatten(1, (8, 12))
    left_map, right_map = left.patch_tokens.unflatten(1, (8, 8)), right.patch_tokens.unflatten(1, (8, 8))
    torch.testing.assert_close(maps[:, :, :4], left_map[:, :, :4])
    torch.testing.assert_close(maps[:, :, 8:], right_map[:, :, 4:])
    shared = (left_map[:, :, 4:] + right_map[:, :, :4]) / 2
    torch.testing.assert_close(maps[:, :, 4:8], shared)
    assert (left_map[:, :, 4:] - right_map[:, :, :4]).abs().max() > 1e-2  # the two windows disagree there
    torch.testing.assert_close(tiled.pooler_output, (left.pooler_output + right.pooler_output) / 2)


def test_batch_size_does_not_change_the_result(vit, photo_pixels):
    one = tiled_patch_features(vit, photo_pixels, tile=32, overlap=16, batch_size=1)
    many = tiled_patch_features(vit, photo_pixels, tile=32, overlap=16, batch_size=4)
    assert len(one.boxes) == 3 * 5
    torch.testing.assert_close(many.patch_tokens, one.patch_tokens)
    torch.testing.assert_close(many.pooler_output, one.pooler_output)


# -- dense heads: pixel-level averaging --------------------------------------------------------------------------------


class ConstantHead(nn.Module):
    """A fake dense model with output stride 2 whose prediction is constant over a window: the value of its top-left
    pixel, as `logits` (B, 1, h / 2, w / 2) or as `predicted_depth` (B, h, w)."""

    def __init__(self, field: str):
        super().__init__()
        self.field = field
        self.config = SimpleNamespace(output_stride=2)

    def forward(self, pixel_values):
        corner = pixel_values[:, 0, :1, :1]
        height, width = pixel_values.shape[-2:]
        if self.field == "logits":
            return SimpleNamespace(logits=corner[:, None].expand(-1, 1, height // 2, width // 2))
        return SimpleNamespace(predicted_depth=corner.expand(-1, height, width))


@pytest.mark.parametrize("field", ["logits", "predicted_depth"])
def test_dense_predictions_average_at_pixel_level_with_hand_computed_weights(field):
    # pixel (y, x) of an 8 x 6 input holds 6 y + x; windows of 4 px every 2 px start at rows 0, 2, 4 and columns 0, 2,
    # so pixel (y, x) gets the mean of 6 t + l over the windows (t, l) that cover it: 6 mean(t) + mean(l)
    pixels = (6 * torch.arange(8.0).view(8, 1) + torch.arange(6.0)).expand(1, 3, 8, 6)
    output = tiled_predict(ConstantHead(field), pixels, tile=4, overlap=2)
    mean_top = torch.tensor([0, 0, (0 + 2) / 2, (0 + 2) / 2, (2 + 4) / 2, (2 + 4) / 2, 4, 4]).view(8, 1)
    mean_left = torch.tensor([0, 0, (0 + 2) / 2, (0 + 2) / 2, 2, 2])
    expected = 6 * mean_top + mean_left
    if field == "logits":
        assert output.logits.shape == (1, 1, 8, 6)
        torch.testing.assert_close(output.logits[0, 0], expected)
    else:
        assert output.predicted_depth.shape == (1, 8, 6)
        torch.testing.assert_close(output.predicted_depth[0], expected)


@pytest.fixture(scope="module")
def seg_model() -> Dinov3HfForSemanticSegmentation:
    torch.manual_seed(0)
    config = Dinov3HfSemanticSegmentationConfig(
        backbone_config=tiny_vit_config(), id2label={0: "cup", 1: "saucer", 2: "table"}
    )
    model = Dinov3HfForSemanticSegmentation(config).eval()
    with torch.no_grad():  # several classes win somewhere
        model.classifier.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module")
def depth_model() -> Dinov3HfForDepthEstimation:
    torch.manual_seed(0)
    config = Dinov3HfDepthEstimationConfig(backbone_config=tiny_vit_config(), n_bins=16, max_depth=5.0)
    model = Dinov3HfForDepthEstimation(config).eval()
    with torch.no_grad():
        model.conv_depth.weight.normal_(0, 1.0)
    return model


def test_one_window_equals_the_full_head_forward(seg_model, depth_model, photo_pixels):
    with torch.no_grad():
        logits = seg_model(pixel_values=photo_pixels).logits
        depth = depth_model(pixel_values=photo_pixels).predicted_depth
    tiled_logits = tiled_predict(seg_model, photo_pixels, tile=128).logits
    # Meta's slide_inference resizes each window's logits to the window's pixels before averaging
    assert torch.equal(tiled_logits, F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False))
    assert torch.equal(tiled_predict(depth_model, photo_pixels, tile=128).predicted_depth, depth)


def test_tiled_predict_rejects_a_backbone(vit, photo_pixels):
    with pytest.raises(ValueError, match="without `logits` or `predicted_depth`"):
        tiled_predict(vit, photo_pixels, tile=32)


# -- errors ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "batch_size", "message"),
    [
        ((1, 3, 64, 96), 20, 8, 1, "tile must be a positive multiple of the model's output stride 8, got 20"),
        ((1, 3, 64, 96), 0, 0, 1, "tile must be a positive multiple"),
        ((1, 3, 64, 96), 32, 4, 1, "overlap must be a multiple of the model's output stride 8"),
        ((1, 3, 64, 96), 32, -8, 1, "overlap must be a multiple"),
        ((1, 3, 64, 96), 32, 32, 1, "overlap must be smaller than tile"),
        ((1, 3, 60, 96), 32, 8, 1, "not a multiple of the model's output stride 8"),
        ((1, 3, 64, 96), 32, 8, 0, "batch_size is the number of windows per forward"),
        ((3, 64, 96), 32, 8, 1, r"pixel_values must be \[B, 3, H, W\]"),
    ],
)
def test_bad_arguments_give_clear_errors(vit, shape, tile, overlap, batch_size, message):
    with pytest.raises(ValueError, match=message):
        tiled_patch_features(vit, torch.zeros(shape), tile=tile, overlap=overlap, batch_size=batch_size)


def test_default_overlap_is_a_quarter_of_the_tile_snapped_to_the_stride(vit, photo_pixels):
    assert tile_boxes(64, 96, 32, 8, PATCH) == tiled_patch_features(vit, photo_pixels, tile=32).boxes
    assert tile_boxes(64, 96, 40, 8, PATCH) == tiled_patch_features(vit, photo_pixels, tile=40).boxes  # 10 -> 8


# -- CLI ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "coffee.png"
    Image.fromarray(data.coffee()).resize((150, 100)).save(path)  # becomes a 96 x 144 input at --size 96
    return path


def save_with_processor(model, folder, **processor_settings) -> str:
    model.save_pretrained(folder)
    Dinov3HfImageProcessor.for_model_config(model.config, **processor_settings).save_pretrained(folder)
    return str(folder)


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_cli_features_tile_writes_the_tiled_features(vit, photo, tmp_path, capsys):
    # a processor whose token limit (64) the 12 x 18 grid exceeds: --tile lifts it
    model_dir = save_with_processor(vit, tmp_path / "vit", max_tokens=64)
    base = ["features", str(photo), "--model", model_dir, "--size", "96"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 1
    assert "max_tokens=64" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "out"), "--tile", "48", "--tile-overlap", "16"]) == 0

    tensors, metadata = read(tmp_path / "out" / "coffee.safetensors")
    assert metadata["tiling"] == "48 px windows, 16 px overlap"
    assert (metadata["grid_height"], metadata["grid_width"]) == ("12", "18")
    processor = Dinov3HfImageProcessor.from_pretrained(model_dir)
    image = Image.open(photo)
    pixel_values = processor(
        image, size={"shortest_edge": 96}, do_center_crop=False, max_tokens=None, return_tensors="pt"
    ).pixel_values
    expected = tiled_patch_features(vit, pixel_values, tile=48, overlap=16)
    assert len(expected.boxes) == 3 * 4  # rows start at 0, 32, 48 (flush); columns at 0, 32, 64, 96 (flush)
    torch.testing.assert_close(tensors["patch_tokens"], expected.patch_tokens[0].unflatten(0, (12, 18)))
    torch.testing.assert_close(tensors["cls"], expected.pooler_output[0])
    torch.testing.assert_close(tensors["registers"], expected.register_tokens[0])
    with torch.no_grad():  # and differ from the full forward's
        full = vit(pixel_values=pixel_values).patch_tokens[0].unflatten(0, (12, 18))
    assert (tensors["patch_tokens"] - full).abs().max() > 1e-2

    picture = np.asarray(Image.open(tmp_path / "out" / "coffee_pca.png"))
    assert picture.shape == (100, 150, 3) and picture.std() > 0
    np.testing.assert_array_equal(picture, np.asarray(pca_image(tensors["patch_tokens"], (12, 18), size=(150, 100))))

    # the default overlap: a quarter of 48 = 12, snapped down to the stride 8
    assert main([*base, "--out", str(tmp_path / "default"), "--tile", "48"]) == 0
    assert read(tmp_path / "default" / "coffee.safetensors")[1]["tiling"] == "48 px windows, 8 px overlap"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tile", "50"], "multiple of the model's output stride 8"),
        (["--tile", "48", "--tile-overlap", "48"], "overlap must be smaller than tile"),
        (["--tile-overlap", "16"], "--tile-overlap needs --tile SIZE"),
    ],
)
def test_cli_tile_errors(vit, photo, tmp_path, capsys, options, message):
    model_dir = save_with_processor(vit, tmp_path / "vit")
    argv = ["features", str(photo), "--model", model_dir, "--out", str(tmp_path / "out"), *options]
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_segment_and_depth_tile_write_the_tiled_predictions(seg_model, depth_model, photo, tmp_path):
    seg_dir = save_with_processor(seg_model, tmp_path / "seg")
    depth_dir = save_with_processor(depth_model, tmp_path / "depth")
    tile = ["--size", "96", "--tile", "48", "--tile-overlap", "16"]
    assert main(["segment", str(photo), "--model", seg_dir, "--out", str(tmp_path / "s"), *tile]) == 0
    assert main(["depth", str(photo), "--model", depth_dir, "--out", str(tmp_path / "d"), *tile]) == 0

    processor = Dinov3HfImageProcessor.from_pretrained(seg_dir)
    image = Image.open(photo).convert("RGB")
    pixel_values = processor(image, size={"shortest_edge": 96}, return_tensors="pt").pixel_values
    sizes = [(100, 150)]
    logits = tiled_predict(seg_model, pixel_values, tile=48, overlap=16)
    labels = processor.post_process_semantic_segmentation(logits, target_sizes=sizes)[0].numpy()
    mask = np.asarray(Image.open(tmp_path / "s" / "coffee_mask.png"))
    np.testing.assert_array_equal(mask, labels)
    assert len(np.unique(mask)) > 1
    depth = tiled_predict(depth_model, pixel_values, tile=48, overlap=16)
    expected = processor.post_process_depth_estimation(depth, target_sizes=sizes)[0]["predicted_depth"].numpy()
    raw = np.load(tmp_path / "d" / "coffee_depth.npy")
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # and differ from the untiled prediction
        untiled = depth_model(pixel_values=pixel_values)
    full = processor.post_process_depth_estimation(untiled, target_sizes=sizes)[0]["predicted_depth"].numpy()
    assert np.abs(raw - full).max() > 1e-3
