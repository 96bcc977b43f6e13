"""Image processor for the DINOv3 backbones: resize (fixed or shorter side), snap to the patch grid, crop, normalise.

Pipeline per image: convert to float RGB -> rescale 8-bit data by `rescale_factor` -> resize (antialiased bilinear or
bicubic, as torchvision `Resize(antialias=True)` on a float tensor) with each side snapped to a multiple of
`size_divisor` -> optional center crop -> normalise with `image_mean` / `image_std`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from ..models.pretrained import NORMALIZATION

RESAMPLE_MODES = ("bilinear", "bicubic")
# PIL / transformers `PILImageResampling` integer codes accepted for `resample`, as in hub preprocessor configs.
_PIL_RESAMPLE_CODES = {2: "bilinear", 3: "bicubic"}

_RGB_CONVERTIBLE_MODES = ("RGB", "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SUPPORTED_PIL_MODES = _RGB_CONVERTIBLE_MODES + _ALPHA_MODES + _SIXTEEN_BIT_MODES + ("F",)

ImageLike = Image.Image | np.ndarray | torch.Tensor

class Dinov3HfImageProcessorKwargs(TypedDict, total=False):
    """Keyword arguments of [`Dinov3HfImageProcessor`], valid both at construction and per call."""

    do_resize: bool
    size: dict[str, int]
    size_divisor: int
    resample: str | int
    do_center_crop: bool
    crop_size: dict[str, int] | None
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: Sequence[float]
    image_std: Sequence[float]


class Dinov3HfImageProcessor(BaseImageProcessor):
    r"""Turn images into the `pixel_values` [B, 3, H, W] a DINOv3 backbone expects, with H and W multiples of the patch.

    Args:
        do_resize: resize the images.
        size: `{"height": H, "width": W}` for a fixed size, or `{"shortest_edge": S}` to scale the shorter side to S
            keeping the aspect ratio. Each side is then snapped to the nearest multiple of `size_divisor` (at least
            one multiple), so the aspect ratio is kept up to that rounding.
        size_divisor: the model's patch size (16 for the ViTs); resized sides are multiples of it.
        resample: "bilinear" or "bicubic" (PIL codes 2 and 3 are accepted); always antialiased.
        do_center_crop: center crop to `crop_size` after resizing.
        crop_size: `{"height": H, "width": W}`, multiples of `size_divisor`.
        do_rescale: multiply 8-bit integer data by `rescale_factor`. Float inputs are taken as already in [0, 1]
            and never rescaled; 16-bit data (uint16 arrays, PIL `I;16`/`I`) is first mapped onto the 0..255 scale.
        rescale_factor: the rescale multiplier, 1/255.
        do_normalize: normalise with `image_mean` and `image_std`.
        image_mean, image_std: per-channel statistics; default the LVD-1689M (ImageNet) ones. Use
            [`for_model_config`] to take them (and the patch size) from a model config, e.g. the SAT-493M ones.

    Inputs: a PIL image (any mode in `SUPPORTED_PIL_MODES`; alpha is composited over white), a numpy array
    (HWC, CHW or HW; uint8, uint16 or float), a torch tensor (CHW, HWC or HW), a 4-D batch of arrays/tensors, or a list
    of any of these. Channel layout is inferred (numpy: HWC first, torch: CHW first); pass
    `input_data_format="channels_first"` or `"channels_last"` to a call to override it.

    Outputs: `BatchFeature` with `pixel_values`, a float32 tensor [B, 3, H, W] (`return_tensors="pt"`), a numpy array
    (`"np"`), or a list of [3, H, W] tensors (`None`). Under `{"shortest_edge": S}` images of different aspect ratios
    get different shapes; they cannot be stacked, so "pt"/"np" raise and `return_tensors=None` returns the list.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = Dinov3HfImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | None = None,
        size_divisor: int = 16,
        resample: str | int = "bilinear",
        do_center_crop: bool = False,
        crop_size: dict[str, int] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = NORMALIZATION["lvd1689m"][0],
        image_std: Sequence[float] = NORMALIZATION["lvd1689m"][1],
        **kwargs: Any,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        settings = _validate_settings(
            dict(
                do_resize=do_resize,
                size={"height": 224, "width": 224} if size is None else size,
                size_divisor=size_divisor,
                resample=resample,
                do_center_crop=do_center_crop,
                crop_size=crop_size,
                do_rescale=do_rescale,
                rescale_factor=rescale_factor,
                do_normalize=do_normalize,
                image_mean=image_mean,
                image_std=image_std,
            )
        )
        for key, value in settings.items():
            setattr(self, key, value)

    @classmethod
    def for_model_config(cls, config: Any, **overrides: Any) -> "Dinov3HfImageProcessor":
        """Processor using the config's `image_mean`, `image_std` and `output_stride` (as `size_divisor`).

        `output_stride` is the patch size for the ViTs and the total stride 32 for the ConvNeXts. `overrides` are
        constructor arguments and take precedence over the config.
        """
        from_config: dict[str, Any] = {}
        for key in ("image_mean", "image_std"):
            if key not in overrides:
                if not hasattr(config, key):
                    raise ValueError(f"{type(config).__name__} has no `{key}`; pass {key}=... to for_model_config.")
                from_config[key] = getattr(config, key)
        if "size_divisor" not in overrides:
            divisor = getattr(config, "output_stride", getattr(config, "patch_size", None))
            if divisor is None:
                raise ValueError(
                    f"Cannot tell the input multiple of {type(config).__name__} (no output_stride or patch_size); "
                    "pass size_divisor=... to for_model_config."
                )
            from_config["size_divisor"] = divisor
        return cls(**from_config, **overrides)

    def preprocess(
        self,
        images: ImageLike | Sequence[ImageLike],
        return_tensors: str | None = None,
        input_data_format: str | None = None,
        **overrides: Any,
    ) -> BatchFeature:
        """Process one image or a batch; `overrides` (any constructor argument) apply to this call only."""
        unknown = sorted(set(overrides) - set(Dinov3HfImageProcessorKwargs.__annotations__))
        if unknown:
            raise TypeError(
                f"Unknown image processor argument(s) {unknown}; valid ones are "
                f"{sorted(Dinov3HfImageProcessorKwargs.__annotations__)}, return_tensors and input_data_format."
            )
        if input_data_format not in (None, "channels_first", "channels_last"):
            raise ValueError(
                f"input_data_format must be 'channels_first', 'channels_last' or None, got {input_data_format!r}."
            )
        settings = {key: getattr(self, key) for key in Dinov3HfImageProcessorKwargs.__annotations__}
        settings = _validate_settings({**settings, **overrides})

        image_list = _flatten_images(images)
        pixel_values = [self._process_one(image, input_data_format, settings) for image in image_list]
        return BatchFeature(data={"pixel_values": _collate(pixel_values, return_tensors, settings["size"])})

    def _process_one(self, image: ImageLike, input_data_format: str | None, s: dict[str, Any]) -> torch.Tensor:
        x, is_integer = _to_float_rgb(image, input_data_format)
        if is_integer and s["do_rescale"]:
            x = x * s["rescale_factor"]
        if s["do_resize"]:
            height, width = target_size(x.shape[-2], x.shape[-1], s["size"], s["size_divisor"])
            x = F.interpolate(x[None], size=(height, width), mode=s["resample"], align_corners=False, antialias=True)[0]
        if s["do_center_crop"]:
            x = _center_crop(x, s["crop_size"]["height"], s["crop_size"]["width"])
        if s["do_normalize"]:
            mean = torch.tensor(s["image_mean"], dtype=x.dtype, device=x.device)[:, None, None]
            std = torch.tensor(s["image_std"], dtype=x.dtype, device=x.device)[:, None, None]
            x = (x - mean) / std
        return x

    # -- post-processing (task pipelines) ---------------------------------------------------------------------------
    # Only the semantic variant is defined: the image-segmentation pipeline prefers panoptic / instance
    # post-processing when a processor has those methods.

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Class maps from segmentation logits: per image a (H, W) long tensor of class indices.

        outputs: a model output with `logits` (B, num_labels, h, w), or that tensor. target_sizes: one (H, W) per
        image (e.g. the original image sizes); the logits are resized bilinearly to it before the argmax. Without it
        the maps are at the logits' resolution.
        """
        logits = _output_field(outputs, "logits")
        if logits.ndim != 4:
            raise ValueError(f"Expected segmentation logits of shape (B, num_labels, h, w), got {tuple(logits.shape)}.")
        sizes = _target_sizes(target_sizes, len(logits))
        maps = []
        for scores, size in zip(logits, sizes):
            if size is not None and tuple(scores.shape[-2:]) != size:
                scores = F.interpolate(scores[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            maps.append(scores.argmax(dim=0))
        return maps

    def post_process_depth_estimation(
        self, outputs: Any, target_sizes: Sequence[Sequence[int]] | torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Per image `{"predicted_depth": (H, W)}` from `outputs.predicted_depth` (B, h, w) (or that tensor).

        target_sizes: one (H, W) per image; the depth is resized to it bilinearly (which, unlike bicubic, keeps it
        within the predicted range, so it stays positive).
        """
        depth = _output_field(outputs, "predicted_depth")
        if depth.ndim == 4 and depth.shape[1] == 1:
            depth = depth[:, 0]
        if depth.ndim != 3:
            raise ValueError(f"Expected predicted_depth of shape (B, h, w), got {tuple(depth.shape)}.")
        sizes = _target_sizes(target_sizes, len(depth))
        results = []
        for d, size in zip(depth, sizes):
            if size is not None and tuple(d.shape) != size:
                d = F.interpolate(d[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
            results.append({"predicted_depth": d})
        return results


def _output_field(outputs: Any, name: str) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    value = outputs.get(name) if hasattr(outputs, "get") else getattr(outputs, name, None)
    if value is None:
        raise ValueError(f"The model outputs have no `{name}`; pass the output of the matching task model.")
    return value


def _target_sizes(target_sizes: Any, batch: int) -> list[tuple[int, int] | None]:
    if target_sizes is None:
        return [None] * batch
    if len(target_sizes) != batch:
        raise ValueError(f"Got {len(target_sizes)} target_sizes for a batch of {batch} outputs; pass one (H, W) each.")
    sizes = []
    for size in target_sizes:
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"Each target size must be a positive (height, width), got {size}.")
        sizes.append(size)
    return sizes


def snap_to_multiple(length: float, divisor: int) -> int:
    """`length` rounded to the nearest multiple of `divisor` (halves round up), and at least `divisor`."""
    return max(divisor, int(math.floor(length / divisor + 0.5)) * divisor)


def target_size(height: int, width: int, size: dict[str, int], divisor: int) -> tuple[int, int]:
    """Output (height, width) of the resize for an input of (height, width) under `size` and `divisor`."""
    if "shortest_edge" in size:
        scale = size["shortest_edge"] / min(height, width)
        height, width = height * scale, width * scale
    else:
        height, width = size["height"], size["width"]
    return snap_to_multiple(height, divisor), snap_to_multiple(width, divisor)


def _validate_settings(s: dict[str, Any]) -> dict[str, Any]:
    """Check the processing settings and return them in canonical form (plain dicts, lists, resample name)."""
    s = dict(s)
    divisor = s["size_divisor"]
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        raise ValueError(f"size_divisor must be a positive int (the model's patch size), got {divisor!r}.")

    size = dict(s["size"]) if isinstance(s["size"], dict) else s["size"]
    if not isinstance(size, dict) or set(size) not in ({"height", "width"}, {"shortest_edge"}):
        raise ValueError(
            f'size must be {{"height": H, "width": W}} or {{"shortest_edge": S}}, got {s["size"]!r}.'
        )
    if any(not isinstance(v, int) or v < 1 for v in size.values()):
        raise ValueError(f"size values must be positive ints, got {size!r}.")
    s["size"] = size

    resample = s["resample"]
    if hasattr(resample, "value"):  # PILImageResampling / torchvision InterpolationMode enums
        resample = resample.value
    resample = _PIL_RESAMPLE_CODES.get(resample, resample)
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"resample must be 'bilinear' or 'bicubic' (or PIL codes 2 / 3), got {s['resample']!r}.")
    s["resample"] = resample

    crop = s["crop_size"]
    if s["do_center_crop"] and crop is None:
        raise ValueError('do_center_crop=True needs crop_size={"height": H, "width": W}.')
    if crop is not None:
        if not isinstance(crop, dict) or set(crop) != {"height", "width"}:
            raise ValueError(f'crop_size must be {{"height": H, "width": W}}, got {crop!r}.')
        if any(not isinstance(v, int) or v < 1 or v % divisor for v in crop.values()):
            raise ValueError(
                f"crop_size sides must be positive multiples of size_divisor={divisor}, got {crop!r}; the model "
                "sees whole patches only."
            )
        s["crop_size"] = dict(crop)

    for name in ("image_mean", "image_std"):
        values = [float(v) for v in s[name]]
        if len(values) != 3:
            raise ValueError(f"{name} must have 3 values (R, G, B), got {s[name]!r}.")
        s[name] = values
    if any(v <= 0 for v in s["image_std"]):
        raise ValueError(f"image_std values must be positive, got {s['image_std']!r}.")
    return s


def _flatten_images(images: Any) -> list[ImageLike]:
    """One entry per image: lists are flattened, 4-D arrays/tensors are split along the batch dimension."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(
            f"Image arrays must be HW, HWC/CHW or a batch BHWC/BCHW; got an array of shape {tuple(images.shape)}."
        )
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("Got an empty list of images; pass at least one image.")
        return [image for item in images for image in _flatten_images(item)]
    hint = " Load it first, e.g. with PIL.Image.open(path)." if isinstance(images, str) else ""
    raise TypeError(
        f"Unsupported image type {type(images).__name__}; pass PIL images, numpy arrays or torch tensors.{hint}"
    )


def _to_float_rgb(image: ImageLike, input_data_format: str | None) -> tuple[torch.Tensor, bool]:
    """A float32 [3, H, W] tensor and whether it holds integer data on the 0..255 scale (else floats in [0, 1])."""
    if isinstance(image, Image.Image):
        image, input_data_format = _pil_to_array(image), "channels_last"
    if isinstance(image, np.ndarray):  # copy to a writable, native-byte-order array, as torch.from_numpy wants
        x = torch.from_numpy(np.array(image, dtype=image.dtype.newbyteorder("=")))
    else:
        x = image
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"Unsupported image dtype {x.dtype}; use uint8 (0..255), uint16 or float (0..1).")

    if x.ndim == 2:
        x = x[None]
    elif input_data_format == "channels_last":
        x = x.permute(2, 0, 1)
    elif input_data_format is None:
        x = _channels_first(x, prefer_last=isinstance(image, np.ndarray))
    if 0 in x.shape[-2:]:
        raise ValueError(f"Got an empty image of shape {tuple(image.shape)}.")
    if x.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"Images need 1 (gray), 3 (RGB) or 4 (RGBA) channels; got shape {tuple(image.shape)} read as "
            f"{x.shape[0]} channels. Pass input_data_format='channels_first' or 'channels_last' if the layout was "
            "misread."
        )

    is_integer = not x.is_floating_point()
    if x.dtype == torch.uint16:
        x = x.to(torch.float32) / 257.0
    else:
        x = x.to(torch.float32)
    if is_integer and x.numel() and (x.min() < 0 or x.max() > 255):
        raise ValueError(
            f"Integer image values must lie in 0..255 (8-bit), got [{x.min().item():g}, {x.max().item():g}]. "
            "Pass 16-bit data as a uint16 array."
        )
    if not is_integer and x.numel() and (x.min() < -0.5 or x.max() > 1.5):
        raise ValueError(
            f"Float images must hold values in [0, 1], got [{x.min().item():g}, {x.max().item():g}]. Divide 0..255 "
            "data by 255 (or pass it as uint8), and pass images before normalisation."
        )

    full = 255.0 if is_integer else 1.0
    if x.shape[0] == 4:  # composite over white
        alpha = x[3:] / full
        x = x[:3] * alpha + full * (1 - alpha)
    elif x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.contiguous(), is_integer


def _channels_first(x: torch.Tensor, prefer_last: bool) -> torch.Tensor:
    """Move the channel axis of a 3-D image first, guessing it from which end has 1, 3 or 4 entries."""
    first, last = x.shape[0] in (1, 3, 4), x.shape[-1] in (1, 3, 4)
    if last and (prefer_last or not first):
        return x.permute(2, 0, 1)
    return x


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """HWC (or HW) numpy array of a PIL image: uint8 RGB / RGBA, uint16 gray for 16-bit modes, float32 for mode F."""
    mode = image.mode
    if mode not in SUPPORTED_PIL_MODES:
        raise ValueError(
            f"Unsupported PIL image mode {mode!r}. Supported modes: {', '.join(SUPPORTED_PIL_MODES)}; "
            "convert the image first, e.g. image.convert('RGB')."
        )
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"PIL mode {mode!r} image has values in [{array.min()}, {array.max()}]; 32-bit integer images are "
                "read as 16-bit data (0..65535). Rescale it or convert it to 'L' first."
            )
        return array.astype(np.uint16)
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    image_height, image_width = x.shape[-2:]
    if height > image_height or width > image_width:
        raise ValueError(
            f"crop_size {height}x{width} is larger than the resized image {image_height}x{image_width}; "
            "use a larger size or a smaller crop_size."
        )
    top = int(round((image_height - height) / 2.0))
    left = int(round((image_width - width) / 2.0))
    return x[:, top : top + height, left : left + width]


def _collate(
    pixel_values: list[torch.Tensor], return_tensors: str | None, size: dict[str, int]
) -> torch.Tensor | np.ndarray | list[torch.Tensor]:
    if return_tensors is None:
        return pixel_values
    if return_tensors not in ("pt", "np"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
    shapes = sorted({tuple(x.shape[-2:]) for x in pixel_values})
    if len(shapes) > 1:
        raise ValueError(
            f"The images resize to different shapes {shapes} under size={size} and cannot be stacked into one batch. "
            'Use a fixed size={"height": H, "width": W}, process one image at a time, or pass return_tensors=None '
            "to get a list of tensors."
        )
    stacked = torch.stack(pixel_values)
    return stacked if return_tensors == "pt" else stacked.cpu().numpy()
