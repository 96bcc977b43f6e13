"""`dinov3-hf propagate` on a real-photo video with known motion (a folder of frames and an MPEG-4 file): one
palette mask per frame equal to `propagate_video` on the same frames, an overlay GIF with one frame per video
frame whose pixels are the overlay of those masks, and clear errors for bad masks."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence
from transformers import AutoImageProcessor, AutoModel

from dinov3_hf import cli
from dinov3_hf.cli import main
from dinov3_hf.data.moving_objects import moving_objects_video
from dinov3_hf.dense import propagation
from dinov3_hf.pretrained_models import default_model_path
from dinov3_hf.viz import segmentation_overlay

FRAMES, SIZE, MODEL_SIZE = 6, (64, 96), 32


@pytest.fixture(scope="module")
def sample():
    return moving_objects_video(num_frames=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def shipped():
    path = default_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoImageProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def inputs(sample, tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    frames = folder / "frames"
    frames.mkdir()
    for t, frame in enumerate(sample.frames):  # names in natural, not lexicographic, order
        frame.save(frames / f"frame{t * 5}.png")
    mask = Image.fromarray(sample.masks[0])
    mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * (253 * 3))  # DAVIS-like: black, red, green
    mask.save(folder / "first.png")
    video = folder / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], "yuv420p"
        for frame in sample.frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())
    return frames, folder / "first.png", video


def check_outputs(out, names, frames, first_mask, shipped, fps):
    model, processor = shipped
    expected = propagation.propagate_video(model, processor, frames, first_mask, size=MODEL_SIZE, progress=False)
    written = [Image.open(out / "masks" / f"{name}.png") for name in names]
    assert all(m.mode == "P" and m.size == (SIZE[1], SIZE[0]) for m in written)
    np.testing.assert_array_equal(np.stack([np.asarray(m) for m in written]), expected.masks.numpy())
    assert (expected.masks[1:] == 2).any() and (expected.masks[1:] == 1).any()  # both objects are still there
    palette = np.asarray(written[0].getpalette()[:9]).reshape(3, 3)
    gif = Image.open(out / "overlay.gif")
    assert gif.n_frames == FRAMES and gif.size == (SIZE[1], SIZE[0])
    assert abs(gif.info["duration"] - 1000 / fps) < 10  # GIF stores hundredths of a second
    for frame, labels, drawn in zip(frames, expected.masks.numpy(), ImageSequence.Iterator(gif), strict=True):
        overlay = np.asarray(segmentation_overlay(frame, labels, alpha=0.5, palette=palette, ignore_index=0), float)
        error = np.abs(np.asarray(drawn.convert("RGB"), float) - overlay)
        assert error.mean() < 6.0  # GIF's 256-colour quantisation
    return palette


def test_propagate_a_folder_of_frames(tmp_path, sample, inputs, shipped):
    folder, mask, _ = inputs
    assert main(["propagate", str(folder), "--mask", str(mask), "--out", str(tmp_path), "--size", str(MODEL_SIZE)]) == 0
    names = [f"frame{t * 5}" for t in range(FRAMES)]
    frames = [Image.open(folder / f"{name}.png").convert("RGB") for name in names]
    palette = check_outputs(tmp_path, names, frames, sample.masks[0], shipped, fps=10)
    assert palette.tolist() == [[0, 0, 0], [200, 0, 0], [0, 200, 0]]  # the mask's own palette is kept


def test_propagate_a_video_file(tmp_path, sample, inputs, shipped):
    _, mask, video = inputs
    gray = tmp_path / "gray.png"
    Image.fromarray(sample.masks[0]).save(gray)  # a grayscale mask of ids
    out = tmp_path / "out"
    assert main(["propagate", str(video), "--mask", str(gray), "--out", str(out), "--size", str(MODEL_SIZE)]) == 0
    with av.open(str(video)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    palette = check_outputs(out, [f"{t:05d}" for t in range(FRAMES)], frames, sample.masks[0], shipped, fps=8)
    assert palette[0].tolist() == [0, 0, 0] and len({tuple(c) for c in palette}) == 3


def test_defaults_agree_with_the_library():
    assert cli.PROPAGATION_DEFAULTS == {
        "context": propagation.CONTEXT,
        "topk": propagation.TOPK,
        "radius": propagation.RADIUS,
        "temperature": propagation.TEMPERATURE,
        "short_side_tokens": propagation.SHORT_SIDE_TOKENS,
    }
    assert cli.PROPAGATION_NEIGHBOURHOODS == propagation.NEIGHBOURHOODS


def test_bad_masks_are_refused(tmp_path, sample, inputs, capsys):
    folder, _, _ = inputs
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(sample.masks[0][..., None], 3, axis=2)).save(rgb)
    assert main(["propagate", str(folder), "--mask", str(rgb), "--out", str(tmp_path / "a")]) == 1
    assert "palette (P) or grayscale (L) PNG" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.fromarray(sample.masks[0][:32]).save(small)
    assert main(["propagate", str(folder), "--mask", str(small), "--out", str(tmp_path / "b")]) == 1
    assert "at the frames' size" in capsys.readouterr().err
    assert main(["propagate", str(tmp_path / "missing"), "--mask", str(small), "--out", str(tmp_path / "c")]) == 1
    assert "does not exist" in capsys.readouterr().err
