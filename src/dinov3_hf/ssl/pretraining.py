"""Wiring of a training run (pretraining, Gram anchoring, high-resolution adaptation, distillation) from a YAML
config: data, augmentation, collator, TrainingArguments, trainer."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .augment import MultiCropAugmentation
from .collate import MixedResolutionCollator, MultiCropCollator
from .config import CropResolution, DistillationConfig, PretrainConfig, load_yaml_with_overrides
from .meta_arch import SSLMetaArch
from .trainer import SSLTrainer

DATA_KINDS = ("fashion_mnist", "imagefolder", "hub")


def load_image_dataset(data: dict[str, Any]):
    """A `datasets.Dataset` with an image column from a `data` config section.

    kinds: fashion_mnist {split, limit, offset}; imagefolder {path}; hub {name, split} (any `datasets` dataset).
    """
    import datasets

    kind = data.get("kind")
    if kind == "fashion_mnist":
        from ..data import load_fashion_mnist

        return load_fashion_mnist(data.get("split", "train"), data.get("limit"), data.get("offset", 0))
    if kind == "imagefolder":
        return datasets.load_dataset("imagefolder", data_dir=data["path"], split="train")
    if kind == "hub":
        return datasets.load_dataset(data["name"], split=data.get("split", "train"))
    raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {kind!r}.")


def build_trainer(config: dict[str, Any], train_dataset=None) -> SSLTrainer:
    """A trainer for a parsed config ({recipe, data, training}): `SSLTrainer` (pretraining, Gram anchoring,
    high-resolution adaptation), or `DistillationTrainer` when the recipe lists `students`. `train_dataset` replaces
    the data section."""
    unknown = sorted(set(config) - {"recipe", "data", "training"})
    if unknown:
        raise ValueError(f"Unknown config sections {unknown}; expected recipe, data and training.")
    distillation = "students" in config.get("recipe", {})
    recipe = (DistillationConfig if distillation else PretrainConfig).from_dict(config.get("recipe", {}))
    training = {"remove_unused_columns": False, "max_grad_norm": 0.0, "report_to": [], **config.get("training", {})}
    training.pop("resume_from_checkpoint", None)
    args = TrainingArguments(**training)
    set_seed(args.seed)  # the initial weights depend on the seed, as in Trainer(model_init=...)
    if distillation:
        from .distillation import DistillationMetaArch, DistillationTrainer

        model, trainer_class = DistillationMetaArch(recipe), DistillationTrainer
        backbone_config = model.teacher["backbone"].config
        crop_scale = model.max_crop_scale  # crops for the largest-stride student; masks on the common token grid
    else:
        model, trainer_class = SSLMetaArch(recipe), SSLTrainer
        backbone_config = model.student["backbone"].config
        crop_scale = 1

    def collator_for(sizes: CropResolution) -> MultiCropCollator:
        augmentation = MultiCropAugmentation(
            global_size=round(sizes.global_size * crop_scale), local_size=round(sizes.local_size * crop_scale),
            n_local_crops=recipe.n_local_crops, global_scale=recipe.global_scale, local_scale=recipe.local_scale,
            horizontal_flips=recipe.horizontal_flips, mean=backbone_config.image_mean, std=backbone_config.image_std,
            gram_size=sizes.gram_size,
        )
        return MultiCropCollator(
            augmentation, patch_size=round(backbone_config.patch_size * crop_scale),
            mask_probability=recipe.mask_probability, mask_ratio_range=recipe.mask_ratio_range,
            image_key=config.get("data", {}).get("image_key", "image"),
        )

    if recipe.resolutions is None:
        gram_size = recipe.gram.teacher_size if recipe.gram is not None else None
        collator = collator_for(CropResolution(recipe.global_size, recipe.local_size, gram_size))
    else:
        collator = MixedResolutionCollator([collator_for(sizes) for sizes in recipe.resolutions])
    dataset = train_dataset if train_dataset is not None else load_image_dataset(config.get("data", {}))
    return trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator)


def run_training(config_path: str | Path, overrides: list[str] = ()) -> SSLTrainer:
    """Train as configured, resuming when `training.resume_from_checkpoint` is true or a path; save the backbones."""
    config = load_yaml_with_overrides(config_path, list(overrides))
    resume = config.get("training", {}).get("resume_from_checkpoint")
    trainer = build_trainer(config)
    if resume is True:
        resume = get_last_checkpoint(trainer.args.output_dir)
        if resume is None:
            raise FileNotFoundError(f"resume_from_checkpoint=true but {trainer.args.output_dir} has no checkpoint-* folder.")
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_backbones(trainer.args.output_dir)
    return trainer


def main(
    argv: list[str] | None = None, description: str | None = None, run: Callable[[str, list[str]], Any] = run_training
) -> int:
    """The command line of the training/ recipes: `--config CONFIG.yaml [key=value ...]`, then `run(config, overrides)`
    (default: `run_training`)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file with the recipe, data and training sections")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the YAML")
    args = parser.parse_args(argv)
    run(args.config, args.overrides)
    return 0
