"""Dense correspondences: mutual nearest neighbours, the ratio test and the refinement against hand computations;
exact recovery of known geometry on a real photo through `match_images`; PCK; the `dinov3-hf match` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from dinov3_hf import Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import MATCH_REFINEMENTS, main
from dinov3_hf.dense import RawPixelPatches, draw_matches, match_features, match_images, top_matches
from dinov3_hf.dense.correspondence import REFINEMENTS, PixelPatchOutput
from dinov3_hf.metrics import pck
from dinov3_hf.processing import Dinov3HfImageProcessor
from dinov3_hf.viz import _colormap


def unit_vectors(degrees: list[float], norms: list[float]) -> torch.Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=-1) * torch.tensor(norms, dtype=torch.float64)[:, None]


# A: a 2 x 2 grid (row-major a0 a1 / a2 a3), B: a 3 x 1 grid (b0 / b1 / b2) of 2-d features at these angles. The
# norms differ, so that only a cosine matcher finds the pairs below. Angle differences (degrees):
#         b0 (10)  b1 (45)  b2 (200)
# a0 (0)    10       45      160      a0 -> b0, b0 -> a0: mutual
# a1 (50)   40        5      150      a1 -> b1, b1 -> a1: mutual
# a2 (100)  90       55      100      a2 -> b1 (not mutual)
# a3 (290)  80      115       90      a3 -> b0 (not mutual); b2 -> a3 (90 < 100)
FEATS_A = unit_vectors([0, 50, 100, 290], [1.0, 3.0, 0.5, 2.0]).reshape(2, 2, 2)
FEATS_B = unit_vectors([10, 45, 200], [2.0, 0.2, 1.0]).reshape(3, 1, 2)
CENTRES_A = [[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]]  # (x, y) = (column + 0.5, row + 0.5)
CENTRES_B = [[0.5, 0.5], [0.5, 1.5], [0.5, 2.5]]


def ratio_by_hand(best: float, second: float) -> float:
    """d1 / d2 for unit vectors at angles best and second (degrees): d = 2 sin(angle / 2)."""
    return math.sin(math.radians(best) / 2) / math.sin(math.radians(second) / 2)


def test_mutual_nearest_neighbours_by_hand():
    matches = match_features(FEATS_A, FEATS_B)
    assert matches["keypoints0"].tolist() == [CENTRES_A[0], CENTRES_A[1]]
    assert matches["keypoints1"].tolist() == [CENTRES_B[0], CENTRES_B[1]]
    expected = torch.tensor([math.cos(math.radians(10)), math.cos(math.radians(5))], dtype=torch.float32)
    torch.testing.assert_close(matches["matching_scores"], expected)

    one_way = match_features(FEATS_A, FEATS_B, mutual=False)
    assert one_way["keypoints0"].tolist() == CENTRES_A
    assert one_way["keypoints1"].tolist() == [CENTRES_B[0], CENTRES_B[1], CENTRES_B[1], CENTRES_B[0]]


def test_ratio_test_by_hand():
    ratios = [ratio_by_hand(10, 45), ratio_by_hand(5, 40), ratio_by_hand(55, 90), ratio_by_hand(80, 90)]
    assert ratios[1] < 0.2 < ratios[0] < 0.5 < ratios[2] < 0.7 < ratios[3] < 0.95  # a1 < a0 < a2 < a3
    for threshold, kept in ((0.2, [1]), (0.5, [0, 1]), (0.7, [0, 1, 2]), (0.95, [0, 1, 2, 3])):
        matches = match_features(FEATS_A, FEATS_B, mutual=False, ratio=threshold)
        assert matches["keypoints0"].tolist() == [CENTRES_A[i] for i in kept], threshold
    both = match_features(FEATS_A, FEATS_B, mutual=True, ratio=0.2)  # a0 fails the ratio test, a2 and a3 mutuality
    assert both["keypoints0"].tolist() == [CENTRES_A[1]] and both["keypoints1"].tolist() == [CENTRES_B[1]]
    with pytest.raises(ValueError, match="ratio"):
        match_features(FEATS_A, FEATS_B, ratio=1.5)


def test_refinement_by_hand():
    # B: a 3 x 3 grid of orthonormal features e_(3r + c); A: one patch 2 e4 + e5, nearest to B's centre patch e4.
    # Bilinear upsampling by 3 puts a fine cell at x = 11/6, y = 1.5 whose feature is (2 e4 + e5) / 3: cosine 1.
    feats_b = torch.eye(9).reshape(3, 3, 9)
    feats_a = (2 * torch.eye(9)[4] + torch.eye(9)[5]).reshape(1, 1, 9)
    coarse = match_features(feats_a, feats_b)
    assert coarse["keypoints1"].tolist() == [[1.5, 1.5]]
    refined = match_features(feats_a, feats_b, refine="argmax", refine_factor=3)
    torch.testing.assert_close(refined["keypoints1"], torch.tensor([[11 / 6, 1.5]]))
    torch.testing.assert_close(refined["matching_scores"], coarse["matching_scores"])
    sharp = match_features(feats_a, feats_b, refine="soft-argmax", refine_factor=3, temperature=1e-4)
    torch.testing.assert_close(sharp["keypoints1"], torch.tensor([[11 / 6, 1.5]]), atol=1e-3, rtol=0)
    # a query equal to the centre patch: by symmetry the soft-argmax is the centre, at any temperature
    centre = match_features(torch.eye(9)[4].reshape(1, 1, 9), feats_b, refine="soft-argmax", refine_factor=4)
    torch.testing.assert_close(centre["keypoints1"], torch.tensor([[1.5, 1.5]]))
    # fine features given explicitly: the same as the default bilinear ones
    fine = F.interpolate(feats_b.permute(2, 0, 1)[None], scale_factor=3, mode="bilinear")[0].permute(1, 2, 0)
    given = match_features(feats_a, feats_b, refine="argmax", fine_feats_b=fine)
    torch.testing.assert_close(given["keypoints1"], refined["keypoints1"])
    assert MATCH_REFINEMENTS == REFINEMENTS


def test_translated_crop_recovered_exactly_with_raw_pixels():
    """B is a crop of A shifted by (32, 48) pixels; at native resolution (no resize) every one of the 26 x 32 patches
    of A that B contains is matched to its own copy, and keypoints are at patch centres: x = 8 c + 3.5."""
    photo = data.chelsea()
    dx, dy = 32, 48
    image_a = photo[0:256, 0:320]
    image_b = photo[dy : dy + 224, dx : dx + 256]
    processor = Dinov3HfImageProcessor(size_divisor=8, do_resize=False)
    matches = match_images(RawPixelPatches(8), processor, Image.fromarray(image_a), Image.fromarray(image_b))
    truth = matches["keypoints0"] - torch.tensor([dx, dy], dtype=torch.float32)
    inside = (truth >= 0).all(dim=1) & (truth[:, 0] < 256) & (truth[:, 1] < 224)
    assert int(inside.sum()) == (256 - dy) // 8 * 256 // 8 == 832
    assert torch.equal(matches["keypoints1"][inside], truth[inside])
    assert torch.equal(matches["keypoints0"] % 8, torch.full_like(matches["keypoints0"], 3.5))
    torch.testing.assert_close(matches["matching_scores"][inside], torch.ones(832))


def test_raw_pixel_patches_by_hand():
    # one channel of a 2 x 4 image in two 2 x 2 patches (the other channels 0): [1 2; 5 6] and [3 3; 7 9]
    pixels = torch.zeros(1, 3, 2, 4)
    pixels[0, 0] = torch.tensor([[1.0, 2.0, 3.0, 3.0], [5.0, 6.0, 7.0, 9.0]])
    tokens = RawPixelPatches(2)(pixels).patch_tokens
    assert tokens.shape == (1, 2, 12)
    for token, values in zip(tokens[0], ([1.0, 2.0, 5.0, 6.0], [3.0, 3.0, 7.0, 9.0])):
        centred = torch.tensor(values + [0.0] * 8) - sum(values) / 12
        torch.testing.assert_close(token, centred / centred.norm())
    plain = RawPixelPatches(2, subtract_mean=False)(pixels).patch_tokens[0, 1]
    torch.testing.assert_close(plain, torch.tensor([3.0, 3.0, 7.0, 9.0] + [0.0] * 8) / math.sqrt(9 + 9 + 49 + 81))


class SortedPixelPatches(RawPixelPatches):
    """Hand-designed features invariant to rotating a patch: per channel, its p^2 pixel values sorted."""

    def forward(self, pixel_values: torch.Tensor) -> PixelPatchOutput:
        p = self.config.output_stride
        b, c = pixel_values.shape[:2]
        patches = F.unfold(pixel_values.float(), p, stride=p).reshape(b, c, p * p, -1).sort(dim=2).values
        patches = patches.flatten(1, 2).transpose(1, 2)
        return PixelPatchOutput(patch_tokens=F.normalize(patches - patches.mean(-1, keepdim=True), dim=-1))


def test_rotated_resized_view_recovered_exactly():
    """A (300 x 451) is resized to 144 x 216 by the processor; B is that input turned by 180 degrees (so the
    mapping from A's pixels to B's pixels involves the resize, the patch centres and the turn). Every patch is
    matched to its turned copy at x_b = 215 - x_in, y_b = 143 - y_in, x_in = (x_a + 0.5) 216 / 451 - 0.5."""
    processor = Dinov3HfImageProcessor(size_divisor=8)
    image_a = Image.fromarray(data.chelsea()[:300])
    pixels = processor(image_a, size={"shortest_edge": 144}, return_tensors="pt")["pixel_values"][0]
    assert pixels.shape[-2:] == (144, 216)
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    turned = ((pixels * std + mean) * 255).round().clamp(0, 255).byte().flip(1, 2)
    image_b = Image.fromarray(turned.permute(1, 2, 0).numpy())

    matches = match_images(SortedPixelPatches(8), processor, image_a, image_b, size=144)
    x_a, y_a = matches["keypoints0"].double().unbind(-1)
    x_in, y_in = (x_a + 0.5) * 216 / 451 - 0.5, (y_a + 0.5) * 144 / 300 - 0.5
    truth = torch.stack([215 - x_in, 143 - y_in], dim=-1)
    assert len(truth) == 18 * 27
    torch.testing.assert_close(matches["keypoints1"].double(), truth, atol=1e-4, rtol=0)


def test_pck_by_hand():
    true = [[10.0, 10.0], [20.0, 5.0], [0.0, 0.0], [7.0, 7.0]]
    pred = [[10.0, 10.0], [23.0, 9.0], [6.0, 8.0], [7.0, 12.0]]  # errors 0, 5, 10, 5
    assert pck(pred, true, 5.0) == 0.25  # strictly below the threshold
    assert pck(pred, true, 5.5) == 0.75
    assert pck(torch.tensor(pred), np.array(true), 10.5) == 1.0
    assert pck(pred, true, 0.1, image_size=(30, 40)) == 0.25  # 0.1 x diagonal 50 = 5 pixels
    assert pck(pred, true, 0.11, image_size=(30, 40)) == 0.75  # 5.5 pixels
    with pytest.raises(ValueError, match="no points"):
        pck(np.zeros((0, 2)), np.zeros((0, 2)), 5.0)


def test_draw_matches_without_matches_is_the_two_images_side_by_side():
    a, b = data.chelsea()[:40, :60], data.coffee()[:50, :30]
    none = {"keypoints0": torch.zeros(0, 2), "keypoints1": torch.zeros(0, 2), "matching_scores": torch.zeros(0)}
    canvas = np.asarray(draw_matches(Image.fromarray(a), Image.fromarray(b), none))
    assert canvas.shape == (50, 90, 3)
    assert np.array_equal(canvas[:40, :60], a) and np.array_equal(canvas[:, 60:], b)
    assert not canvas[40:, :60].any()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = Dinov3HfViTConfig.from_preset(
        "vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=8
    )
    path = tmp_path_factory.mktemp("tiny_vit")
    Dinov3HfViTModel(config).eval().save_pretrained(path)
    Dinov3HfImageProcessor.for_model_config(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("file_format", ["json", "safetensors"])
def test_cli_match_draws_and_writes_the_python_matches(tiny_model_dir, tmp_path, file_format):
    photo = data.chelsea()
    image_a, image_b = Image.fromarray(photo[:160, :200]), Image.fromarray(photo[40:200, 60:300])
    image_a.save(tmp_path / "a.png")
    image_b.save(tmp_path / "b.png")
    out = tmp_path / "out"
    argv = ["match", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(tiny_model_dir)]
    assert main([*argv, "--size", "96", "--max-matches", "6", "--format", file_format, "--out", str(out)]) == 0

    model = Dinov3HfViTModel.from_pretrained(tiny_model_dir).eval()
    processor = Dinov3HfImageProcessor.from_pretrained(tiny_model_dir)
    expected = top_matches(match_images(model, processor, image_a, image_b, size=96), 6)
    if file_format == "json":
        written = json.loads((out / "a_b_matches.json").read_text())
        written = {key: torch.tensor(written[key]) for key in expected}
    else:
        written = load_file(out / "a_b_matches.safetensors")
    assert len(expected["matching_scores"]) == 6
    for key, value in expected.items():
        assert torch.equal(written[key], value), key

    canvas = np.asarray(Image.open(out / "a_b_matches.png").convert("RGB"))
    assert canvas.shape == (160, 200 + 240, 3)
    scores = expected["matching_scores"].double().numpy()
    colours = np.round(_colormap((scores - scores.min()) / (scores.max() - scores.min()), "turbo") * 255)
    for start, end, colour in zip(expected["keypoints0"], expected["keypoints1"], colours):
        for x, y in (start.tolist(), [end[0].item() + 200, end[1].item()]):
            assert np.array_equal(canvas[math.floor(y + 0.5), math.floor(x + 0.5)], colour), (x, y)


def test_cli_match_errors(tmp_path, capsys):
    Image.fromarray(data.chelsea()[:64, :64]).save(tmp_path / "a.png")
    assert main(["match", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) == 1
    assert "exactly two images" in capsys.readouterr().err
    argv = ["match", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--ratio", "1.5"]) == 1
    assert "--ratio must be in (0, 1]" in capsys.readouterr().err
    assert main(["match", str(tmp_path / "a.png"), str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err
