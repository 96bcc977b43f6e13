"""Wiring of a training run (pretraining, Gram anchoring, high-resolution adaptation, distillation) from a YAML
config: data, augmentation, collator, TrainingArguments, trainer."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..models.hub import DINOV3_LICENSE, PACKAGE_LICENSE, is_hub_repo_id, push_folder
from .augment import MultiCropAugmentation
from .collate import MixedResolutionCollator, MultiCropCollator
from .config import CropResolution, DistillationConfig, PretrainConfig, load_yaml_with_overrides
from .meta_arch import SSLMetaArch
from .trainer import MAX_UNREADABLE_FRACTION, SSLTrainer

LOG_HISTORY_FILE = "log_history.json"  # written into the output folder at the end of a run
DATASET_IDS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}  # Hub ids of the data kinds, for model cards
logger = logging.get_logger(__name__)

DATA_KINDS = ("fashion_mnist", "imagefolder", "hub", "pasted_objects")


def load_image_dataset(data: dict[str, Any]):
    """A `datasets.Dataset` with an image column from a `data` config section.

    kinds: fashion_mnist {split, limit, offset}; imagefolder {path} (a folder of image files, in class subfolders or
    not); hub {name, config, split}: any dataset `datasets.load_dataset(name, config)` reads (a Hub id, a local
    dataset folder, a loader name); pasted_objects {n_images, image_size, seed}: the unlabelled images of
    `dinov3_hf.data.make_pasted_objects` on its training textures (the detection examples' domain). The images are read from column `image_key` (default "image"); images that
    cannot be decoded are skipped and counted during training, at most a share `max_unreadable_fraction` (default
    0.01) of the dataset per epoch (see `trainer.UnreadableImagesCallback`).
    """
    import datasets

    kind = data.get("kind")
    if kind == "fashion_mnist":
        from ..data import load_fashion_mnist

        return load_fashion_mnist(data.get("split", "train"), data.get("limit"), data.get("offset", 0))
    if kind == "imagefolder":
        if not data.get("path") or not Path(data["path"]).is_dir():
            raise FileNotFoundError(f"data.path must be a folder of images for data.kind imagefolder, got {data.get('path')!r}.")
        return datasets.load_dataset("imagefolder", data_dir=data["path"], split="train")
    if kind == "hub":
        return datasets.load_dataset(data["name"], data.get("config"), split=data.get("split", "train"))
    if kind == "pasted_objects":
        from ..data import make_pasted_objects

        if "n_images" not in data:
            raise ValueError("data.n_images (how many images to generate) is required for data.kind pasted_objects.")
        records = make_pasted_objects(int(data["n_images"]), data.get("image_size", 64), data.get("seed", 0))
        return datasets.Dataset.from_dict({"image": [record.image for record in records]},
                                          features=datasets.Features({"image": datasets.Image()}))
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
    report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
    training = {"remove_unused_columns": False, "max_grad_norm": 0.0, "report_to": report_to, **config.get("training", {})}
    training.pop("resume_from_checkpoint", None)
    if training.pop("push_to_hub", False):  # run_training pushes the final teacher backbone, not the Trainer
        if distillation:
            raise ValueError("training.push_to_hub pushes the EMA teacher backbone of a pretraining run; a "
                             "distillation run saves students: push one with `dinov3-hf convert STUDENT DST "
                             "--push-to-hub REPO_ID`.")
        if not training.get("hub_model_id"):
            raise ValueError("training.push_to_hub needs training.hub_model_id, the Hub repo to push the backbone to.")
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
            gram_size=sizes.gram_size, distortions=recipe.distortions,
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
    data = config.get("data", {})
    dataset = train_dataset if train_dataset is not None else load_image_dataset(data)
    image_key = data.get("image_key", "image")
    if getattr(dataset, "column_names", None) is not None and image_key not in dataset.column_names:
        raise ValueError(f"The dataset has no column {image_key!r} (its columns: {dataset.column_names}); set data.image_key.")
    return trainer_class(
        model=model, args=args, train_dataset=dataset, data_collator=collator,
        max_unreadable_fraction=data.get("max_unreadable_fraction", MAX_UNREADABLE_FRACTION),
    )


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
    paths = trainer.save_backbones(trainer.args.output_dir)
    if trainer.is_world_process_zero():
        log_file = Path(trainer.args.output_dir) / LOG_HISTORY_FILE
        log_file.write_text(json.dumps(trainer.state.log_history, indent=1))
        if "teacher" in paths:  # pretraining, Gram anchoring, high resolution (distillation saves students)
            publish_backbones(trainer, config, paths)
    return trainer


def evaluate_backbone(backbone, data: dict[str, Any]) -> list[EvalResult]:
    """kNN (k = `data.eval.k`, default 20) and linear-probe accuracy of the backbone's CLS features on held-out
    Fashion-MNIST: the bank is `data.eval.bank` training images after the ones the run read (from data.offset +
    data.limit), the queries the first `data.eval.queries` test images (`training/eval_knn.py`'s protocol)."""
    from ..data import load_fashion_mnist
    from ..metrics import extract_cls_features, knn_accuracy, linear_probe_accuracy
    from ..processing import Dinov3HfImageProcessor

    if data.get("kind") != "fashion_mnist":
        raise ValueError(
            f"data.eval needs labelled held-out images: data.kind fashion_mnist, not {data.get('kind')!r}."
        )
    settings = data["eval"]
    k = settings.get("k", 20)
    size = backbone.config.image_size
    processor = Dinov3HfImageProcessor.for_model_config(backbone.config, size={"height": size, "width": size})
    bank = load_fashion_mnist("train", settings["bank"], data.get("offset", 0) + data["limit"])
    queries = load_fashion_mnist("test", settings["queries"])

    def features(images):
        return extract_cls_features(backbone, images, lambda x: processor(list(x), return_tensors="pt")["pixel_values"])

    bank_x, query_x = features(bank["image"]), features(queries["image"])
    bank_y, query_y = torch.tensor(bank["label"]), torch.tensor(queries["label"])
    scores = {f"kNN accuracy (k = {k}, CLS)": knn_accuracy(bank_x, bank_y, query_x, query_y, k=k),
              "linear probe accuracy (CLS)": linear_probe_accuracy(bank_x, bank_y, query_x, query_y)}
    return [
        EvalResult(task_type="image-classification", dataset_type=DATASET_IDS["fashion_mnist"],
                   dataset_name="Fashion-MNIST", dataset_split="test", metric_type="accuracy", metric_value=value,
                   metric_name=name)
        for name, value in scores.items()
    ]


def publish_backbones(trainer: SSLTrainer, config: dict[str, Any], paths: dict[str, Path]) -> None:
    """Write the model cards of the saved teacher and student backbones (the teacher's with the `data.eval` results,
    if configured) and, with `training.push_to_hub: true`, push the EMA teacher's folder to `training.hub_model_id`
    (with `hub_private_repo`, `hub_revision`, `hub_token`, as for the Trainer): the final backbone only, not the
    training checkpoints."""
    data, recipe, args = config.get("data", {}), config.get("recipe", {}), trainer.args
    push = config.get("training", {}).get("push_to_hub", False)
    init_from = recipe.get("init_from")
    dataset = DATASET_IDS.get(data.get("kind")) or (data.get("name") if data.get("kind") == "hub" else None)
    for role in ("teacher", "student"):
        backbone = getattr(trainer.model, role)["backbone"]
        card = backbone.model_card(
            args.hub_model_id if push and role == "teacher" else None,
            license=DINOV3_LICENSE if init_from else PACKAGE_LICENSE,  # continued pretraining keeps Meta's licence
            base_model=init_from if is_hub_repo_id(init_from) else None,
            datasets=[dataset] if dataset else None,
            eval_results=evaluate_backbone(backbone, data) if "eval" in data and role == "teacher" else None,
            tags=["self-supervised-learning"],
            description=(
                f"The {'EMA teacher' if role == 'teacher' else 'student'} backbone after {trainer.state.global_step} "
                "steps of DINOv3 self-supervised pretraining (DINO + iBOT + KoLeo, arXiv 2508.10104) with dinov3-hf's "
                "Trainer recipe" + (f", continued from {init_from}." if init_from else ", from random initialisation.")
            ),
        )
        card.save(paths[role] / "README.md")
    if push:
        commit = push_folder(paths["teacher"], args.hub_model_id, private=args.hub_private_repo,
                             revision=args.hub_revision, token=args.hub_token,
                             commit_message=f"Teacher backbone at step {trainer.state.global_step}")
        logger.info(f"Pushed {paths['teacher']} to {commit.repo_url.url} at revision {commit.oid}")


def read_log_history(path: str | Path) -> list[dict[str, Any]]:
    """The log history of a run: `path` is a run folder (its `log_history.json`, else its last checkpoint's), a
    checkpoint folder (`trainer_state.json`) or one of those JSON files."""
    path = Path(path)
    if path.is_dir():
        if (path / LOG_HISTORY_FILE).is_file():
            path = path / LOG_HISTORY_FILE
        else:
            folder = path if (path / "trainer_state.json").is_file() else get_last_checkpoint(str(path))
            if folder is None:
                raise FileNotFoundError(
                    f"{path} has neither {LOG_HISTORY_FILE} nor trainer_state.json nor checkpoint-N folders: pass an "
                    "SSL run's output folder or one of its checkpoints."
                )
            path = Path(folder) / "trainer_state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass an SSL run's output folder or one of its checkpoints.")
    data = json.loads(path.read_text())
    return data["log_history"] if isinstance(data, dict) else data


def plot_main(argv: list[str] | None = None) -> int:
    """`training/plot_diagnostics.py RUN [--out PNG]`: the diagnostics of a run as curves."""
    from ..viz import plot_training_diagnostics

    parser = argparse.ArgumentParser(description="Draw an SSL run's training diagnostics to a PNG.")
    parser.add_argument("run", help="run output folder, checkpoint folder, log_history.json or trainer_state.json")
    parser.add_argument("--out", help="PNG path (default: diagnostics.png in the run folder)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "diagnostics.png"
    plot_training_diagnostics(read_log_history(run), out, title=str(run))
    print(f"wrote {out}")
    return 0


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
