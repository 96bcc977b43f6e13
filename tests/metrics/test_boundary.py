"""DAVIS boundary F-measure against hand-computed small cases and against DAVIS's own numpy recipe
(davis2017-evaluation, davis2017/metrics.py: `_seg2bmap`, then dilation with skimage's disk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.morphology import disk

from dinov3_hf.metrics.boundary import (
    boundary_f_measure,
    boundary_f_score,
    boundary_map,
    boundary_precision_recall,
)


def square(shape, rows, cols):
    m = np.zeros(shape, dtype=bool)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return m


def test_boundary_map_of_a_square_by_hand():
    # a 3x3 square at rows/cols 1..3 differs from a right, lower or lower-right neighbour on the outline of the
    # 4x4 square at rows/cols 0..3 (12 pixels)
    b = boundary_map(torch.from_numpy(square((6, 6), (1, 3), (1, 3))))
    ring = square((6, 6), (0, 3), (0, 3)) & ~square((6, 6), (1, 2), (1, 2))
    np.testing.assert_array_equal(b.numpy(), ring)


def test_shifted_square_by_hand():
    gt = square((8, 8), (2, 4), (1, 3))  # boundary: outline of rows 1..4, cols 0..3
    pred = square((8, 8), (2, 4), (3, 5))  # boundary: outline of rows 1..4, cols 2..5
    # tolerance 1 pixel (the 4-neighbourhood): 8 of the 12 predicted boundary pixels lie next to a true one
    # (top and bottom rows at cols 2, 3, 4; the left side at (2, 2), (3, 2)); the same 8 of 12 the other way
    p, r = boundary_precision_recall(pred, gt, bound_th=1)
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert boundary_f_measure(pred, gt, bound_th=1) == pytest.approx(2 / 3)
    # tolerance 2: the far column (col 5) is two pixels from col 3
    assert boundary_f_measure(pred, gt, bound_th=2) == pytest.approx(1.0)
    # as a fraction of the diagonal (8·√2 ≈ 11.3): ceil(0.008 · 11.3) = 1 pixel, ceil(0.1 · 11.3) = 2 pixels
    assert boundary_f_measure(pred, gt) == pytest.approx(2 / 3)
    assert boundary_f_measure(pred, gt, bound_th=0.1) == pytest.approx(1.0)


def test_tolerance_is_a_disk_not_a_square():
    # single pixels one step apart diagonally: their 2x2 boundary blocks overlap in one pixel; three of four pixels
    # are within distance 1 of the other block, the far corner is √2 away (inside a 3x3 square, outside the disk)
    gt = square((6, 6), (2, 2), (2, 2))
    pred = square((6, 6), (3, 3), (3, 3))
    assert boundary_precision_recall(pred, gt, bound_th=1) == (pytest.approx(0.75), pytest.approx(0.75))
    assert boundary_f_measure(pred, gt, bound_th=1) == pytest.approx(0.75)


def test_empty_masks_follow_davis():
    empty, full = np.zeros((5, 5), bool), square((5, 5), (1, 2), (1, 2))
    assert boundary_precision_recall(empty, empty) == (1.0, 1.0)
    assert boundary_precision_recall(empty, full) == (1.0, 0.0)
    assert boundary_precision_recall(full, empty) == (0.0, 1.0)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, full) == 0.0
    assert boundary_f_measure(full, empty) == 0.0
    assert boundary_f_measure(full, full) == 1.0


def _davis_f(fg, gt, bound_th):
    """davis2017/metrics.py f_measure, with scipy's binary dilation in place of cv2.dilate."""

    def seg2bmap(seg):
        e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
        e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
        b = seg ^ e | seg ^ s | seg ^ se
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = 0
        return b

    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fg_b, gt_b = seg2bmap(fg), seg2bmap(gt)
    fg_dil = ndimage.binary_dilation(fg_b, disk(bound_pix))
    gt_dil = ndimage.binary_dilation(gt_b, disk(bound_pix))
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 or n_gt == 0:
        return float(n_fg == 0 and n_gt == 0)
    precision, recall = (fg_b & gt_dil).sum() / n_fg, (gt_b & fg_dil).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("bound_th", [0.008, 0.03, 3])
def test_matches_the_davis_recipe_on_random_blobs(bound_th):
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt = ndimage.gaussian_filter(rng.normal(size=(60, 80)), 4) > 0
        pred = ndimage.gaussian_filter(rng.normal(size=(60, 80)), 3) > 0.02
        assert boundary_f_measure(pred, gt, bound_th) == pytest.approx(_davis_f(pred, gt, bound_th))


def test_multiclass_score_is_the_mean_over_present_classes():
    ref = square((8, 8), (2, 4), (1, 3)).astype(np.int64)
    pred = square((8, 8), (2, 4), (3, 5)).astype(np.int64)
    # class 1 scores 2/3 (test above); class 0 is the complement, whose boundary map is the same
    assert boundary_f_score(pred, ref, bound_th=1) == pytest.approx(2 / 3)
    # a class predicted but absent from the reference scores 0 and counts in the mean
    pred3 = pred.copy()
    pred3[7, 7] = 2
    f0 = boundary_f_measure(pred3 == 0, ref == 0, bound_th=1)
    assert boundary_f_score(pred3, ref, bound_th=1) == pytest.approx((f0 + 2 / 3 + 0.0) / 3)
    # a batch averages the per-map scores
    batch = boundary_f_score(np.stack([pred, ref]), np.stack([ref, ref]), bound_th=1)
    assert batch == pytest.approx((2 / 3 + 1.0) / 2)
    # ignore_index pixels are void: a wrong prediction there does not count
    ref_void = ref.copy()
    ref_void[:, 4:] = 255
    pred_void = ref.copy()
    pred_void[:, 5:] = 1 - pred_void[:, 5:]
    assert boundary_f_score(pred_void, ref_void, bound_th=1) == pytest.approx(1.0)
    assert boundary_f_score(pred_void, ref_void, bound_th=1, ignore_index=None) < 1.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="binary"):
        boundary_f_measure(np.full((4, 4), 2), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="resize the prediction"):
        boundary_f_measure(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2-D"):
        boundary_f_measure(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="bound_th"):
        boundary_f_measure(np.zeros((4, 4)), np.zeros((4, 4)), bound_th=0)
