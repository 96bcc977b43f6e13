"""PCA visualisation on synthetic features whose principal directions are known."""

import numpy as np
import pytest
import torch

from dinov3_hf.viz import pca_components, pca_image, pca_rgb

H, W, D = 6, 8, 10


def synthetic():
    """Features = offset + 10 * x-ramp * e1 + 3 * y-ramp * e2 + checkerboard * e3, for orthonormal e1, e2, e3.

    On an even grid the three patterns are centred and mutually orthogonal, with decreasing variance, so PCA
    component k is +-e_k and its projection is +-pattern_k.
    """
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.normal(size=(D, 3)))[0].T  # [3, D], orthonormal rows
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    patterns = [10 * (x - x.mean()), 3 * (y - y.mean()), (-1.0) ** (x + y)]
    features = 5.0 + sum(p[..., None] * e for p, e in zip(patterns, directions))
    return features, patterns, directions


def minmax_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(255 * (values - values.min()) / (values.max() - values.min())).astype(np.uint8)


def test_pca_recovers_known_components():
    features, patterns, directions = synthetic()
    components = pca_components(features.reshape(H * W, D))
    for component, direction in zip(components, directions):
        sign = np.sign(direction[np.argmax(np.abs(direction))])
        np.testing.assert_allclose(component, sign * direction, atol=1e-10)
        assert component[np.argmax(np.abs(component))] > 0

    rgb = pca_rgb(features.reshape(H * W, D), (H, W), clip_percentile=0)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    for channel, (pattern, direction) in enumerate(zip(patterns, directions)):
        sign = np.sign(direction[np.argmax(np.abs(direction))])
        np.testing.assert_array_equal(rgb[..., channel], minmax_uint8(sign * pattern))


def test_input_layouts_agree():
    features, _, _ = synthetic()
    flat = pca_rgb(features.reshape(H * W, D), (H, W))
    np.testing.assert_array_equal(pca_rgb(features), flat)
    np.testing.assert_array_equal(pca_rgb(torch.from_numpy(features).float(), (H, W)), flat)
    np.testing.assert_array_equal(pca_rgb(torch.from_numpy(features.reshape(H * W, D)), [H, W]), flat)


def test_percentile_clipping_ignores_an_outlier():
    features, patterns, directions = synthetic()
    features[0, 0] += 1000 * directions[0]
    robust = pca_rgb(features, clip_percentile=5)[..., 0]
    plain = pca_rgb(features, clip_percentile=0)[..., 0]
    assert np.unique(robust).size > np.unique(plain).size  # min-max squashes everything but the outlier


def test_degenerate_inputs_give_black_not_nan():
    assert not pca_rgb(np.ones((4, 5)), (2, 2)).any()
    assert pca_rgb(np.random.default_rng(0).normal(size=(3, 2)), (1, 3)).shape == (1, 3, 3)  # D = 2 < 3


def test_pca_image_upsamples_to_size():
    features, _, _ = synthetic()
    rgb = pca_rgb(features)
    image = pca_image(features, None, size=(80, 60))
    assert image.size == (80, 60) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image)[5::10, 5::10], rgb)  # nearest: 10 x 10 blocks
    assert pca_image(features, None, size=(81, 59), resample="bicubic").size == (81, 59)


def test_errors():
    features, _, _ = synthetic()
    with pytest.raises(ValueError, match="need grid_size"):
        pca_rgb(features.reshape(H * W, D))
    with pytest.raises(ValueError, match="has 49 cells but features have N=48"):
        pca_rgb(features.reshape(H * W, D), (7, 7))
    with pytest.raises(ValueError, match="do not match grid_size"):
        pca_rgb(features, (8, 6))
    with pytest.raises(ValueError, match="resample"):
        pca_image(features, None, size=(8, 6), resample="lanczos")
