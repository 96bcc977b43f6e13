"""DAVIS J, F and J&F (`dinov3_hf.metrics.video`) against hand computations: first and last frames left out, object
ids from the first frame, empty and absent objects, void pixels."""

from __future__ import annotations

import numpy as np
import pytest

from dinov3_hf.metrics.boundary import boundary_f_measure
from dinov3_hf.metrics.video import region_similarity, video_j_and_f


def square(mask: np.ndarray, rows: slice, cols: slice, value: int) -> None:
    mask[rows, cols] = value


@pytest.fixture
def sequence() -> tuple[np.ndarray, np.ndarray]:
    """5 frames of 10 x 10: object 1 a 3 x 3 square, object 2 another one that is absent from frames 2 and 3."""
    refs = np.zeros((5, 10, 10), dtype=np.uint8)
    for t in range(5):
        square(refs[t], slice(1, 4), slice(1, 4), 1)
        if t not in (2, 3):
            square(refs[t], slice(6, 9), slice(6, 9), 2)
    preds = refs.copy()
    preds[1] = 0  # frame 1: object 1 five columns off (no overlap, boundaries 2 px apart), object 2 exact
    square(preds[1], slice(1, 4), slice(6, 9), 1)
    square(preds[1], slice(6, 9), slice(6, 9), 2)
    square(preds[2], slice(1, 7), slice(1, 4), 1)  # frame 2: object 1 twice as tall; object 2 absent in both
    square(preds[3], slice(6, 9), slice(6, 9), 2)  # frame 3: object 2 predicted but absent
    preds[4] = 0  # the last frame is wrong everywhere, but DAVIS does not score it
    return preds, refs


def test_j_and_f_by_hand(sequence):
    preds, refs = sequence
    scores = video_j_and_f(preds, refs)
    assert scores.frames == [1, 2, 3] and scores.object_ids == [1, 2]
    # J: object 1 = 0 (disjoint), 9/18, 1; object 2 = 1, 1 (both empty), 0 (predicted but absent)
    np.testing.assert_allclose(scores.j.numpy(), [[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]])
    # F, tolerance ceil(0.008 * sqrt(200)) = 1 px. Frame 1: the boundaries are 2 px apart, F = 0. Frame 2: DAVIS's
    # boundary of the 3 x 3 square has 12 pixels (rows 0 and 3: columns 0-3; rows 1-2: columns 0 and 3), the 6 x 3
    # one 18; all 12 lie on or next to the tall one (R = 1), 12 of its 18 next to the square (P = 2/3): F = 0.8
    np.testing.assert_allclose(scores.f.numpy(), [[0.0, 0.8, 1.0], [1.0, 1.0, 0.0]])
    assert boundary_f_measure(preds[2] == 1, refs[2] == 1) == pytest.approx(0.8)
    assert scores.j_mean == pytest.approx((1.5 + 2.0) / 6)
    assert scores.f_mean == pytest.approx((1.8 + 2.0) / 6)
    assert scores.jf_mean == pytest.approx((scores.j_mean + scores.f_mean) / 2)
    assert scores.per_object[2] == pytest.approx((2 / 3, 2 / 3))


def test_every_frame_when_asked(sequence):
    preds, refs = sequence
    scores = video_j_and_f(preds, refs, skip_first_and_last=False)
    assert scores.frames == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scores.j[:, [0, 4]].numpy(), [[1.0, 0.0], [1.0, 0.0]])  # the given frame, the last


def test_void_pixels_are_removed_and_are_no_object(sequence):
    preds, refs = sequence
    refs = refs.copy()
    refs[:, 0, :] = 255  # a void top row in every frame
    preds = preds.copy()
    preds[:, 0, :] = 1  # predicted as object 1 there: does not count
    assert video_j_and_f(preds, refs).object_ids == [1, 2]
    with_void, without = video_j_and_f(preds, refs), video_j_and_f(sequence[0], refs)
    np.testing.assert_allclose(with_void.j.numpy(), without.j.numpy())
    np.testing.assert_allclose(with_void.f.numpy(), without.f.numpy())
    assert region_similarity(preds[0] == 1, refs[0] == 1, refs[0] == 255) == 1.0
    assert region_similarity(preds[0] == 1, refs[0] == 1) == pytest.approx(9 / 19)


def test_ids_come_from_the_first_frame(sequence):
    preds, refs = sequence
    refs = refs.copy()
    refs[1:, 0, 0] = 3  # a later id is not an object of the sequence
    assert video_j_and_f(preds, refs).object_ids == [1, 2]
    preds = preds.copy()
    preds[2, 0, 0] = 3
    with pytest.raises(ValueError, match=r"ids \[3\] outside 0..2"):
        video_j_and_f(preds, refs)
    with pytest.raises(ValueError, match="at least 3 frames"):
        video_j_and_f(preds[:2], refs[:2])
    with pytest.raises(ValueError, match="no object"):
        video_j_and_f(np.zeros_like(preds), np.zeros_like(refs))
