"""Image processor for the DINOv3 backbones: resize (fixed or shorter side), snap to the patch grid, crop, normalise.

Pipeline per image: convert to float RGB (16-bit data mapped onto the 8-bit scale) -> rescale 8-bit data by
`rescale_factor` -> refuse inputs of more than `max_tokens` patch tokens -> resize (antialiased bilinear or bicubic,
torchvision `Resize(antialias=True)` on a float tensor) with each side snapped to a multiple of `size_divisor` ->
optional center crop -> normalise with `image_mean` / `image_std` -> optional padding into one batch with a
`pixel_mask`. Batching, channel-layout inference and the `BatchFeature` output come from transformers' image utilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvF
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import (
    ChannelDimension,
    infer_channel_dimension_format,
    is_pil_image,
    is_valid_image,
    make_flat_list_of_images,
    to_numpy_array,
    valid_images,
)

from ..common import NORMALIZATION, snap_to_multiple

RESAMPLE_MODES = ("bilinear", "bicubic")
# PIL / transformers `PILImageResampling` integer codes accepted for `resample`, as in hub preprocessor configs.
_PIL_RESAMPLE_CODES = {2: "bilinear", 3: "bicubic"}

_RGB_CONVERTIBLE_MODES = ("RGB", "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SUPPORTED_PIL_MODES = _RGB_CONVERTIBLE_MODES + _ALPHA_MODES + _SIXTEEN_BIT_MODES + ("F",)
_CHANNEL_COUNTS = (1, 3, 4)  # gray, RGB, RGBA

# Default `max_tokens`: a 2048 x 2048 input at patch 16 (a 128 x 128 grid). It admits every image up to an aspect
# ratio of about 20:1 at a shorter side of 448 (28 patches, the CLI default), and refuses the degenerate strips (a
# 300 x 3 image at shorter side 448 is a 44800 x 448 input, 78400 tokens) whose attention, quadratic in the token
# count, would run for minutes to hours or run out of memory. Raise it for larger inputs, e.g. 65536 for 4096 x 4096.
DEFAULT_MAX_TOKENS = 16384

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
    max_tokens: int | None
    do_pad: bool


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
            and never rescaled; 16-bit data (uint16 arrays and tensors, PIL `I;16*` and `I`, read as 0..65535) is
            first mapped onto the 0..255 scale by x * 255 / 65535, so it ends in [0, 1] like 8-bit data, unclipped.
        rescale_factor: the rescale multiplier, 1/255.
        do_normalize: normalise with `image_mean` and `image_std`.
        image_mean, image_std: per-channel statistics; default the LVD-1689M (ImageNet) ones. Use
            [`for_model_config`] to take them (and the patch size) from a model config, e.g. the SAT-493M ones.
        max_tokens: the most patch tokens an image may give, counted on what the model receives (after resize
            and crop) as (H // size_divisor) * (W // size_divisor); more raise a ValueError before any resizing.
            None: no limit. The default 16384 is a 2048 x 2048 input at patch 16; raise it for larger inputs
            (65536 for 4096 x 4096).
        do_pad: pad the processed images at the bottom and right with zeros (after normalisation) to the batch's
            largest height and width, and return `pixel_mask` (B, H, W), 1 on each image's own pixels, 0 on the
            padding (transformers' DETR-style processors do the same): images of different sizes in one batch,
            which the backbones take with `model(pixel_values, pixel_mask=pixel_mask)`. Each image's own size stays
            the multiple of `size_divisor` the resize gives; padding keeps it. Default False (no `pixel_mask`).

    Inputs: a PIL image (any mode in `SUPPORTED_PIL_MODES`; alpha is composited over white), a numpy array
    (HWC, CHW or HW; uint8, uint16 or float), a torch tensor (CHW, HWC or HW), a 4-D batch of arrays/tensors, or a
    (nested) list of any of these. Channel layout is inferred as transformers' `infer_channel_dimension_format` does
    (CHW first), except that numpy arrays are read HWC first (the numpy / PIL convention); pass
    `input_data_format="channels_first"` or `"channels_last"` to a call to override it.

    Outputs: `BatchFeature` with `pixel_values`, a float32 tensor [B, 3, H, W] (`return_tensors="pt"`), a numpy array
    (`"np"`), or a list of [3, H, W] tensors (`None`). Under `{"shortest_edge": S}` images of different aspect ratios
    get different shapes; they cannot be stacked, so "pt"/"np" raise (unless `do_pad`) and `return_tensors=None`
    returns the list. With `do_pad`, `pixel_mask` comes too: (B, H, W) int64, or a list of (H, W) tensors.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = Dinov3HfImageProcessorKwargs
    # A class-level default makes `to_dict` keep an explicit `max_tokens=None` (no limit) in saved configs.
    max_tokens: int | None = DEFAULT_MAX_TOKENS

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
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        do_pad: bool = False,
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
                max_tokens=max_tokens,
                do_pad=do_pad,
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
        if input_data_format not in (None, *ChannelDimension):
            raise ValueError(
                f"input_data_format must be 'channels_first', 'channels_last' or None, got {input_data_format!r}."
            )
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        settings = {key: getattr(self, key) for key in Dinov3HfImageProcessorKwargs.__annotations__}
        settings = _validate_settings({**settings, **overrides})
        layout = None if input_data_format is None else ChannelDimension(input_data_format)

        pixel_values = [self._process_one(image, layout, settings) for image in _image_list(images)]
        if settings["do_pad"]:
            return self.pad(pixel_values, return_tensors=return_tensors)
        shapes = sorted({tuple(x.shape[-2:]) for x in pixel_values})
        if return_tensors is not None and len(shapes) > 1:
            raise ValueError(
                f"The images resize to different shapes {shapes} under size={settings['size']} and cannot be stacked "
                "into one batch. Pass do_pad=True to pad them into one batch with a pixel_mask (the backbones take "
                'it), use a fixed size={"height": H, "width": W}, process one image at a time, or pass '
                "return_tensors=None to get a list of tensors."
            )
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def pad(self, images: Sequence[torch.Tensor], return_tensors: str | None = None) -> BatchFeature:
        """Pad processed [C, h, w] images into one batch: zeros at the bottom and right up to the largest height
        and width, and `pixel_mask` (B, H, W) int64, 1 on each image's own h x w pixels, 0 on the padding.

        return_tensors: "pt" or "np" for batched arrays, None for lists of [C, H, W] images and (H, W) masks.
        """
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}.")
        if not images or any(not isinstance(x, torch.Tensor) or x.ndim != 3 for x in images):
            raise ValueError(
                "pad takes a non-empty list of processed [C, h, w] torch tensors (the pixel_values of "
                "return_tensors=None); pass raw images to the processor with do_pad=True instead."
            )
        height, width = max(x.shape[-2] for x in images), max(x.shape[-1] for x in images)
        pixel_values = images[0].new_zeros(len(images), images[0].shape[0], height, width)
        pixel_mask = torch.zeros(len(images), height, width, dtype=torch.int64, device=images[0].device)
        for i, x in enumerate(images):
            pixel_values[i, :, : x.shape[-2], : x.shape[-1]] = x
            pixel_mask[i, : x.shape[-2], : x.shape[-1]] = 1
        if return_tensors is None:
            pixel_values, pixel_mask = list(pixel_values), list(pixel_mask)
        return BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)

    def _process_one(self, image: ImageLike, layout: ChannelDimension | None, s: dict[str, Any]) -> torch.Tensor:
        x, is_integer = _to_float_rgb(image, layout)
        # the sizes first, so that bad crops and too many tokens fail before any resizing
        resized = model_input = tuple(x.shape[-2:])
        if s["do_resize"]:
            resized = model_input = target_size(*resized, s["size"], s["size_divisor"])
        if s["do_center_crop"]:
            model_input = s["crop_size"]["height"], s["crop_size"]["width"]
            if model_input[0] > resized[0] or model_input[1] > resized[1]:
                raise ValueError(
                    f"crop_size {model_input[0]}x{model_input[1]} is larger than the resized image "
                    f"{resized[0]}x{resized[1]}; use a larger size or a smaller crop_size."
                )
        _check_token_count(tuple(x.shape[-2:]), model_input, s)

        if is_integer and s["do_rescale"]:
            x = x * s["rescale_factor"]
        if s["do_resize"]:
            x = tvF.resize(x, list(resized), interpolation=InterpolationMode(s["resample"]), antialias=True)
        if s["do_center_crop"]:
            x = tvF.center_crop(x, list(model_input))
        if s["do_normalize"]:
            x = tvF.normalize(x, s["image_mean"], s["image_std"])
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

    limit = s["max_tokens"]
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"max_tokens must be a positive int or None (no limit), got {limit!r}.")
    if not isinstance(s["do_pad"], bool):
        raise ValueError(f"do_pad must be True or False, got {s['do_pad']!r}.")
    return s


def _check_token_count(image_size: tuple[int, int], input_size: tuple[int, int], s: dict[str, Any]) -> None:
    """Raise if the model input `input_size` (H, W) has more than `max_tokens` patches of `size_divisor` pixels."""
    divisor, limit = s["size_divisor"], s["max_tokens"]
    grid = input_size[0] // divisor, input_size[1] // divisor
    tokens = grid[0] * grid[1]
    if limit is not None and tokens > limit:
        raise ValueError(
            f"An image of {image_size[0]}x{image_size[1]} pixels (height x width) becomes a "
            f"{input_size[0]}x{input_size[1]} input of {grid[0]}x{grid[1]} = {tokens} patch tokens "
            f"({divisor}x{divisor} pixels each), more than max_tokens={limit}; the model would take very long or run "
            f"out of memory. To process it anyway, raise the limit: max_tokens={tokens} (or None) for the image "
            f"processor, --max-tokens {tokens} for `dinov3-hf features`. Or use a smaller size, or crop the image."
        )


def _image_list(images: Any) -> list[ImageLike]:
    """One entry per image, by transformers' `make_flat_list_of_images` (lists, nested lists, 4-D batches).

    A 2-D array or tensor (alone or first in a list) is one HW grayscale image, not a batch of rows.
    """
    if not valid_images(images):
        hint = " Load it first, e.g. with PIL.Image.open(path)." if isinstance(images, str) else ""
        raise TypeError(
            f"Unsupported image type {type(images).__name__}; pass PIL images, numpy arrays or torch tensors, or "
            f"(nested) lists of them.{hint}"
        )
    first = images
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    grayscale = is_valid_image(first) and not is_pil_image(first) and first.ndim == 2
    try:
        image_list = list(make_flat_list_of_images(images, expected_ndims=2 if grayscale else 3))
    except ValueError as err:
        shape = f", got shape {tuple(images.shape)}" if hasattr(images, "shape") else ""
        raise ValueError(f"Image arrays must be HW, HWC/CHW or a batch BHWC/BCHW{shape}.") from err
    if not image_list:
        raise ValueError("Got an empty list of images; pass at least one image.")
    return image_list


def _to_float_rgb(image: ImageLike, layout: ChannelDimension | None) -> tuple[torch.Tensor, bool]:
    """A float32 [3, H, W] tensor and whether it holds integer data on the 0..255 scale (else floats in [0, 1]).

    uint16 data is mapped onto that scale by x / 257 (= x * 255 / 65535); alpha is composited over white.
    """
    if is_pil_image(image):
        image, layout = _pil_to_array(image), ChannelDimension.LAST
    if isinstance(image, np.ndarray):  # copy to a writable, native-byte-order array, as torch.from_numpy wants
        x = torch.from_numpy(np.array(image, dtype=image.dtype.newbyteorder("=")))
    else:
        x = image
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"Unsupported image dtype {x.dtype}; use uint8 (0..255), uint16 or float (0..1).")

    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3:
        if layout is None and (x.shape[0] in _CHANNEL_COUNTS or x.shape[-1] in _CHANNEL_COUNTS):
            numpy_hwc = isinstance(image, np.ndarray) and x.shape[-1] in _CHANNEL_COUNTS
            layout = ChannelDimension.LAST if numpy_hwc else infer_channel_dimension_format(x, _CHANNEL_COUNTS)
        if layout == ChannelDimension.LAST:
            x = x.permute(2, 0, 1)
    else:
        raise ValueError(f"Image arrays must be HW, HWC/CHW or a batch BHWC/BCHW; got one of shape {tuple(x.shape)}.")
    if 0 in x.shape[-2:]:
        raise ValueError(f"Got an empty image of shape {tuple(image.shape)}.")
    if x.shape[0] not in _CHANNEL_COUNTS:
        raise ValueError(
            f"Images need 1 (gray), 3 (RGB) or 4 (RGBA) channels; got shape {tuple(image.shape)} read as "
            f"{x.shape[0]} channels. Pass input_data_format='channels_first' or 'channels_last' if the layout was "
            "misread."
        )

    is_integer = not x.is_floating_point()
    x = x.to(torch.float32) / 257.0 if x.dtype == torch.uint16 else x.to(torch.float32)
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
    if x.shape[0] == 4:  # composite over white, in float (transformers' convert_to_rgb rounds to the input dtype)
        alpha = x[3:] / full
        x = x[:3] * alpha + full * (1 - alpha)
    elif x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.contiguous(), is_integer


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """HWC (or HW) numpy array of a PIL image: uint8 RGB / RGBA, uint16 gray for 16-bit modes, float32 for mode F.

    The 16-bit and float modes are read as they are: PIL's (and transformers') `convert("RGB")` would clip them to
    0..255. Mode `I` (32-bit int, which Pillow gives some 16-bit files) is read as 16-bit data.
    """
    mode = image.mode
    if mode not in SUPPORTED_PIL_MODES:
        raise ValueError(
            f"Unsupported PIL image mode {mode!r}. Supported modes: {', '.join(SUPPORTED_PIL_MODES)}; "
            "convert the image first, e.g. image.convert('RGB')."
        )
    if mode in _SIXTEEN_BIT_MODES:
        array = to_numpy_array(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"PIL mode {mode!r} image has values in [{array.min()}, {array.max()}]; 32-bit integer images are "
                "read as 16-bit data (0..65535). Rescale it or convert it to 'L' first."
            )
        return array.astype(np.uint16)
    if mode == "F":
        return to_numpy_array(image)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return to_numpy_array(image.convert("RGBA"))
    return to_numpy_array(image.convert("RGB"))
