"""DINOv3 multi-crop augmentation (official `dinov3/data/augmentations.py`), with the official code's *effective*
probabilities.

Per image (all randomness from torch's global RNG, which the collator seeds per sample: see `collate.SeededSamples`):

- 2 global views, each drawn independently: base = RandomResizedCrop(max(global_size, gram_size), global_scale,
  bicubic, antialiased) (+ horizontal flip p=0.5 if `horizontal_flips`). The student crop is the base resized to
  `global_size`, then distorted; the gram crop (only if `gram_size`) is the base resized to `gram_size`, only
  normalised.
- `n_local_crops` local views: RandomResizedCrop(local_size, local_scale) from the original image (+ flip), distorted.
- Distortions, independently per crop: ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, GaussianBlur
  (kernel 9, σ ~ U(0.1, 2)) with p = 0 / 0.9 / 0.5 on global 1 / global 2 / locals, Solarize(128) p=0.2 on global 2.
  (The official code passes 1 − p to its blur, hence "global 1 never blurred, global 2 with p=0.9".)
- Finally float in [0, 1] and Normalize(mean, std).

`distortions` overrides these distortion settings by attribute name (`DISTORTION_KEYS`; the defaults are the
official values), e.g. {"local_blur_probability": 0} for images too small to blur.

The crop pipelines are `nn.Sequential`s of torchvision v2 transforms (`global_transforms`, `local_transform`,
`gram_transform`), so their steps can be inspected; blur / solarize steps of probability 0 are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

BICUBIC = v2.InterpolationMode.BICUBIC
# the distortion settings a recipe may override (`MultiCropAugmentation(distortions=...)`, `recipe.distortions`)
DISTORTION_KEYS = (
    "color_jitter_probability", "grayscale_probability", "global_blur_probabilities", "global_solarize_probabilities",
    "local_blur_probability", "blur_kernel_size", "blur_sigma", "solarize_threshold",
)


class MultiCropAugmentation:
    """Image (PIL, or tensor [C, H, W] with C in {1, 3, 4}, uint8 or float in [0, 1]) -> dict of normalised crops:
    "global_crops": 2 × [3, G, G], "local_crops": n_local_crops × [3, L, L], and with `gram_size` "gram_crops":
    2 × [3, S, S] (undistorted views of the same base crops as the global crops). Grayscale / RGBA become RGB.
    """

    color_jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    global_blur_probabilities: tuple[float, float] = (0.0, 0.9)
    global_solarize_probabilities: tuple[float, float] = (0.0, 0.2)
    local_blur_probability: float = 0.5
    blur_kernel_size: int = 9
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_threshold: int = 128  # on the uint8 scale (the pipeline works on 8-bit PIL images)

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        horizontal_flips: bool = False,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        gram_size: int | None = None,
        distortions: Mapping[str, Any] | None = None,
    ) -> None:
        self._set_distortions(distortions or {})
        if min(global_size, local_size, gram_size or global_size) < 1:
            raise ValueError(f"Crop sizes must be >= 1, got {global_size=}, {local_size=}, {gram_size=}.")
        if n_local_crops < 1:
            raise ValueError(f"n_local_crops must be >= 1 (the DINO loss needs local crops), got {n_local_crops}.")
        for name, scale in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0.0 < scale[0] <= scale[1] <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {scale}.")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}.")
        self.global_size = global_size
        self.local_size = local_size
        self.n_local_crops = n_local_crops
        self.gram_size = gram_size

        flip = [v2.RandomHorizontalFlip(p=0.5)] if horizontal_flips else []
        to_normalized_tensor = [
            v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()
        ]
        base_size = max(global_size, gram_size or 0)
        self.global_base_crop = nn.Sequential(
            v2.RandomResizedCrop(base_size, scale=global_scale, interpolation=BICUBIC, antialias=True), *flip
        )
        resize_global = [v2.Resize(global_size, BICUBIC, antialias=True)] if base_size != global_size else []
        self.global_transforms = nn.ModuleList(
            nn.Sequential(*resize_global, *self._distortions(blur_p, solarize_p), *to_normalized_tensor)
            for blur_p, solarize_p in zip(self.global_blur_probabilities, self.global_solarize_probabilities)
        )
        self.local_transform = nn.Sequential(
            v2.RandomResizedCrop(local_size, scale=local_scale, interpolation=BICUBIC, antialias=True),
            *flip,
            *self._distortions(self.local_blur_probability, 0.0),
            *to_normalized_tensor,
        )
        self.gram_transform = None
        if gram_size is not None:
            resize_gram = [v2.Resize(gram_size, BICUBIC, antialias=True)] if base_size != gram_size else []
            self.gram_transform = nn.Sequential(*resize_gram, *to_normalized_tensor)

    def _set_distortions(self, distortions: Mapping[str, Any]) -> None:
        unknown = sorted(set(distortions) - set(DISTORTION_KEYS))
        if unknown:
            raise ValueError(f"Unknown distortion settings {unknown}; known: {', '.join(DISTORTION_KEYS)}.")
        for name, value in distortions.items():
            if name.endswith(("_probability", "_probabilities")):
                values = value if name.endswith("_probabilities") else [value]
                if name.endswith("_probabilities") and len(values) != 2:
                    raise ValueError(f"{name} needs 2 values (global crops 1 and 2), got {value}.")
                if not all(0.0 <= float(v) <= 1.0 for v in values):
                    raise ValueError(f"{name} must be probabilities in [0, 1], got {value}.")
                value = tuple(float(v) for v in values) if name.endswith("_probabilities") else float(value)
            setattr(self, name, value)

    def _distortions(self, blur_probability: float, solarize_probability: float) -> list[nn.Module]:
        steps: list[nn.Module] = [
            v2.RandomApply(
                nn.ModuleList([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)]),
                p=self.color_jitter_probability,
            ),
            v2.RandomGrayscale(p=self.grayscale_probability),
        ]
        if blur_probability > 0:
            blur = v2.GaussianBlur(kernel_size=self.blur_kernel_size, sigma=self.blur_sigma)
            steps.append(v2.RandomApply(nn.ModuleList([blur]), p=blur_probability))
        if solarize_probability > 0:
            steps.append(v2.RandomSolarize(threshold=self.solarize_threshold, p=solarize_probability))
        return steps

    def __call__(self, image: Image.Image | Tensor) -> dict[str, list[Tensor]]:
        image = to_rgb_pil(image)
        output: dict[str, list[Tensor]] = {"global_crops": [], "local_crops": []}
        if self.gram_transform is not None:
            output["gram_crops"] = []
        for transform in self.global_transforms:
            base = self.global_base_crop(image)
            output["global_crops"].append(transform(base))
            if self.gram_transform is not None:
                output["gram_crops"].append(self.gram_transform(base))
        output["local_crops"] = [self.local_transform(image) for _ in range(self.n_local_crops)]
        return output

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(global_base_crop={self.global_base_crop}, "
            f"global_transforms={self.global_transforms}, "
            f"local_transform={self.local_transform} × {self.n_local_crops}, gram_transform={self.gram_transform})"
        )


def to_rgb_pil(image: Image.Image | Tensor) -> Image.Image:
    """An 8-bit RGB PIL image from a PIL image of any mode or a tensor [C, H, W] (C in {1, 3, 4}; uint8, or float
    in [0, 1]); alpha is dropped."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(f"Expected an image tensor [C, H, W] with C in {{1, 3, 4}}, got {tuple(image.shape)}.")
        if image.is_floating_point():
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise ValueError(f"Integer image tensors must be uint8, got {image.dtype}.")
        image = TF.to_pil_image(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"Expected a PIL image or a tensor, got {type(image).__name__}.")
    return image if image.mode == "RGB" else image.convert("RGB")
