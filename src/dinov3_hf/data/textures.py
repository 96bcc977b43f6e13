"""Texture mosaics: unlimited, seeded, exactly labelled segmentation (and classification) data from bundled photos.

Every sample is built from scikit-image's bundled CC0 / public-domain images (`skimage.data`): the CC0
textures `brick`, `grass` and `gravel`, and crops of photos (`coffee`, `rocket`, ...) as further classes. A mosaic
splits the image into regions (a Voronoi diagram of random seed points, or a random guillotine partition into
rectangles), gives each region a class, and copies the region's pixels from a random window of that class's
texture. The label map is therefore exact: pixel (y, x) of a region with class c and window offset (oy, ox) is
`texture(c)[oy + y, ox + x]`.

Sample `i` of a generator with seed `s` depends only on (s, i), so datasets are reproducible and can be as large as
needed; use different seeds for training and held-out sets, and disjoint `source_rows` (e.g. (0, 0.6) and (0.6, 1))
for held-out sets whose texture pixels were never seen in training.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# name -> (scikit-image loader name, licence as stated by scikit-image)
TEXTURES: dict[str, tuple[str, str]] = {
    "brick": ("brick", "CC0"),
    "grass": ("grass", "CC0"),
    "gravel": ("gravel", "CC0"),
    "coffee": ("coffee", "CC0"),
    "rocket": ("rocket", "public domain (SpaceX)"),
    "chelsea": ("chelsea", "CC0"),
    "astronaut": ("astronaut", "public domain (NASA)"),
    "hubble": ("hubble_deep_field", "public domain (NASA)"),
    "retina": ("retina", "CC0"),
    "camera": ("camera", "CC0"),
}
DEFAULT_CLASSES = ("brick", "grass", "gravel", "coffee", "rocket")
LAYOUTS = ("voronoi", "rectangles")


def _skimage_data():
    try:
        from skimage import data
    except ImportError as error:  # scikit-image is an optional dependency of dinov3_hf
        raise ImportError(
            "The texture and stereo datasets read the images bundled with scikit-image: pip install scikit-image"
        ) from error
    return data


@functools.lru_cache(maxsize=64)
def _texture_array(name: str, scale: float) -> np.ndarray:
    if name not in TEXTURES:
        raise ValueError(f"Unknown texture {name!r}; available: {', '.join(TEXTURES)}.")
    array = np.asarray(getattr(_skimage_data(), TEXTURES[name][0])())
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3].astype(np.uint8))
    if scale != 1.0:
        height, width = array.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR, reducing_gap=None))
    array.setflags(write=False)
    return array


def texture(name: str, scale: float = 1.0) -> np.ndarray:
    """The RGB uint8 array [H, W, 3] of a bundled texture / photo (grayscale ones repeated to 3 channels), resized by
    `scale` (bilinear). Cached and read-only."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}.")
    return _texture_array(name, float(scale))


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size}.")
    return height, width


@dataclass
class MosaicSample:
    """One mosaic: `image` (PIL RGB), `labels` (uint8 [H, W] class indices), `regions` ([H, W] region index) and,
    per region, its class and the (row, column) offset of its window in the class's texture."""

    image: Image.Image
    labels: np.ndarray
    regions: np.ndarray
    region_classes: list[int] = field(default_factory=list)
    region_offsets: list[tuple[int, int]] = field(default_factory=list)


def voronoi_regions(rng: np.random.Generator, height: int, width: int, n_regions: int) -> np.ndarray:
    """Region index [H, W] of the Voronoi cell (nearest of `n_regions` random seed points) of every pixel."""
    points = rng.uniform((0, 0), (height, width), size=(n_regions, 2))
    ys, xs = np.mgrid[0:height, 0:width]
    dist = (ys[..., None] + 0.5 - points[:, 0]) ** 2 + (xs[..., None] + 0.5 - points[:, 1]) ** 2
    regions = dist.argmin(axis=-1)
    # renumber so that region indices are 0..k-1 over the cells that got pixels (a cell can be empty on a tiny grid)
    _, regions = np.unique(regions, return_inverse=True)
    return regions.reshape(height, width).astype(np.int64)


def rectangle_regions(rng: np.random.Generator, height: int, width: int, n_regions: int) -> np.ndarray:
    """Region index [H, W] of a random guillotine partition into up to `n_regions` axis-aligned rectangles: the
    largest splittable rectangle is cut at a random position, along its longer side, until there are enough."""
    boxes = [(0, 0, height, width)]  # (top, left, bottom, right)
    while len(boxes) < n_regions:
        order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
        for i in order:
            top, left, bottom, right = boxes[i]
            h, w = bottom - top, right - left
            if max(h, w) < 2:
                continue
            if h >= w:
                cut = int(rng.integers(top + max(1, h // 5), bottom - max(1, h // 5) + 1))
                cut = min(max(cut, top + 1), bottom - 1)
                boxes[i : i + 1] = [(top, left, cut, right), (cut, left, bottom, right)]
            else:
                cut = int(rng.integers(left + max(1, w // 5), right - max(1, w // 5) + 1))
                cut = min(max(cut, left + 1), right - 1)
                boxes[i : i + 1] = [(top, left, bottom, cut), (top, cut, bottom, right)]
            break
        else:  # nothing can be split (a 1x1 image)
            break
    regions = np.zeros((height, width), dtype=np.int64)
    for index, (top, left, bottom, right) in enumerate(boxes):
        regions[top:bottom, left:right] = index
    return regions


_REGION_BUILDERS: dict[str, Callable[[np.random.Generator, int, int, int], np.ndarray]] = {
    "voronoi": voronoi_regions,
    "rectangles": rectangle_regions,
}


class TextureMosaics:
    """An unlimited, seeded generator of texture-mosaic segmentation samples.

    Args:
        classes: texture names (keys of `TEXTURES`); class index i is `classes[i]`.
        size: image size, an int or (height, width).
        layout: "voronoi" (cells of random seed points) or "rectangles" (random guillotine partition).
        n_regions: (min, max) number of regions per image, both inclusive (fewer when a Voronoi cell gets no pixel).
        texture_scale: every texture is resized by this factor first (smaller = more texture periods per image).
        source_rows: (start, stop) fractions of each texture's height that the windows lie in, e.g. (0, 0.6) for
            training and (0.6, 1) for a held-out set that shares no texture pixels with it.
        seed: sample i depends only on (seed, i).

    `mosaics[i]` is an [`MosaicSample`]; `mosaics.pair(i)` is just `(image, labels)`.
    """

    def __init__(
        self,
        classes: Sequence[str] = DEFAULT_CLASSES,
        size: int | Sequence[int] = 64,
        layout: str = "voronoi",
        n_regions: tuple[int, int] = (2, 6),
        texture_scale: float = 0.5,
        source_rows: tuple[float, float] = (0.0, 1.0),
        seed: int = 0,
    ):
        self.classes = tuple(classes)
        if not self.classes:
            raise ValueError("classes must name at least one texture.")
        if len(self.classes) > 255:
            raise ValueError("At most 255 classes fit the uint8 label maps (255 is the ignore index).")
        unknown = [c for c in self.classes if c not in TEXTURES]
        if unknown:
            raise ValueError(f"Unknown texture(s) {unknown}; available: {', '.join(TEXTURES)}.")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
        low, high = (int(n) for n in n_regions)
        if not 1 <= low <= high:
            raise ValueError(f"n_regions must be (min, max) with 1 <= min <= max, got {n_regions}.")
        self.size = _size_hw(size)
        self.layout = layout
        self.n_regions = (low, high)
        self.texture_scale = float(texture_scale)
        start, stop = (float(f) for f in source_rows)
        if not 0.0 <= start < stop <= 1.0:
            raise ValueError(f"source_rows must be fractions 0 <= start < stop <= 1, got {source_rows}.")
        self.source_rows = (start, stop)
        self.seed = int(seed)
        height, width = self.size
        for name in self.classes:
            top, bottom = self._row_range(name)
            source = texture(name, self.texture_scale)
            if bottom - top < height or source.shape[1] < width:
                raise ValueError(
                    f"Texture {name!r} at texture_scale={self.texture_scale} has a {source.shape[1]}x{bottom - top} "
                    f"area for windows (source_rows={self.source_rows}), smaller than the {width}x{height} mosaics; "
                    "raise texture_scale, widen source_rows or lower size."
                )

    def _row_range(self, name: str) -> tuple[int, int]:
        """Rows [top, bottom) of the scaled texture `name` that windows may cover."""
        rows = texture(name, self.texture_scale).shape[0]
        return round(self.source_rows[0] * rows), round(self.source_rows[1] * rows)

    def _window(self, rng: np.random.Generator, name: str) -> tuple[int, int]:
        """A random (row, column) offset of a size-sized window of texture `name` inside `source_rows`."""
        height, width = self.size
        top, bottom = self._row_range(name)
        oy = int(rng.integers(top, bottom - height + 1))
        ox = int(rng.integers(0, texture(name, self.texture_scale).shape[1] - width + 1))
        return oy, ox

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.classes))

    def rng(self, index: int) -> np.random.Generator:
        if index < 0:
            raise IndexError(f"Sample indices are non-negative, got {index}.")
        return np.random.default_rng([self.seed, int(index)])

    def __getitem__(self, index: int) -> MosaicSample:
        rng = self.rng(index)
        height, width = self.size
        n_regions = int(rng.integers(self.n_regions[0], self.n_regions[1] + 1))
        regions = _REGION_BUILDERS[self.layout](rng, height, width, n_regions)
        count = int(regions.max()) + 1
        region_classes = [int(c) for c in rng.integers(0, len(self.classes), size=count)]
        image = np.empty((height, width, 3), dtype=np.uint8)
        labels = np.empty((height, width), dtype=np.uint8)
        offsets = []
        for region, cls in enumerate(region_classes):
            source = texture(self.classes[cls], self.texture_scale)
            oy, ox = self._window(rng, self.classes[cls])
            offsets.append((oy, ox))
            mask = regions == region
            image[mask] = source[oy : oy + height, ox : ox + width][mask]
            labels[mask] = cls
        return MosaicSample(Image.fromarray(image), labels, regions, region_classes, offsets)

    def pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """(image PIL RGB, label map uint8 [H, W]) of sample `index`."""
        sample = self[index]
        return sample.image, sample.labels

    def crop(self, index: int) -> tuple[Image.Image, int]:
        """A single-texture sample for classification: (image PIL RGB of `size`, class index), seeded like mosaics
        (classes cycle with the index, so any `len(classes)` consecutive indices hold every class once)."""
        rng = self.rng(index)
        height, width = self.size
        cls = index % len(self.classes)
        source = texture(self.classes[cls], self.texture_scale)
        oy, ox = self._window(rng, self.classes[cls])
        return Image.fromarray(np.ascontiguousarray(source[oy : oy + height, ox : ox + width])), cls


def texture_mosaic_dataset(num_samples: int, start: int = 0, **kwargs):
    """A `datasets.Dataset` of `num_samples` mosaics (indices start .. start + num_samples - 1) with columns `image`
    (RGB) and `label` (the class map as an 8-bit grayscale image, pixel value = class index); `kwargs` go to
    [`TextureMosaics`], whose `id2label` names the classes (also listed in `dataset.info.description`)."""
    import datasets

    mosaics = TextureMosaics(**kwargs)
    images, labels = [], []
    for index in range(start, start + num_samples):
        image, label = mosaics.pair(index)
        images.append(image)
        labels.append(Image.fromarray(label))  # uint8 [H, W] -> mode L
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    names = ", ".join(f"{i}: {name}" for i, name in enumerate(mosaics.classes))
    description = f"Texture mosaics; label pixel values are class indices ({names})"
    info = datasets.DatasetInfo(description=description, features=features)
    return datasets.Dataset.from_dict({"image": images, "label": labels}, info=info)


def texture_crop_dataset(num_samples: int, start: int = 0, **kwargs):
    """A `datasets.Dataset` of single-texture crops for classification: columns `image` (RGB) and `label`
    (`ClassLabel` named after the textures); `kwargs` go to [`TextureMosaics`] (`classes`, `size`, `texture_scale`,
    `source_rows`, `seed`)."""
    import datasets

    mosaics = TextureMosaics(**kwargs)
    pairs = [mosaics.crop(index) for index in range(start, start + num_samples)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(mosaics.classes))})
    return datasets.Dataset.from_dict(
        {"image": [p[0] for p in pairs], "label": [p[1] for p in pairs]}, features=features
    )
