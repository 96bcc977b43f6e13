"""Real images with dense depth that ship inside pip packages.

- `load_motorcycle()`: the left image of scikit-image's Middlebury-2014 "motorcycle" pair (741 x 500) with depth
  from its ground-truth disparity, in metres.
- `load_quokka()`: imgaug's quokka photo (960 x 643) with its relative depth map (and the annotated foreground
  polygon as a mask). imgaug is never imported (it needs OpenCV and is unmaintained): install its wheel without
  dependencies, `pip install --no-deps imgaug==0.4.0`, and the files are read from the installed package folder.

Depth maps are float32 [H, W] with 0 where there is no ground truth, the convention of the depth heads and metrics.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Calibration of the 4x down-sampled pair in scikit-image (from `skimage.data.stereo_motorcycle.__doc__`).
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_BASELINE_M = 0.193001
MOTORCYCLE_DOFFS_PX = 31.086  # "principal point dx": x-difference of the two cameras' principal points

QUOKKA_FILES = ("quokka.jpg", "quokka_depth_map_halfres.png", "quokka_annotations.json")


@dataclass
class DepthSample:
    """An RGB image with dense depth: `depth` float32 [H, W] (0 = no ground truth), `valid` = depth > 0, `units`
    of the depth ("m" or "relative"), and an optional foreground `mask` (bool [H, W])."""

    name: str
    image: Image.Image
    depth: np.ndarray
    units: str
    mask: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        return self.depth > 0


def disparity_to_depth(
    disparity: np.ndarray, focal_px: float, baseline: float, doffs_px: float = 0.0
) -> np.ndarray:
    """Depth `focal_px * baseline / (disparity + doffs_px)` in the units of `baseline`, float32; 0 where the
    disparity is missing (NaN / inf) or the denominator is not positive.

    `doffs_px` is the x-offset between the two cameras' principal points (Middlebury's "doffs"); for a pair whose
    principal points coincide it is 0 and this is the textbook f * B / d.
    """
    disparity = np.asarray(disparity, dtype=np.float64)
    denominator = disparity + doffs_px
    valid = np.isfinite(denominator) & (denominator > 0)
    depth = np.zeros(disparity.shape, dtype=np.float64)
    depth[valid] = focal_px * baseline / denominator[valid]
    return depth.astype(np.float32)


def load_motorcycle(use_doffs: bool = True) -> DepthSample:
    """The left motorcycle image (PIL RGB, 741 x 500) and its ground-truth depth in metres (about 93% of the pixels;
    2.1 m to 5.0 m), from `skimage.data.stereo_motorcycle()`.

    use_doffs: include the principal-point offset of Middlebury's calibration, Z = f * B / (d + doffs) (correct);
        False gives the plain f * B / d, which overestimates the depth (3.2 m to 26.7 m here).
    """
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError(
            "load_motorcycle reads scikit-image's bundled stereo pair: pip install scikit-image"
        ) from error
    left, _, disparity = data.stereo_motorcycle()
    doffs = MOTORCYCLE_DOFFS_PX if use_doffs else 0.0
    depth = disparity_to_depth(disparity, MOTORCYCLE_FOCAL_PX, MOTORCYCLE_BASELINE_M, doffs)
    return DepthSample("motorcycle", Image.fromarray(left), depth, "m")


def quokka_dir() -> Path:
    """The installed imgaug package folder holding the quokka files (imgaug itself is not imported)."""
    spec = importlib.util.find_spec("imgaug")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    missing = [name for name in QUOKKA_FILES if folder is None or not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"The quokka image and depth map come from the imgaug wheel, which is not installed (missing "
            f"{', '.join(missing)}). Install its files without its dependencies: pip install --no-deps imgaug==0.4.0 "
            "(dinov3_hf reads the files and never imports imgaug)."
        )
    return folder


def load_quokka(near: float = 1.0, far: float = 5.0) -> DepthSample:
    """imgaug's quokka photo (PIL RGB, 960 x 643) with its depth map and foreground mask.

    The bundled depth map is relative (8-bit, half resolution, 255 = nearest, 0 = farthest, as imgaug's
    `quokka_heatmap` reads it); it is upsampled bilinearly to the photo and mapped linearly onto [near, far]
    ("relative" units: only the ordering and ratios within [near, far] mean anything). `mask` is the annotated quokka
    polygon rasterised at full resolution.
    """
    if not 0 < near < far:
        raise ValueError(f"Need 0 < near < far, got near={near}, far={far}.")
    folder = quokka_dir()
    with Image.open(folder / "quokka.jpg") as file:
        image = file.convert("RGB")
    with Image.open(folder / "quokka_depth_map_halfres.png") as file:
        half = file.convert("L")
    closeness = np.asarray(half.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    depth = (near + (far - near) * (1.0 - closeness)).astype(np.float32)
    return DepthSample("quokka", image, depth, "relative", mask=_quokka_mask(folder, image.size))


def _quokka_mask(folder: Path, size: tuple[int, int]) -> np.ndarray:
    annotations = json.loads((folder / "quokka_annotations.json").read_text())
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in annotations.get("polygons", []):
        points = [(float(p["x"]), float(p["y"])) for p in polygon["keypoints"]]
        draw.polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def load_depth_sample(name: str, **kwargs) -> DepthSample:
    """`load_motorcycle` or `load_quokka` by name ("motorcycle" / "quokka")."""
    loaders = {"motorcycle": load_motorcycle, "quokka": load_quokka}
    if name not in loaders:
        raise ValueError(f"Unknown depth sample {name!r}; available: {', '.join(loaders)}.")
    return loaders[name](**kwargs)


def depth_crops(
    sample: DepthSample,
    num: int,
    crop_size: int | tuple[int, int],
    out_size: int | tuple[int, int] | None = None,
    x_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    min_valid: float = 0.5,
) -> list[tuple[Image.Image, np.ndarray]]:
    """`num` random (image, depth) crops of `crop_size` (height, width), resized to `out_size`: the image
    bilinearly, the depth by nearest neighbour (so missing depth stays 0 and is never blended with valid depth).

    x_range: the fraction of the image width the crops lie in, e.g. (0, 0.7) for training and (0.7, 1) for a
        held-out strip. min_valid: minimal fraction of pixels with depth (crops are redrawn up to 100 times).
    """
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    out_h, out_w = (crop_h, crop_w) if out_size is None else (
        (out_size, out_size) if isinstance(out_size, int) else out_size
    )
    width, height = sample.image.size
    left, right = round(x_range[0] * width), round(x_range[1] * width)
    if crop_h > height or crop_w > right - left:
        raise ValueError(
            f"A {crop_w}x{crop_h} crop does not fit the {right - left}x{height} area x_range={x_range} of the "
            f"{width}x{height} image {sample.name!r}."
        )
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(num):
        for _attempt in range(100):
            y = int(rng.integers(0, height - crop_h + 1))
            x = int(rng.integers(left, right - crop_w + 1))
            depth = sample.depth[y : y + crop_h, x : x + crop_w]
            if (depth > 0).mean() >= min_valid:
                break
        image = sample.image.crop((x, y, x + crop_w, y + crop_h))
        if (out_h, out_w) != (crop_h, crop_w):
            image = image.resize((out_w, out_h), Image.Resampling.BILINEAR)
            depth = np.asarray(Image.fromarray(depth).resize((out_w, out_h), Image.Resampling.NEAREST))
        crops.append((image, np.array(depth, dtype=np.float32)))
    return crops
