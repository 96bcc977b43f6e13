"""Depth samples: motorcycle depth from disparity (metres, 0 where there is no ground truth), quokka files."""

from __future__ import annotations


import numpy as np
import pytest

from dinov3_hf.data import stereo
from dinov3_hf.data.stereo import depth_crops, disparity_to_depth, load_motorcycle



def test_disparity_to_depth():
    disparity = np.array([[10.0, np.inf], [np.nan, -5.0]])
    depth = disparity_to_depth(disparity, focal_px=100.0, baseline=0.5, doffs_px=0.0)
    np.testing.assert_allclose(depth, [[5.0, 0.0], [0.0, 0.0]])
    assert disparity_to_depth(disparity, 100.0, 0.5, doffs_px=10.0)[0, 0] == pytest.approx(2.5)


def test_motorcycle_depth_in_metres():
    from skimage import data

    sample = load_motorcycle()
    _, _, disparity = data.stereo_motorcycle()
    assert sample.image.size == (741, 500) and sample.depth.shape == (500, 741)
    np.testing.assert_array_equal(sample.valid, np.isfinite(disparity))
    d = sample.depth[sample.valid]
    assert 2.0 < d.min() and d.max() < 5.1 and sample.units == "m"
    # Z * (d + doffs) = f * B
    product = d * (disparity[sample.valid] + stereo.MOTORCYCLE_DOFFS_PX)
    np.testing.assert_allclose(product, stereo.MOTORCYCLE_FOCAL_PX * stereo.MOTORCYCLE_BASELINE_M, rtol=1e-5)


def test_depth_crops_keep_invalid_pixels_unblended():
    sample = load_motorcycle()
    crops = depth_crops(sample, 3, crop_size=200, out_size=(48, 64), x_range=(0.7, 1.0), seed=0)
    assert len(crops) == 3
    values = set(np.unique(sample.depth).tolist())
    for image, depth in crops:
        assert image.size == (64, 48) and depth.shape == (48, 64)
        assert (depth > 0).mean() >= 0.5
        assert set(np.unique(depth).tolist()) <= values  # nearest neighbour: no new depth values
    with pytest.raises(ValueError, match="does not fit"):
        depth_crops(sample, 1, crop_size=300, x_range=(0.7, 1.0))


def test_quokka(monkeypatch):
    sample = stereo.load_quokka(near=1.0, far=5.0)  # needs `pip install --no-deps imgaug==0.4.0` (CI does it)
    assert sample.image.size == (960, 643) and sample.depth.shape == (643, 960)
    assert 1.0 <= sample.depth.min() and sample.depth.max() <= 5.0 and sample.units == "relative"
    assert 0.2 < sample.mask.mean() < 0.4  # the annotated polygon covers ~30% of the photo
    # the quokka (foreground) is nearer than the average background
    assert sample.depth[sample.mask].mean() < sample.depth[~sample.mask].mean()
    monkeypatch.setattr(stereo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps imgaug==0.4.0"):
        stereo.load_quokka()
