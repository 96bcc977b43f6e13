"""Feature upsampling to pixels: joint bilateral upsampling against its formula computed by hand, edges kept sharp
where bilinear interpolation blurs them, and guided upsampling beating bilinear on held-out texture mosaics."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinov3_hf.dense import upsample_features

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_upsampling.py"


def brute_force(features, guide, sigma_spatial, sigma_range, radius):
    """The joint bilateral formula of upsample_features, pixel by pixel."""
    b, d, h, w = features.shape
    height, width = guide.shape[-2:]
    patch_colours = F.adaptive_avg_pool2d(guide, (h, w))
    out = torch.zeros(b, d, height, width, dtype=torch.float64)
    for n in range(b):
        for y in range(height):
            for x in range(width):
                py, px = (y + 0.5) * h / height - 0.5, (x + 0.5) * w / width - 0.5
                cy, cx = min(int((y + 0.5) * h / height), h - 1), min(int((x + 0.5) * w / width), w - 1)
                num, den = torch.zeros(d, dtype=torch.float64), 0.0
                for qy in range(max(0, cy - radius), min(h, cy + radius + 1)):
                    for qx in range(max(0, cx - radius), min(w, cx + radius + 1)):
                        colour = float(((guide[n, :, y, x] - patch_colours[n, :, qy, qx]) ** 2).sum())
                        weight = math.exp(-((py - qy) ** 2 + (px - qx) ** 2) / (2 * sigma_spatial**2))
                        weight *= math.exp(-colour / (2 * sigma_range**2))
                        num += weight * features[n, :, qy, qx].double()
                        den += weight
                out[n, :, y, x] = num / den
    return out


def test_constant_guide_and_infinite_range_sigma_is_a_gaussian_interpolation_by_hand():
    # 3x3 grid -> 6x6 pixels (2 per patch), sigma_s = 1, radius 1; pixel (0, 0) sits at (-0.25, -0.25) in patch
    # units and sees patches {0, 1} x {0, 1}; pixel (3, 2) sits at (1.25, 0.75), its own patch is (1, 1) and it sees
    # rows 0..2, columns 0..2
    features = torch.arange(9.0).reshape(1, 1, 3, 3)
    guide = torch.full((1, 3, 6, 6), 0.3)
    out = upsample_features(features, guide, method="bilateral", sigma_spatial=1.0, sigma_range=math.inf, radius=1)

    def gauss(dy, dx):
        return math.exp(-(dy**2 + dx**2) / 2)

    w00 = {(qy, qx): gauss(-0.25 - qy, -0.25 - qx) for qy in (0, 1) for qx in (0, 1)}
    expected00 = sum(w * features[0, 0, qy, qx].item() for (qy, qx), w in w00.items()) / sum(w00.values())
    w32 = {(qy, qx): gauss(1.25 - qy, 0.75 - qx) for qy in range(3) for qx in range(3)}
    expected32 = sum(w * features[0, 0, qy, qx].item() for (qy, qx), w in w32.items()) / sum(w32.values())
    assert out[0, 0, 0, 0].item() == pytest.approx(expected00, abs=1e-5)
    assert out[0, 0, 3, 2].item() == pytest.approx(expected32, abs=1e-5)
    # a finite range sigma on a constant guide changes nothing (every colour distance is 0)
    same = upsample_features(features, guide, method="bilateral", sigma_spatial=1.0, sigma_range=0.01, radius=1)
    torch.testing.assert_close(same, out)


@pytest.mark.parametrize("size", [(12, 15), (7, 11), (3, 4)])
def test_bilateral_matches_the_formula_pixel_by_pixel(size):
    torch.manual_seed(0)
    features, guide = torch.randn(2, 4, 4, 5), torch.rand(2, 3, *size)
    out = upsample_features(features, guide, method="bilateral", sigma_spatial=0.8, sigma_range=0.3)
    torch.testing.assert_close(out.double(), brute_force(features, guide, 0.8, 0.3, 2), atol=1e-5, rtol=1e-5)
    # banded into single patch rows: the same numbers
    banded = upsample_features(
        features, guide, method="bilateral", sigma_spatial=0.8, sigma_range=0.3, max_chunk_elements=1
    )
    torch.testing.assert_close(banded, out, atol=0, rtol=0)


def test_step_edge_in_the_guide_keeps_the_feature_edge_sharp():
    # an 8x8 grid over 64x64 pixels; the guide is black left of pixel column 36 and white from it on, so the
    # edge cuts patch column 4 in half; the features are 0 on black patches, 1 on white ones, 0.5 on the cut patch
    guide = torch.zeros(1, 3, 64, 64)
    guide[..., 36:] = 1.0
    features = torch.zeros(1, 1, 8, 8)
    features[..., 4] = 0.5
    features[..., 5:] = 1.0
    step = (torch.arange(64) >= 36).float().expand(64, 64)
    sharp = upsample_features(features, guide, method="bilateral", sigma_range=0.1)[0, 0]
    blurred = upsample_features(features, method="bilinear", size=(64, 64))[0, 0]
    assert (sharp - step).abs().max() < 1e-3
    assert (blurred - step).abs().max() > 0.4  # bilinear ramps over the 16 pixels between patch centres 3 and 5
    assert (blurred - step).abs().mean() > 0.03


def test_layouts_and_bilinear_convention():
    torch.manual_seed(0)
    grid = torch.randn(3, 4, 6)  # (h, w, D)
    guide = np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)  # HWC uint8
    single = upsample_features(grid, guide, method="bilateral")
    chw = torch.from_numpy(guide).permute(2, 0, 1) / 255.0
    batch = upsample_features(grid.permute(2, 0, 1)[None], chw, method="bilateral")
    assert single.shape == (24, 32, 6)
    torch.testing.assert_close(single, batch[0].permute(1, 2, 0))
    # bilinear: patch centres at ((i + 0.5)·H/h − 0.5): a 2x2 grid over 4x4 pixels puts patch (0, 0) at pixel 0.5
    out = upsample_features(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]), size=4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    # a guide of another size is resized to `size`
    assert upsample_features(grid, guide, size=(12, 16), method="bilateral").shape == (12, 16, 6)


def test_errors_name_the_problem():
    features = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        upsample_features(features, size=8, method="bicubic")
    with pytest.raises(ValueError, match="needs the image"):
        upsample_features(features, size=8, method="bilateral")
    with pytest.raises(ValueError, match="Pass size"):
        upsample_features(features)
    with pytest.raises(ValueError, match=r"\(B, D, h, w\) batch or one \(h, w, D\)"):
        upsample_features(torch.zeros(9, 2), size=8)
    with pytest.raises(ValueError, match="2 guide images for a batch of 1"):
        upsample_features(features, [torch.zeros(3, 8, 8)] * 2, method="bilateral")
    with pytest.raises(ValueError, match="sigma_spatial and sigma_range must be > 0"):
        upsample_features(features, torch.zeros(3, 8, 8), method="bilateral", sigma_range=0)
    with pytest.raises(ValueError, match="floating point"):
        upsample_features(torch.zeros(1, 2, 3, 3, dtype=torch.long), size=8)


def test_guided_beats_bilinear_on_held_out_texture_mosaics():
    """The patch protocol of bench/bench_upsampling.py at small scale: a linear probe fitted on the shipped model's
    patch features of 12 training mosaics; its logits on 8 held-out mosaics (another seed, texture rows never seen)
    upsampled to pixels with each method. Guided upsampling must win on mIoU and on boundary F."""
    spec = importlib.util.spec_from_file_location("bench_upsampling", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    common = {"size": 128, "texture_scale": 1.0, "n_regions": (3, 8)}
    train_images, train_labels, n_classes = bench.mosaics(12, 0, seed=0, source_rows=(0.0, 0.6), **common)
    test_images, test_labels, _ = bench.mosaics(8, 0, seed=1000, source_rows=(0.6, 1.0), **common)
    extract = bench.extractors(["shipped"])["shipped"]
    probe = bench.fit_patch_probe([extract(im) for im in train_images], train_labels, n_classes)
    test_features = [extract(im) for im in test_images]
    bilinear, bilateral = (
        bench.patch_probe_scores(probe, test_features, test_images, test_labels, n_classes, method)
        for method in ("bilinear", "bilateral")
    )
    # measured: mIoU 0.446 against 0.418, boundary F 0.157 against 0.096
    assert bilateral["miou"] > bilinear["miou"] + 0.01
    assert bilateral["boundary_f"] > bilinear["boundary_f"] + 0.03


def test_cli_features_upsample_writes_the_pca_of_the_upsampled_features(tmp_path):
    from PIL import Image
    from safetensors.torch import load_file
    from skimage.data import coffee

    from dinov3_hf.cli import main
    from dinov3_hf.viz import pca_components, scale_components

    photo = Image.fromarray(coffee()).resize((120, 80), Image.Resampling.BILINEAR)
    photo.save(tmp_path / "coffee.png")
    pictures = {}
    for method in ("bilinear", "bilateral"):
        out = tmp_path / method
        argv = ["features", str(tmp_path / "coffee.png"), "--size", "64", "--out", str(out), "--upsample", method]
        assert main(argv) == 0
        pictures[method] = np.asarray(Image.open(out / "coffee_pca_upsampled.png")).astype(int)
        assert pictures[method].shape == (80, 120, 3)
        # independently: upsample all D channels, then project on the patch grid's principal directions and scale
        tokens = load_file(str(out / "coffee.safetensors"))["patch_tokens"].double()
        flat = tokens.reshape(-1, tokens.shape[-1])
        full = upsample_features(tokens.float(), photo, method=method).double()
        projected = (full - flat.mean(0)) @ torch.from_numpy(pca_components(flat.numpy())).T
        assert np.abs(pictures[method] - scale_components(projected.numpy())).max() <= 1
    assert np.abs(pictures["bilinear"] - pictures["bilateral"]).mean() > 5
