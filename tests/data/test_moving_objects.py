"""Moving-object videos (`dinov3_hf.data.moving_objects`): the masks are exact (the background photo is untouched
outside them and replaced inside), objects follow their trajectories, and the front object owns overlaps."""

from __future__ import annotations

import numpy as np
import pytest

from dinov3_hf.data import moving_objects
from dinov3_hf.data.moving_objects import Trajectory, moving_objects_video


def test_masks_are_exactly_where_the_background_changed():
    video = moving_objects_video(num_frames=5, size=(96, 144))
    backdrop = np.asarray(moving_objects._background("coffee", (96, 144)))
    for frame, mask in zip(video.frames, video.masks, strict=True):
        pixels = np.asarray(frame)
        np.testing.assert_array_equal(pixels[mask == 0], backdrop[mask == 0])
        changed = (pixels != backdrop).any(axis=2)
        assert changed[mask > 0].mean() > 0.9  # object pixels replace the photo (a few may match it by chance)
    assert set(np.unique(video.masks)) == {0, 1, 2} and video.objects == ("quokka", "horse")


def test_objects_follow_their_trajectory():
    path = Trajectory(start=(0.5, 0.25), end=(0.5, 0.75), height=(0.4, 0.6))
    video = moving_objects_video(num_frames=3, size=(100, 200), objects=("horse",), trajectories={"horse": path})
    rows = [np.nonzero(m.any(axis=1))[0] for m in video.masks]
    cols = [np.nonzero(m.any(axis=0))[0] for m in video.masks]
    heights = [r[-1] - r[0] + 1 for r in rows]
    centres = [(c[0] + c[-1] + 1) / 2 for c in cols]
    np.testing.assert_allclose(heights, [40, 50, 60], atol=1.5)  # the mask's bounding box is the object's
    np.testing.assert_allclose(centres, [50, 100, 150], atol=1.5)


def test_the_later_object_is_in_front():
    same = Trajectory(start=(0.5, 0.5), end=(0.5, 0.5), height=(0.6, 0.6))
    video = moving_objects_video(num_frames=2, size=(80, 120), trajectories={"quokka": same, "horse": same})
    alone = moving_objects_video(num_frames=2, size=(80, 120), objects=("horse",), trajectories={"horse": same})
    np.testing.assert_array_equal(video.masks[0] == 2, alone.masks[0] == 1)
    assert (video.masks[0] == 1).any()  # the quokka shows around the horse
    with pytest.raises(ValueError, match="Unknown object"):
        moving_objects_video(objects=("cat",), trajectories={"cat": same})
