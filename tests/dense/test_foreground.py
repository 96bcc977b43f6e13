"""Foreground masks from the first PCA component: an object recovered whatever the sign of the features, a PCA
picture that depends on the foreground only, and real silhouettes found better than the centre-box and Otsu
baselines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from dinov3_hf.dense import first_component_scores, foreground_mask, foreground_pca

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_upsampling.py"


def blob_features(sign: float = 1.0, seed: int = 0):
    """(8, 10, 16) features: an off-centre blob (rows 2..5, cols 3..7) near vector a, the rest near vector b."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=16), rng.normal(size=16)
    blob = np.zeros((8, 10), dtype=bool)
    blob[2:6, 3:8] = True
    features = np.where(blob[..., None], a, b) + 0.05 * rng.normal(size=(8, 10, 16))
    return sign * features, blob


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_mask_recovers_the_object_and_the_border_is_background(sign):
    # negating the features flips the PCA direction; the border rule must flip the scores back
    features, blob = blob_features(sign)
    np.testing.assert_array_equal(foreground_mask(features), blob)
    scores = first_component_scores(features)
    assert scores[blob].min() > 0 > scores[~blob].max()
    # (N, D) tokens with grid=(h, w) give the same
    np.testing.assert_array_equal(foreground_mask(torch.from_numpy(features).reshape(80, 16), grid_size=(8, 10)), blob)


def test_foreground_pca_ignores_the_background():
    features, blob = blob_features()
    # a left-to-right gradient inside the object along one direction: the first component, drawn in red
    direction = np.random.default_rng(1).normal(size=16)
    features = features + np.where(blob, np.arange(10)[None, :], 0)[..., None] * direction
    picture = foreground_pca(features, mask=blob)
    assert picture.shape == (8, 10, 3) and picture.dtype == np.uint8
    assert (picture[~blob] == 0).all()
    red = picture[3, 3:8, 0].astype(int)
    assert (np.diff(red) > 0).all() or (np.diff(red) < 0).all()
    # the background's features do not change the foreground's colours (a PCA over all patches would)
    noisy = features.copy()
    noisy[~blob] += 50 * np.random.default_rng(2).normal(size=(int((~blob).sum()), 16))
    np.testing.assert_array_equal(foreground_pca(noisy, mask=blob), picture)
    # without a mask, the first-component mask is used
    np.testing.assert_array_equal(foreground_pca(features) > 0, np.repeat(blob[..., None], 3, -1) & (picture > 0))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 3 x 3"):
        foreground_mask(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="need grid_size"):
        foreground_mask(np.zeros((20, 4)))
    with pytest.raises(ValueError, match="has 12 cells"):
        foreground_mask(np.zeros((20, 4)), grid_size=(3, 4))
    with pytest.raises(ValueError, match="mask has shape"):
        foreground_pca(np.zeros((4, 4, 3)), mask=np.zeros((3, 3), dtype=bool))


def test_horse_silhouettes_beat_the_centre_box_and_otsu():
    """bench/bench_upsampling.py's foreground part on 6 composites (scikit-image's horse silhouette filled with one
    bundled texture on another): the shipped model's first-component mask, upsampled bilaterally, against the
    centre-box prior and Otsu's threshold on the grey level (mean IoU with the true silhouette)."""
    spec = importlib.util.spec_from_file_location("bench_upsampling", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.foreground_scores(["shipped"], count=6, seed=0)[1:]  # the quokka comes first: left out here
    mean = {key: np.mean([row[key] for row in rows]) for key in ("centre_box", "otsu", "shipped_bilateral")}
    assert mean["shipped_bilateral"] > mean["centre_box"] + 0.1
    assert mean["shipped_bilateral"] > mean["otsu"] + 0.1


def test_cli_features_foreground_picture(tmp_path, capsys):
    from PIL import Image
    from safetensors.torch import load_file
    from skimage.data import horse

    from dinov3_hf.cli import main
    from dinov3_hf.data.textures import texture

    shape = ~horse()[4:324]  # True on the horse, 320 x 400
    composite = np.where(shape[..., None], texture("coffee")[:320, :400], texture("grass")[:320, :400])
    Image.fromarray(composite).save(tmp_path / "horse.png")
    out = tmp_path / "out"
    assert main(["features", str(tmp_path / "horse.png"), "--size", "80", "--out", str(out), "--foreground"]) == 0
    picture = np.asarray(Image.open(out / "horse_foreground.png"))
    assert picture.shape == (320, 400, 3)
    tokens = load_file(str(out / "horse.safetensors"))["patch_tokens"]  # a 20 x 25 grid, 16 x 16 pixels per patch
    cells = picture[8::16, 8::16]
    np.testing.assert_array_equal(cells, foreground_pca(tokens))
    found = picture.any(-1)
    assert (found & shape).sum() / (found | shape).sum() > 0.65  # the centre-box prior scores 0.42
    Image.fromarray(composite[:8, :8]).save(tmp_path / "tiny.png")
    assert main(["features", str(tmp_path / "tiny.png"), "--size", "8", "--out", str(out), "--foreground"]) == 1
    assert "--foreground on tiny: Need a grid of at least 3 x 3 patches" in capsys.readouterr().err
