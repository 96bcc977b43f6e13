"""Videos with exactly known object masks, made from real photos: objects with exact masks move along known
trajectories (translation and scale) over a still real background photo.

- the quokka: imgaug's quokka photo cut out by its annotated polygon (`stereo.load_quokka`; needs
  `pip install --no-deps imgaug==0.4.0`);
- the horse: scikit-image's horse silhouette filled with one of the bundled textures (`textures.texture`).

Frame t places each object, scaled by s(t) and centred at c(t), both linear in t from their start to their end
values. The object's mask and pixels go through the same affine warp (the mask by nearest neighbour, the pixels
bilinearly) and the object's pixels replace the background where its warped mask is set, later objects in front.
The ground-truth label map is therefore exact: pixel (y, x) of frame t has the id of the front-most object whose
warped mask covers it, else 0. This is a video object segmentation benchmark with no annotation error, for label
propagation (`dinov3_hf.dense.propagation`) and the J&F metric (`dinov3_hf.metrics.video`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .stereo import load_quokka
from .textures import _skimage_data, texture

OBJECTS = ("quokka", "horse")


@dataclass(frozen=True)
class Trajectory:
    """Linear motion of one object over the video: centre (row, column) and height, as fractions of the frame's
    height and width, at the first and at the last frame."""

    start: tuple[float, float]
    end: tuple[float, float]
    height: tuple[float, float]


# the quokka walks right and grows (comes nearer); the horse trots left below it; they never overlap
DEFAULT_TRAJECTORIES = {
    "quokka": Trajectory(start=(0.34, 0.25), end=(0.38, 0.62), height=(0.42, 0.5)),
    "horse": Trajectory(start=(0.76, 0.78), end=(0.74, 0.42), height=(0.36, 0.32)),
}


@dataclass
class VideoSample:
    """`frames`: RGB PIL images of one size; `masks` uint8 [T, H, W]: 0 for the background, i for object i (1-based,
    in the order of `objects`)."""

    name: str
    frames: list[Image.Image]
    masks: np.ndarray
    objects: tuple[str, ...]


def object_cutout(name: str, fill: str = "brick") -> tuple[Image.Image, np.ndarray]:
    """(RGB image, bool mask) of an object, cropped to its mask's bounding box: "quokka" (the photo and its annotated
    polygon) or "horse" (scikit-image's silhouette filled with the texture `fill`)."""
    if name == "quokka":
        sample = load_quokka()
        image, mask = np.asarray(sample.image), sample.mask
    elif name == "horse":
        mask = ~np.asarray(_skimage_data().horse(), dtype=bool)  # the silhouette is False (black) on True (white)
        pixels = texture(fill)
        reps = (-(-mask.shape[0] // pixels.shape[0]), -(-mask.shape[1] // pixels.shape[1]), 1)
        image = np.tile(pixels, reps)[: mask.shape[0], : mask.shape[1]]
    else:
        raise ValueError(f"Unknown object {name!r}; available: {', '.join(OBJECTS)}.")
    rows, cols = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return Image.fromarray(np.ascontiguousarray(image[box])), np.ascontiguousarray(mask[box])


def _background(name: str, size: tuple[int, int]) -> Image.Image:
    """The photo `name` scaled to cover (height, width) and centre-cropped to it."""
    photo = Image.fromarray(texture(name))
    height, width = size
    scale = max(height / photo.height, width / photo.width)
    resized = photo.resize(
        (max(width, round(photo.width * scale)), max(height, round(photo.height * scale))), Image.Resampling.BILINEAR
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def _warp(image: Image.Image, size: tuple[int, int], scale: float, centre: tuple[float, float], resample):
    """`image` scaled by `scale` with its centre at `centre` (row, column) on a (height, width) canvas."""
    height, width = size
    cy, cx = centre
    # PIL's affine transform maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f)
    coefficients = (1 / scale, 0.0, image.width / 2 - cx / scale, 0.0, 1 / scale, image.height / 2 - cy / scale)
    return image.transform((width, height), Image.Transform.AFFINE, coefficients, resample=resample)


def moving_objects_video(
    num_frames: int = 16,
    size: tuple[int, int] = (192, 288),
    background: str = "coffee",
    objects: Sequence[str] = OBJECTS,
    trajectories: dict[str, Trajectory] | None = None,
    fill: str = "brick",
) -> VideoSample:
    """A video of `objects` moving over the photo `background` (a `textures.TEXTURES` name) with exact masks (see
    the module docstring). size: (height, width) of the frames; trajectories: per object name (default
    `DEFAULT_TRAJECTORIES`); fill: the texture of the horse."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}.")
    trajectories = {**DEFAULT_TRAJECTORIES, **(trajectories or {})}
    missing = [name for name in objects if name not in trajectories]
    if missing:
        raise ValueError(f"No trajectory for {', '.join(missing)}; pass trajectories={{name: Trajectory(...)}}.")
    height, width = size
    backdrop = _background(background, size)
    cutouts = [object_cutout(name, fill) for name in objects]
    frames, masks = [], np.zeros((num_frames, height, width), dtype=np.uint8)
    for t in range(num_frames):
        a = t / (num_frames - 1)
        frame = backdrop.copy()
        for index, (name, (image, mask)) in enumerate(zip(objects, cutouts, strict=True), start=1):
            path = trajectories[name]
            centre = tuple((1 - a) * s * side + a * e * side for s, e, side in zip(path.start, path.end, size))
            scale = ((1 - a) * path.height[0] + a * path.height[1]) * height / image.height
            warped_mask = _warp(Image.fromarray(mask), size, scale, centre, Image.Resampling.NEAREST)
            covered = np.asarray(warped_mask, dtype=bool)
            pixels = _warp(image, size, scale, centre, Image.Resampling.BILINEAR)
            frame.paste(pixels, mask=warped_mask.point(lambda v: 255 * v))
            masks[t][covered] = index
        frames.append(frame)
    return VideoSample(f"{'+'.join(objects)} on {background}", frames, masks, tuple(objects))
