"""Visualisations: PCA maps of dense features (the first three principal components of the patch tokens as RGB),
coloured depth maps and segmentation overlays."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .processing.image_processing import _to_float_rgb

_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def pca_components(features: np.ndarray, n_components: int = 3) -> np.ndarray:
    """The top principal directions of `features` [N, D] as rows [n_components, D], unit norm.

    Sign convention: each direction's entry of largest magnitude is positive. With fewer than `n_components`
    available directions (N - 1 or D smaller), the missing rows are zero.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    components = np.zeros((n_components, x.shape[1]))
    k = min(n_components, vt.shape[0])
    components[:k] = vt[:k]
    for row in components:
        if row.any() and row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return components


def pca_rgb(
    features: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None, clip_percentile: float = 1.0
) -> np.ndarray:
    """RGB uint8 image [h, w, 3] of the first 3 PCA components of the patch features.

    features: [N, D] in row-major grid order with `grid_size=(h, w)`, or [h, w, D] (then `grid_size` is optional).
    Each component is scaled from its [clip_percentile, 100 - clip_percentile] percentile range to 0..255 (values
    outside are clipped); `clip_percentile=0` is plain min-max scaling. A constant component maps to 0.
    """
    return scale_components(pca_projections(features, grid_size), clip_percentile)


def pca_projections(
    features: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None, n_components: int = 3
) -> np.ndarray:
    """float64 [h, w, n_components]: the centred features' projections (f − mean) · v_k on their top principal
    directions v_k (`pca_components`). features: as `pca_rgb`."""
    x = feature_grid(features, grid_size)
    flat = x.reshape(-1, x.shape[-1])
    projected = (flat - flat.mean(axis=0)) @ pca_components(flat, n_components).T
    return projected.reshape(*x.shape[:2], n_components)


def feature_grid(features: torch.Tensor | np.ndarray, grid_size: tuple[int, int] | None = None) -> np.ndarray:
    """float64 [h, w, D] array of patch features given as [h, w, D], or as [N, D] in row-major grid order with
    `grid_size=(h, w)`."""
    x = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim == 3:
        if grid_size is not None and tuple(grid_size) != x.shape[:2]:
            raise ValueError(f"features of shape {x.shape} do not match grid_size={tuple(grid_size)}.")
        return x.astype(np.float64)
    if x.ndim == 2:
        if grid_size is None:
            raise ValueError("features [N, D] need grid_size=(h, w); or pass them as [h, w, D].")
        h, w = grid_size
        if h * w != x.shape[0]:
            raise ValueError(f"grid_size={tuple(grid_size)} has {h * w} cells but features have N={x.shape[0]} rows.")
        return x.reshape(h, w, -1).astype(np.float64)
    raise ValueError(f"features must be [N, D] or [h, w, D], got shape {x.shape}.")


def scale_components(projected: np.ndarray, clip_percentile: float = 1.0) -> np.ndarray:
    """uint8 [..., C] of float components [..., C]: each channel scaled from its [clip_percentile, 100 -
    clip_percentile] percentile range to 0..255, values outside clipped; a constant channel maps to 0."""
    if not 0 <= clip_percentile < 50:
        raise ValueError(f"clip_percentile must be in [0, 50), got {clip_percentile}.")
    flat = np.asarray(projected, dtype=np.float64).reshape(-1, projected.shape[-1])
    low, high = np.percentile(flat, [clip_percentile, 100 - clip_percentile], axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.clip((flat - low) / span, 0.0, 1.0)
    scaled[:, high <= low] = 0.0
    return np.round(scaled * 255).astype(np.uint8).reshape(projected.shape)


def pca_image(
    features: torch.Tensor | np.ndarray,
    grid_size: tuple[int, int] | None,
    size: tuple[int, int],
    resample: str = "nearest",
    clip_percentile: float = 1.0,
) -> Image.Image:
    """[`pca_rgb`] upsampled to `size=(width, height)` (e.g. the original image's size) as a PIL RGB image.

    resample: "nearest" (crisp patches), "bilinear" or "bicubic".
    """
    if resample not in _PIL_RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_PIL_RESAMPLE)}, got {resample!r}.")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be a positive (width, height), got {size}.")
    rgb = pca_rgb(features, grid_size, clip_percentile=clip_percentile)
    return Image.fromarray(rgb).resize((width, height), _PIL_RESAMPLE[resample])


# -- dense predictions: depth colouring and segmentation overlays ----------------------------------------------------

# Polynomial fit of Google's Turbo colormap (A. Mikhailov, 2019): channel = sum_k c_k x^k, k = 0..5. An
# approximation (within about 0.1 per channel of matplotlib's lookup table) that needs no matplotlib.
_TURBO_COEFFS = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)
# tab10 first, so that small label sets get familiar, well separated colours
_TAB10 = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def _colormap(values: np.ndarray, cmap: str) -> np.ndarray:
    """Float RGB in [0, 1] [..., 3] of `values` in [0, 1]: built-in "turbo" and "gray", else a matplotlib colormap."""
    x = np.clip(values, 0.0, 1.0)
    if cmap == "turbo":
        powers = np.stack([x**k for k in range(6)], axis=-1)
        return np.clip(powers @ _TURBO_COEFFS.T, 0.0, 1.0)
    if cmap == "gray":
        return np.repeat(x[..., None], 3, axis=-1)
    try:
        import matplotlib
    except ImportError as error:
        raise ValueError(f"cmap={cmap!r} needs matplotlib; the built-in colormaps are 'turbo' and 'gray'.") from error
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as error:
        raise ValueError(f"Unknown colormap {cmap!r}.") from error
    return np.asarray(colormap(x))[..., :3]


def colorize_depth(
    depth: torch.Tensor | np.ndarray,
    cmap: str = "turbo",
    vmin: float | None = None,
    vmax: float | None = None,
    near_is_high: bool = True,
    invalid_color: tuple[int, int, int] = (0, 0, 0),
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """A depth map [H, W] as a colour PIL image: near pixels at the high end of `cmap` (red for "turbo") with
    `near_is_high`, far ones at the low end (blue).

    The colour range is [vmin, vmax], by default the 2nd and 98th percentiles of the valid pixels (finite and > 0);
    invalid pixels get `invalid_color`. size: optional output (width, height), nearest-neighbour resized.
    """
    d = depth.detach().float().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth, np.float64)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"depth must be a 2-D map [H, W], got shape {d.shape}.")
    d = d.astype(np.float64)
    valid = np.isfinite(d) & (d > 0)
    if valid.any():
        low, high = np.percentile(d[valid], [2, 98])
    else:
        low, high = 0.0, 1.0
    low = low if vmin is None else vmin
    high = high if vmax is None else vmax
    t = (d - low) / (high - low) if high > low else np.zeros_like(d)
    t = np.where(valid, t, 0.0)
    rgb = _colormap(1.0 - t if near_is_high else t, cmap)
    rgb = np.round(rgb * 255).astype(np.uint8)
    rgb[~valid] = np.asarray(invalid_color, dtype=np.uint8)
    image = Image.fromarray(rgb)
    return image if size is None else image.resize(tuple(size), Image.Resampling.NEAREST)


def label_palette(num_labels: int) -> np.ndarray:
    """Distinct colours for class indices: uint8 [num_labels, 3]; the 10 tab10 colours, then golden-ratio hues."""
    colors = [_TAB10[i] for i in range(min(num_labels, len(_TAB10)))]
    for i in range(len(_TAB10), num_labels):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 else 0.7
        rgb = np.asarray(Image.new("HSV", (1, 1), (round(hue * 255), 200, round(value * 255))).convert("RGB"))
        colors.append(tuple(int(c) for c in rgb[0, 0]))
    return np.asarray(colors, dtype=np.uint8).reshape(num_labels, 3)


def _label_array(labels: torch.Tensor | np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        array = labels.detach().cpu().numpy()
    else:
        array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"labels must be a 2-D class map [H, W], got shape {array.shape}.")
    if array.dtype.kind == "f":
        raise ValueError(f"labels must hold integer class indices, got dtype {array.dtype}.")
    return array.astype(np.int64)


def colorize_labels(
    labels: torch.Tensor | np.ndarray | Image.Image,
    palette: np.ndarray | None = None,
    ignore_index: int | None = 255,
    ignore_color: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """A class map [H, W] as a PIL RGB image, one `palette` colour per class (default [`label_palette`])."""
    array = _label_array(labels)
    ignored = array == ignore_index if ignore_index is not None else np.zeros(array.shape, bool)
    scored = array[~ignored]
    if scored.size and scored.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got {scored.min()}.")
    needed = int(scored.max()) + 1 if scored.size else 0
    palette = label_palette(max(needed, 1)) if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) < needed:
        raise ValueError(f"palette must be [num_labels, 3] with at least {needed} colours, got {palette.shape}.")
    rgb = palette[np.where(ignored, 0, array)]
    rgb[ignored] = np.asarray(ignore_color, dtype=np.uint8)
    return Image.fromarray(rgb)


def rgb_image(image: Image.Image) -> Image.Image:
    """`image` as an 8-bit RGB PIL image, read as [`Dinov3HfImageProcessor`] reads it for the model: 16-bit modes
    (I;16*, and I holding 0..65535) scaled by 255 / 65535, float mode F (values in [0, 1]) by 255, alpha composited
    over white; 8-bit images as `image.convert("RGB")`. (PIL's `convert("RGB")` clips 16-bit and float pixels to
    0..255, which turns a 16-bit photo white and a float one black.)"""
    pixels, on_255_scale = _to_float_rgb(image, None)
    rgb = (pixels * (1.0 if on_255_scale else 255.0)).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(rgb.permute(1, 2, 0).numpy())


def segmentation_overlay(
    image: Image.Image,
    labels: torch.Tensor | np.ndarray | Image.Image,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    ignore_index: int | None = 255,
) -> Image.Image:
    """`image` (PIL; 16-bit and float modes are scaled to 0..255 by [`rgb_image`]) blended with the colours of a class
    map: `(1 - alpha) * image + alpha * colour` per pixel, at the image's size (the map is resized by nearest neighbour
    when its size differs); ignored pixels keep the image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    array = _label_array(labels)
    if array.shape != (image.height, image.width):
        resized = Image.fromarray(array.astype(np.int32)).resize(image.size, Image.Resampling.NEAREST)
        array = np.asarray(resized).astype(np.int64)
    colours = np.asarray(colorize_labels(array, palette, ignore_index), dtype=np.float64)
    base = np.asarray(rgb_image(image), dtype=np.float64)
    blend = (1.0 - alpha) * base + alpha * colours
    if ignore_index is not None:
        blend[array == ignore_index] = base[array == ignore_index]
    return Image.fromarray(np.round(blend).astype(np.uint8))


def attention_overlay(
    image: Image.Image, attention: torch.Tensor | np.ndarray, alpha: float = 0.6, cmap: str = "turbo"
) -> Image.Image:
    """An attention map [h, w] over the patch grid (e.g. one head's CLS -> patch probabilities) drawn on `image`:
    t = (a - min) / (max - min) (0 for a constant map), coloured with `cmap`, resized to the image's size by nearest
    neighbour and blended as `(1 - alpha) * image + alpha * colour` (the image read by [`rgb_image`])."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    a = attention.detach().float().cpu().numpy() if isinstance(attention, torch.Tensor) else np.asarray(attention)
    if a.ndim != 2:
        raise ValueError(f"attention must be a 2-D map [h, w] over the patch grid, got shape {a.shape}.")
    a = a.astype(np.float64)
    low, high = a.min(), a.max()
    t = (a - low) / (high - low) if high > low else np.zeros_like(a)
    colours = Image.fromarray(np.round(_colormap(t, cmap) * 255).astype(np.uint8))
    colours = np.asarray(colours.resize(image.size, Image.Resampling.NEAREST), dtype=np.float64)
    blend = (1.0 - alpha) * np.asarray(rgb_image(image), dtype=np.float64) + alpha * colours
    return Image.fromarray(np.round(blend).astype(np.uint8))


# (log-history key, panel title, reference line) of each panel of `plot_training_diagnostics`
TRAINING_PANELS = (
    (("dino_global", "dino_local", "ibot"), "DINO / iBOT losses (dashed: ln K)", "ln_k"),
    (("dino_entropy_fraction", "ibot_entropy_fraction"), "target entropy / ln K (dashed: warning level)", 0.98),
    (("dino_prototypes_used", "ibot_prototypes_used"), "prototypes used (distinct teacher argmax)", None),
    (("dino_logit_std", "ibot_logit_std", "teacher_temp"), "teacher score std across samples vs temperature", None),
    (("dino_agreement", "ibot_agreement"), "student-teacher argmax agreement", None),
    (("cls_std", "koleo"), "CLS std across samples (collapse: 0) and KoLeo", None),
)


def plot_training_diagnostics(log_history: list[dict], path, title: str | None = None) -> None:
    """Draw the SSL training diagnostics of a Trainer's `log_history` (entries with a "step") as a 2 × 3 grid of
    curves over optimizer steps into the PNG `path`. Needs matplotlib."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("Plotting the training diagnostics needs matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [entry for entry in log_history if "step" in entry and "dino_entropy_fraction" in entry]
    if not entries:
        raise ValueError(
            "The log history has no SSL diagnostics (no entry with 'dino_entropy_fraction'): pass the log_history of "
            "an SSL training run (trainer.state.log_history, or log_history.json in the run's output folder)."
        )
    steps = [entry["step"] for entry in entries]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, (keys, panel_title, reference) in zip(axes.flat, TRAINING_PANELS):
        for key in keys:
            if key in entries[0]:
                ax.plot(steps, [entry.get(key, float("nan")) for entry in entries], label=key)
        if reference == "ln_k" and "dino_entropy" in entries[0]:
            ln_k = entries[0]["dino_entropy"] / entries[0]["dino_entropy_fraction"]
            ax.axhline(ln_k, color="gray", linestyle="--", linewidth=1)
        elif isinstance(reference, float):
            ax.axhline(reference, color="gray", linestyle="--", linewidth=1)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
