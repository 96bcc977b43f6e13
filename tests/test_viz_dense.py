"""Depth colouring and segmentation overlays (viz.colorize_depth, colorize_labels, segmentation_overlay)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinov3_hf.viz import colorize_depth, colorize_labels, label_palette, segmentation_overlay


def test_colorize_depth_near_is_red_far_is_blue_invalid_black():
    depth = np.tile(np.linspace(1.0, 5.0, 50), (10, 1)).astype(np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.nan
    rgb = np.asarray(colorize_depth(torch.from_numpy(depth)), dtype=np.int64)
    assert rgb.shape == (10, 50, 3)
    near, far = rgb[5, 2], rgb[5, 40]
    assert near[0] > near[2] and far[2] > far[0]  # red near, blue far
    assert (rgb[0, 0] == 0).all() and (rgb[0, 1] == 0).all()
    flipped = np.asarray(colorize_depth(depth, near_is_high=False), dtype=np.int64)
    assert flipped[5, 2, 2] > flipped[5, 2, 0]
    assert colorize_depth(depth, size=(100, 20)).size == (100, 20)
    gray = np.asarray(colorize_depth(depth, cmap="gray", vmin=1.0, vmax=5.0))
    assert gray[5, 2, 0] > gray[5, -1, 0] and gray[5, -1, 0] == 0
    with pytest.raises(ValueError, match="2-D"):
        colorize_depth(np.zeros((2, 3, 4)))


def test_label_palette_is_distinct():
    palette = label_palette(40)
    assert palette.shape == (40, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == 40


def test_colorize_labels_and_overlay():
    labels = np.array([[0, 1], [2, 255]])
    colours = np.asarray(colorize_labels(labels))
    palette = label_palette(3)
    np.testing.assert_array_equal(colours[0, 0], palette[0])
    np.testing.assert_array_equal(colours[1, 0], palette[2])
    np.testing.assert_array_equal(colours[1, 1], [0, 0, 0])  # ignore index

    image = Image.fromarray(np.full((4, 4, 3), 100, dtype=np.uint8))
    overlay = np.asarray(segmentation_overlay(image, labels, alpha=0.5), dtype=np.float64)  # 2x2 map, resized
    assert overlay.shape == (4, 4, 3)
    np.testing.assert_allclose(overlay[0, 0], np.round(0.5 * 100 + 0.5 * palette[0]), atol=0.5)
    np.testing.assert_array_equal(overlay[3, 3], [100, 100, 100])  # ignored pixels keep the image
    assert np.asarray(segmentation_overlay(image, labels, alpha=0.0)).max() == 100
    with pytest.raises(ValueError, match="integer"):
        segmentation_overlay(image, labels.astype(float))
