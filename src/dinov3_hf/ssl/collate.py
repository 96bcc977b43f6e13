"""Batch collation for multi-crop SSL: augment each sample, stack the crops view-major, draw the iBOT masks."""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .augment import MultiCropAugmentation
from .masking import max_block_patches, sample_masks

logger = logging.getLogger(__name__)

# what reading a broken image file raises (PIL.UnidentifiedImageError and truncated files are OSErrors)
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)
UNREADABLE = "unreadable_image"  # key of a sample whose image could not be read (see `SeededSamples`)


class UnreadableImagesError(RuntimeError):
    """Too many images could not be read: a whole batch, or more than `data.max_unreadable_fraction` of the data."""


class MultiCropCollator:
    """`samples` (dicts with an image under `image_key`, e.g. rows of a `datasets.Dataset` with an Image feature)
    -> {"global_crops": [2B, 3, G, G], "local_crops": [n_local·B, 3, L, L], "masks": bool [2B, (G/p)²],
    "gram_crops": [2B, 3, S, S] (only if the augmentation has `gram_size`)}.

    Crops are ordered view-major: row v·B + b is view v of sample b (mask row i belongs to global crop row i).
    Samples that carry a `sample_seed` (see `SeededSamples`) are augmented from that seed, and the batch's masks from
    a seed derived from all of them; otherwise both draw from torch's global RNG.
    With the HF Trainer set `remove_unused_columns=False`, or the image column is dropped before collation.
    Samples marked unreadable (`SeededSamples` marks those whose image cannot be decoded) are left out, and the batch
    then carries their number as "skipped_images"; a batch of unreadable samples only raises `UnreadableImagesError`.
    """

    def __init__(
        self,
        augmentation: MultiCropAugmentation,
        patch_size: int = 16,
        mask_probability: float = 0.5,
        mask_ratio_range: tuple[float, float] = (0.1, 0.5),
        image_key: str = "image",
    ) -> None:
        if patch_size < 1 or augmentation.global_size % patch_size:
            raise ValueError(
                f"global_size ({augmentation.global_size}) must be a multiple of patch_size ({patch_size})."
            )
        self.augmentation = augmentation
        self.patch_size = patch_size
        self.mask_probability = mask_probability
        self.mask_ratio_range = tuple(mask_ratio_range)
        self.image_key = image_key

    def _augment(self, sample: dict[str, Any]) -> dict[str, list[Tensor]]:
        """Crops of one sample; drawn from its `sample_seed` when it has one (see `SeededSamples`). The augmentations
        run on the CPU, so only the CPU generator is seeded (and restored after): `torch.manual_seed` would also
        reseed every accelerator's generator, overwriting the training's dropout and drop-path streams when
        collation runs in the main process."""
        if "sample_seed" not in sample:
            return self.augmentation(sample[self.image_key])
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample["sample_seed"])
            return self.augmentation(sample[self.image_key])

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Tensor]:
        if not samples:
            raise ValueError("Cannot collate an empty batch.")
        readable = [sample for sample in samples if UNREADABLE not in sample]
        if not readable:
            raise UnreadableImagesError(
                f"All {len(samples)} images of a batch are unreadable (e.g. {samples[0][UNREADABLE]}): there is nothing to "
                "train on. Check the data section of the config (path, dataset, image_key)."
            )
        skipped, samples = len(samples) - len(readable), readable
        views = []
        for index, sample in enumerate(samples):
            if self.image_key not in sample:
                raise KeyError(
                    f"Sample {index} has no {self.image_key!r} key (keys: {sorted(sample)}). Pass image_key=..., and "
                    "with the HF Trainer set remove_unused_columns=False."
                )
            views.append(self._augment(sample))
        batch = {
            name: torch.stack([view[name][i] for i in range(len(crops)) for view in views])
            for name, crops in views[0].items()
        }
        grid = self.augmentation.global_size // self.patch_size
        seeds = [sample.get("sample_seed") for sample in samples]
        mask_seed = hash(tuple(seeds)) % 2**62 if None not in seeds else int(torch.randint(2**62, ()))
        generator = torch.Generator().manual_seed(mask_seed)
        batch["masks"] = sample_masks(
            len(batch["global_crops"]),
            (grid, grid),
            mask_probability=self.mask_probability,
            ratio_range=self.mask_ratio_range,
            generator=generator,
            max_num_patches=max_block_patches(self.augmentation.global_size, self.patch_size),
        )
        if skipped:
            batch["skipped_images"] = torch.tensor(skipped)
        return batch


class MixedResolutionCollator:
    """Collates a batch with the collator of its samples' `resolution` index (one `MultiCropCollator` per crop-size
    triple; see `resolutions.MixedResolutionBatchSampler`)."""

    def __init__(self, collators: list[MultiCropCollator]) -> None:
        if not collators:
            raise ValueError("MixedResolutionCollator needs at least one collator.")
        self.collators = collators

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Tensor]:
        resolutions = {sample.get("resolution") for sample in samples}
        if len(resolutions) != 1 or None in resolutions:
            raise ValueError(
                f"Every sample of a mixed-resolution batch needs the same 'resolution' index, got {sorted(map(str, resolutions))}: "
                "use MixedResolutionBatchSampler as the DataLoader's batch_sampler."
            )
        (resolution,) = resolutions
        return self.collators[resolution](samples)


class SeededSamples(Dataset):
    """Adds `sample_seed` = f(seed, epoch, index) to each sample of `dataset`, so that the crops and masks of a sample
    depend only on (seed, epoch, index): not on the process, the dataloader worker or where a run was resumed.
    Indexed by `(index, resolution)` (from `MixedResolutionBatchSampler`), the sample also carries `resolution`.
    A sample whose image cannot be decoded (`UNREADABLE_IMAGE_ERRORS` while reading the row, e.g. a corrupt file of an
    image folder) comes as {"unreadable_image": the error, "sample_seed": ...}, with a logged warning; the collator
    leaves it out.

    The trainer calls `set_epoch` at the start of every epoch.
    """

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, resolution = key if isinstance(key, tuple) else (key, None)
        seed = ((self.seed * 1_000_003 + self.epoch) * 2_147_483_647 + int(index)) % 2**62
        try:
            row = self.dataset[index]
        except UNREADABLE_IMAGE_ERRORS as error:
            logger.warning("Skipping sample %d, whose image is unreadable: %s: %s", index, type(error).__name__, error)
            row = {UNREADABLE: f"{type(error).__name__}: {error}"}
        sample = {**row, "sample_seed": seed}
        if resolution is not None:
            sample["resolution"] = resolution
        return sample
