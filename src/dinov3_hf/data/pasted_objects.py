"""Pasted objects: a small detection, instance, semantic and panoptic segmentation set of real photos with exact labels.

Objects are cut out of photos that installed packages ship together with an exact mask, and pasted onto texture
backgrounds (`textures.texture`):

- "quokka": imgaug's quokka photo cut out by its annotated polygon (`stereo.load_quokka`; needs
  `pip install --no-deps imgaug==0.4.0`; the wheel is MIT-licensed and states no separate licence for the photo);
- "horse": scikit-image's horse silhouette (`skimage.data.horse`, CC0, from openclipart) filled with the striped
  fur above the eyes of the cat photo `skimage.data.chelsea` (CC0; `FUR_WINDOW`, scaled to cover the horse);
- "coin": the 24 Greek coins of `skimage.data.coins` (Brooklyn Museum Collection, "no known copyright
  restrictions" as scikit-image states), each cut out by the region-based segmentation of scikit-image's gallery
  (markers below 30 and above 150, watershed of the Sobel image, holes filled, connected components).

Image `i` of `make_pasted_objects(n, size, seed)` depends only on (seed, i): a background window of a random texture,
then 1 to 4 objects, each a random cutout of a random category, scaled (image bilinearly, mask by nearest neighbour),
flipped left-right with probability 1/2 and placed with its centre anywhere in the image, later objects in front. An
object is kept only if its visible part (inside the image, not covered by later objects) is at least
`MIN_VISIBLE_FRACTION` of its pasted mask and `MIN_AREA_FRACTION` of the image; otherwise its placement is redrawn
(and the object left out after 10 tries), so every object pixel of the image belongs to a labelled object. Labels are
therefore exact: an object's mask is the set of pixels its cutout wrote and nothing covered afterwards.

Use different seeds for training and held-out images, and `backgrounds=HELD_OUT_BACKGROUNDS` for held-out images on
textures never seen in training.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .moving_objects import object_cutout
from .textures import TEXTURES, _skimage_data, texture

CATEGORIES = ("quokka", "horse", "coin")
TRAIN_BACKGROUNDS = ("brick", "grass", "gravel")
HELD_OUT_BACKGROUNDS = ("coffee", "retina")
# object height as a fraction of the image size, (min, max), per category
HEIGHT_RANGES = {"quokka": (0.3, 0.65), "horse": (0.25, 0.55), "coin": (0.12, 0.25)}
MAX_OBJECTS = 4
MIN_VISIBLE_FRACTION = 0.4
MIN_AREA_FRACTION = 0.004
_PLACEMENT_TRIES = 10
FUR_WINDOW = (slice(0, 90), slice(90, 330))  # fur above the cat's eyes in skimage.data.chelsea (300 x 451)


@dataclass(frozen=True)
class Placement:
    """Where one object was pasted: `cutout` indexes `object_cutouts(CATEGORIES[category])`; the cutout was resized
    to (height, width), flipped left-right if `flip`, and its top-left corner put at (top, left), possibly outside
    the image."""

    category: int
    cutout: int
    top: int
    left: int
    height: int
    width: int
    flip: bool


@dataclass
class PastedObjectsImage:
    """One image with N objects: `image` (PIL RGB), `boxes` (float32 [N, 4], xyxy pixels: x0 = first column,
    x1 = last column + 1, likewise y, i.e. the box around the mask's pixel squares), `labels` (int64 [N], indices
    into `CATEGORIES`), `masks` (bool [N, H, W], the visible part of each object), `semantic` (int64 [H, W],
    0 = background, k + 1 = category k), the `placements` (one per object, same order) and the `background`
    texture name, with the (row, column) offset of the image's window in `texture(background, background_scale)`.
    Objects are listed back to front."""

    image: Image.Image
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    semantic: torch.Tensor
    placements: list[Placement] = field(default_factory=list)
    background: str = ""
    background_scale: float = 1.0
    background_offset: tuple[int, int] = (0, 0)

    def target(self) -> dict[str, torch.Tensor]:
        """The ground truth as `metrics.detection` takes it: {"boxes", "labels", "masks"}."""
        return {"boxes": self.boxes, "labels": self.labels, "masks": self.masks}

    def panoptic(self) -> dict:
        """The panoptic ground truth in transformers' `post_process_panoptic_segmentation` format: "segmentation"
        (int32 [H, W], 0 = background, i + 1 = object i) and "segments_info" ([{"id": i + 1, "label_id": label}])."""
        segmentation = torch.zeros(self.semantic.shape, dtype=torch.int32)
        for index, mask in enumerate(self.masks):
            segmentation[mask] = index + 1
        info = [{"id": index + 1, "label_id": int(label)} for index, label in enumerate(self.labels)]
        return {"segmentation": segmentation, "segments_info": info}


@functools.lru_cache(maxsize=1)
def _coin_cutouts() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(RGB uint8, bool mask) of each coin of `skimage.data.coins`, cropped to its mask's box, in scan order."""
    from scipy import ndimage
    from skimage import filters, segmentation

    coins = _skimage_data().coins()
    markers = np.zeros(coins.shape, dtype=np.uint8)
    markers[coins < 30], markers[coins > 150] = 1, 2
    foreground = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) == 2)
    regions, _ = ndimage.label(foreground)
    min_area = 0.005 * coins.size  # drops a few specks; every coin covers more than 1% of the photo
    cutouts = []
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        mask = regions[box] == index
        if mask.sum() >= min_area:
            cutouts.append((np.repeat(coins[box][:, :, None], 3, axis=2), mask))
    return tuple(cutouts)


def _horse_cutout() -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, bool mask) of the horse silhouette cropped to its bounding box and filled with the cat's fur."""
    _, mask = object_cutout("horse")
    fur = Image.fromarray(np.ascontiguousarray(_skimage_data().chelsea()[FUR_WINDOW]))
    scale = max(mask.shape[0] / fur.height, mask.shape[1] / fur.width)
    size = (max(mask.shape[1], round(fur.width * scale)), max(mask.shape[0], round(fur.height * scale)))
    fur = fur.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(fur)[: mask.shape[0], : mask.shape[1]], mask


@functools.lru_cache(maxsize=len(CATEGORIES))
def _cutouts(name: str) -> tuple[tuple[Image.Image, Image.Image], ...]:
    if name == "coin":
        arrays = _coin_cutouts()
    elif name == "horse":
        arrays = (_horse_cutout(),)
    elif name == "quokka":
        image, mask = object_cutout("quokka")
        arrays = ((np.asarray(image), mask),)
    else:
        raise ValueError(f"Unknown category {name!r}; available: {', '.join(CATEGORIES)}.")
    return tuple((Image.fromarray(image), Image.fromarray(mask.astype(np.uint8))) for image, mask in arrays)


def object_cutouts(name: str) -> list[tuple[Image.Image, np.ndarray]]:
    """The cutouts of category `name`: (RGB image, bool mask) pairs cropped to the mask's bounding box (one for
    "quokka" and "horse", 24 for "coin")."""
    return [(image, np.asarray(mask, dtype=bool)) for image, mask in _cutouts(name)]


def _render(placement: Placement, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixels [S, S, 3], mask [S, S]) of `placement` on an S x S canvas, and the pasted mask's full area."""
    image, mask = _cutouts(CATEGORIES[placement.category])[placement.cutout]
    shape = (placement.width, placement.height)
    image = image.resize(shape, Image.Resampling.BILINEAR)
    mask = mask.resize(shape, Image.Resampling.NEAREST)
    if placement.flip:
        image, mask = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels, full = np.zeros((size, size, 3), dtype=np.uint8), np.zeros((size, size), dtype=bool)
    top, left = placement.top, placement.left
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + placement.height, size), min(left + placement.width, size)
    if y0 < y1 and x0 < x1:
        crop = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        pixels[y0:y1, x0:x1] = np.asarray(image)[crop]
        full[y0:y1, x0:x1] = np.asarray(mask, dtype=bool)[crop]
    return pixels, full, int(np.count_nonzero(np.asarray(mask)))


def _draw_placement(rng: np.random.Generator, size: int) -> Placement:
    category = int(rng.integers(len(CATEGORIES)))
    name = CATEGORIES[category]
    cutout = int(rng.integers(len(_cutouts(name))))
    image = _cutouts(name)[cutout][0]
    low, high = HEIGHT_RANGES[name]
    height = max(2, round(rng.uniform(low, high) * size))
    width = max(2, round(height * image.width / image.height))
    cy, cx = rng.uniform(0, size, size=2)
    flip = bool(rng.random() < 0.5)
    return Placement(category, cutout, round(cy - height / 2), round(cx - width / 2), height, width, flip)


def _background(
    rng: np.random.Generator, backgrounds: Sequence[str], size: int
) -> tuple[str, float, tuple[int, int]]:
    """A random texture name, the scale that makes its shorter side at least `size`, and a random window offset."""
    name = backgrounds[int(rng.integers(len(backgrounds)))]
    scale = max(1.0, size / min(texture(name).shape[:2]))
    rows, cols = texture(name, scale).shape[:2]
    return name, scale, (int(rng.integers(rows - size + 1)), int(rng.integers(cols - size + 1)))


def pasted_objects_image(
    index: int, image_size: int = 256, seed: int = 0, backgrounds: Sequence[str] = TRAIN_BACKGROUNDS
) -> PastedObjectsImage:
    """Image `index` of the set with `seed` (see the module docstring); depends only on (seed, index)."""
    if index < 0:
        raise IndexError(f"Image indices are non-negative, got {index}.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}.")
    unknown = [name for name in backgrounds if name not in TEXTURES]
    if not backgrounds or unknown:
        raise ValueError(f"backgrounds must name textures among {', '.join(TEXTURES)}; got {list(backgrounds)}.")
    rng = np.random.default_rng([int(seed), int(index)])
    background, scale, (top, left) = _background(rng, backgrounds, image_size)
    canvas = texture(background, scale)[top : top + image_size, left : left + image_size].copy()
    min_area = MIN_AREA_FRACTION * image_size * image_size
    placements: list[Placement] = []
    visible: list[np.ndarray] = []
    full_areas: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _ in range(_PLACEMENT_TRIES):
            placement = _draw_placement(rng, image_size)
            pixels, mask, area = _render(placement, image_size)
            kept = [v & ~mask for v in visible]
            areas = [np.count_nonzero(m) for m in (*kept, mask)]
            if all(a >= max(min_area, MIN_VISIBLE_FRACTION * full) for a, full in zip(areas, (*full_areas, area))):
                canvas[mask] = pixels[mask]
                placements.append(placement)
                visible = [*kept, mask]
                full_areas.append(area)
                break
    labels = torch.tensor([p.category for p in placements], dtype=torch.int64)
    masks = torch.zeros((len(visible), image_size, image_size), dtype=torch.bool)
    if visible:
        masks = torch.from_numpy(np.stack(visible))
    semantic = torch.zeros((image_size, image_size), dtype=torch.int64)
    boxes = torch.zeros((len(placements), 4), dtype=torch.float32)
    for i, mask in enumerate(masks):
        semantic[mask] = labels[i] + 1
        rows, cols = torch.nonzero(mask.any(dim=1))[:, 0], torch.nonzero(mask.any(dim=0))[:, 0]
        boxes[i] = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
    return PastedObjectsImage(
        Image.fromarray(canvas), boxes, labels, masks, semantic, placements, background, scale, (top, left)
    )


def make_pasted_objects(
    n_images: int, image_size: int = 256, seed: int = 0, backgrounds: Sequence[str] = TRAIN_BACKGROUNDS
) -> list[PastedObjectsImage]:
    """Images 0 .. n_images - 1 of the pasted-objects set with `seed` on the textures `backgrounds` (names in
    `textures.TEXTURES`; `HELD_OUT_BACKGROUNDS` for a held-out set), each `image_size` pixels square."""
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}.")
    return [pasted_objects_image(index, image_size, seed, backgrounds) for index in range(n_images)]
