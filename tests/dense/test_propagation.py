"""Video label propagation (`dinov3_hf.dense.propagation`): exact recovery on hand-made feature videos whose masks
are known, the neighbourhood radius, frame 0 in the context queue and the queue of previous frames each needed by a
designed video, the top-k softmax against a hand computation, and on a real-photo video with known motion, raw-pixel
propagation beats copying the first mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dinov3_hf import Dinov3HfImageProcessor
from dinov3_hf.data.moving_objects import moving_objects_video
from dinov3_hf.dense import RawPixelPatches, propagation
from dinov3_hf.dense.propagation import first_frame_probabilities, propagate_labels, propagate_video
from dinov3_hf.metrics.video import video_j_and_f

PATCH = 4  # pixels per patch of the hand-made videos


def pixel_labels(grid_labels: np.ndarray) -> np.ndarray:
    """A patch-grid label map [..., h, w] as pixels [..., h·PATCH, w·PATCH]."""
    return grid_labels.repeat(PATCH, axis=-2).repeat(PATCH, axis=-1)


def assert_recovered(result, grid_labels: np.ndarray) -> None:
    """Every frame's propagated distributions are the one-hot of the true patch labels, and the pixel masks are the
    true masks up to the object corners that bilinear upsampling of patch-sized blocks rounds off."""
    labels = torch.from_numpy(grid_labels)
    expected = (labels[:, None] == result.labels[None, :, None, None]).float()
    torch.testing.assert_close(result.probabilities, expected, atol=1e-5, rtol=0)
    wrong = result.masks.numpy() != pixel_labels(grid_labels)
    assert wrong.mean() < 0.005, wrong.mean()


def video(frames: int, height: int, width: int, channels: int) -> tuple[torch.Tensor, np.ndarray]:
    """Empty features [T, h, w, C] (all background: channel 0) and labels [T, h, w]."""
    features = torch.zeros(frames, height, width, channels)
    features[..., 0] = 1.0
    return features, np.zeros((frames, height, width), dtype=np.int64)


def paint(features, labels, t, rows, cols, channel, label):
    features[t, rows, cols] = 0.0
    features[t, rows, cols, channel] = 1.0
    labels[t, rows, cols] = label


def test_moving_one_hot_objects_are_recovered_exactly():
    """Two objects (ids 3 and 7) with one-hot identity features move one patch per frame in opposite directions."""
    features, labels = video(10, 12, 20, 3)
    for t in range(10):
        paint(features, labels, t, slice(2, 5), slice(1 + t, 4 + t), 1, 3)
        paint(features, labels, t, slice(7, 11), slice(16 - t, 19 - t), 2, 7)
    truth = pixel_labels(labels)
    result = propagate_labels(features, truth[0])
    assert result.labels.tolist() == [0, 3, 7] and result.masks.shape == truth.shape
    assert_recovered(result, labels)
    np.testing.assert_array_equal(result.masks[0].numpy(), truth[0])  # frame 0 is the given mask
    assert ((truth[1:] != truth[0]).mean(axis=(1, 2)) > 0.02).all()  # copying the first mask is wrong in every frame


def test_neighbourhood_radius_separates_look_alike_objects():
    """Objects 1 (3 x 3 patches) and 2 (4 x 5) look the same; only the radius (3 patches, less than their distance)
    keeps object 1's patches from voting for the larger object 2."""
    features, labels = video(6, 12, 24, 2)
    for t in range(6):
        paint(features, labels, t, slice(4, 7), slice(2 + t, 5 + t), 1, 1)
        paint(features, labels, t, slice(3, 7), slice(18 - t, 23 - t), 1, 2)
    first = pixel_labels(labels[0])
    assert_recovered(propagate_labels(features, first, radius=3), labels)
    unrestricted = propagate_labels(features, first, radius=100)
    assert unrestricted.probabilities[1:, 1].max() < 0.5  # object 1's patches vote for object 2 from frame 1 on


def occlusion_video() -> tuple[torch.Tensor, np.ndarray]:
    """Object 1 (3 x 3) is hidden by an occluder (background, 5 x 5, own feature) in frames 1-6 and seen again in
    frame 7; the occluder is elsewhere in frames 0 and 7."""
    features, labels = video(8, 10, 16, 3)
    for t in range(8):
        if t in (0, 7):
            paint(features, labels, t, slice(3, 6), slice(9, 12), 1, 1)
            paint(features, labels, t, slice(2, 7), slice(0, 5), 2, 0)
        else:
            paint(features, labels, t, slice(2, 7), slice(8, 13), 2, 0)
    return features, labels


def test_first_frame_in_the_queue_recovers_an_object_after_occlusion():
    features, labels = occlusion_video()
    result = propagate_labels(features, pixel_labels(labels[0]), context=2, radius=100)
    assert_recovered(result, labels)
    assert (result.masks[1:7] == 1).sum() == 0 and (result.masks[7] == 1).sum() > 8 * PATCH**2


def test_queue_of_previous_frames_follows_a_changing_appearance():
    """The object's feature turns 15 degrees per frame (from channel 1 towards channel 2) while it moves: from frame 6
    on it is orthogonal or opposed to frame 0's, so only the queue of previous frames can carry its label."""
    frames = 11
    features, labels = video(frames, 10, 20, 3)
    for t in range(frames):
        angle = math.radians(15 * t)
        paint(features, labels, t, slice(3, 6), slice(2 + t, 5 + t), 1, 1)
        features[t, 3:6, 2 + t : 5 + t, 1] = math.cos(angle)
        features[t, 3:6, 2 + t : 5 + t, 2] = math.sin(angle)
    first = pixel_labels(labels[0])
    assert_recovered(propagate_labels(features, first), labels)
    first_only = propagate_labels(features, first, context=0)
    assert first_only.probabilities[-1, 1].max() < 0.5  # lost without the queue


def test_topk_softmax_matches_a_hand_computation():
    """One target patch, three source patches of frame 0 with cosine similarities 0.8, 0.6 and 0.0 and labels 0, 1,
    1: top-2 with temperature 0.5 gives p(label 1) = e^(0.6/0.5) / (e^(0.8/0.5) + e^(0.6/0.5))."""
    source = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    features = torch.stack([source, target])[:, None]  # [2, 1, 3, 2]: a 1 x 3 grid
    first_mask = np.array([[0, 1, 1]]).repeat(2, 0)  # 2 x 3 pixels: one pixel column per patch
    result = propagate_labels(features, first_mask, topk=2, temperature=0.5, radius=5)
    expected = math.exp(0.6 / 0.5) / (math.exp(0.8 / 0.5) + math.exp(0.6 / 0.5))
    torch.testing.assert_close(result.probabilities[1, 1], torch.full((1, 3), expected))
    torch.testing.assert_close(result.probabilities[1].sum(0), torch.ones(1, 3))


@pytest.mark.parametrize(
    ("radius", "shape", "topk", "temperature"),
    [(2.0, "circle", 5, 0.2), (3.5, "square", 7, 0.1), (0.0, "circle", 5, 0.2), (100.0, "circle", 3, 0.5)],
)
def test_one_step_equals_the_formula_written_out(radius, shape, topk, temperature, monkeypatch):
    """`propagate_frame` against a patch-by-patch transcription of the formula (all similarities within the radius
    over the context, the top-k with ties to the k-th, softmax / temperature). Integer features make many
    similarities tie exactly; a tiny chunk size splits the grid into several bands."""
    height, width, frames, dim, labels = 7, 9, 3, 6, 4
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (height * width, dim), generator=gen).float()
    context = torch.randint(0, 3, (frames, height * width, dim), generator=gen).float()
    probs = torch.softmax(torch.randn(frames, height * width, labels, generator=gen), dim=-1)
    rows, cols = np.divmod(np.arange(height * width), width)
    expected = torch.zeros(height * width, labels)
    for i in range(height * width):
        dr, dc = np.abs(rows - rows[i]), np.abs(cols - cols[i])
        near = np.hypot(dr, dc) <= radius if shape == "circle" else np.maximum(dr, dc) <= radius
        scores = [(float(target[i] @ context[t, j]), t, j) for t in range(frames) for j in np.flatnonzero(near)]
        kth = sorted((s for s, _, _ in scores), reverse=True)[min(topk, len(scores)) - 1]
        kept = [(s, t, j) for s, t, j in scores if s >= kth]
        weights = torch.softmax(torch.tensor([s for s, _, _ in kept]) / temperature, dim=0)
        expected[i] = sum(w * probs[t, j] for w, (_, t, j) in zip(weights, kept))
    for chunk in (1 << 24, 300):
        monkeypatch.setattr(propagation, "_CHUNK_ELEMENTS", chunk)
        got = propagation.propagate_frame(
            target, context, probs, (height, width), topk=topk, radius=radius, temperature=temperature,
            neighbourhood=shape,
        )
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_first_mask_nearest_or_area_fractions_on_the_patch_grid():
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, :3] = 5  # 3 of each patch row's 4 pixel columns in the left patches
    labels = torch.tensor([0, 5])
    soft = first_frame_probabilities(mask, labels, (2, 2), soft=True)
    torch.testing.assert_close(soft[:, 0, 1], torch.full((2,), 0.75))
    torch.testing.assert_close(soft[:, 1, 1], torch.zeros(2))
    hard = first_frame_probabilities(mask, labels, (2, 2))
    assert hard[:, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]  # nearest-exact samples pixel column 2, which is 5


def test_pixel_masks_normalise_each_label_over_the_frame():
    """Min-max normalisation per label (DINO's `norm_mask`, Meta's notebook `postprocess_probs`): object 9, at most
    0.4 likely, maps to 1 where it peaks and wins there over the background, which maps to 0 at its own minimum."""
    probabilities = torch.tensor([[[0.6, 1.0, 0.9]], [[0.4, 0.0, 0.1]]])  # [M = 2, h = 1, w = 3]
    masks = propagation.pixel_masks(probabilities, torch.tensor([0, 9]), (1, 3))
    assert masks.tolist() == [[9, 0, 0]]  # normalised: background 0, 1, 0.75; object 1, 0, 0.25


def test_bad_inputs_name_the_problem():
    features = torch.zeros(3, 4, 4, 2)
    mask = np.zeros((16, 16), dtype=np.int64)
    with pytest.raises(ValueError, match="temperature"):
        propagate_labels(features, mask, temperature=0)
    with pytest.raises(ValueError, match="same size"):
        propagate_labels([features[0], torch.zeros(4, 5, 2)], mask)
    with pytest.raises(ValueError, match="integer label map"):
        propagate_labels(features, mask.astype(np.float32))


def test_raw_pixel_propagation_beats_copying_the_first_mask_on_a_real_photo_video():
    """The quokka and a textured horse move over the coffee photo (exact masks): raw-pixel patches propagated with
    the paper's settings track both objects far better than the first mask left where it was."""
    sample = moving_objects_video(num_frames=8, size=(96, 144))
    processor = Dinov3HfImageProcessor(size_divisor=4)
    result = propagate_video(RawPixelPatches(4), processor, sample.frames, sample.masks[0], size=96, progress=False)
    propagated = video_j_and_f(result.masks, sample.masks)
    copied = video_j_and_f(np.repeat(sample.masks[:1], 8, axis=0), sample.masks)
    assert propagated.jf_mean > copied.jf_mean + 0.2, (propagated.jf_mean, copied.jf_mean)
    for o, (j, f) in propagated.per_object.items():  # each object, not only on average
        assert j > copied.per_object[o][0] and f > copied.per_object[o][1]
