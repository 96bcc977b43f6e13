#!/usr/bin/env python
"""Fine-tune an image classifier on a DINOv3 backbone with the HF Trainer and an `imagefolder` dataset.

The script writes a small image folder (train/<class>/*.png, test/<class>/*.png) to a temporary directory, from
crops of the bundled CC0 textures (brick, grass, gravel, coffee, rocket) or from Fashion-MNIST, loads it with
`datasets.load_dataset("imagefolder")`, trains `Dinov3HfForImageClassification` (the official linear probe on
[CLS ; mean patch token]; `--unfreeze` fine-tunes the backbone too) and reports test accuracy with dinov3_hf's
offline `evaluate` module. The trained model and its processor are saved to OUTPUT_DIR/model, ready for
`pipeline("image-classification", model=...)`.

    python examples/finetune_classifier.py                     # shipped backbone, textures, ~1 CPU minute
    python examples/finetune_classifier.py --data fashion-mnist --train-per-class 100
    python examples/finetune_classifier.py --smoke             # a few steps, for testing
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from transformers import Trainer, TrainingArguments

from dinov3_hf.data import TextureMosaics, load_fashion_mnist
from dinov3_hf.metrics import load_metric
from dinov3_hf.models.heads import Dinov3HfForImageClassification
from dinov3_hf.pretrained_models import load_backbone


def write_image_folder(root: Path, source: str, per_class: dict[str, int], image_size: int, seed: int) -> list[str]:
    """Write root/<split>/<class>/<i>.png and return the class names."""
    if source == "textures":
        generators = {
            split: TextureMosaics(size=image_size, texture_scale=0.5, seed=seed + offset)
            for offset, split in enumerate(per_class)
        }
        classes = list(next(iter(generators.values())).classes)
        for split, count in per_class.items():
            for index in range(count * len(classes)):
                image, label = generators[split].crop(index)
                folder = root / split / classes[label]
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{index:05d}.png")
        return classes
    # Fashion-MNIST: the first `count` images of each class in the official train / test splits
    from dinov3_hf.data import FASHION_MNIST_CLASSES

    classes = [name.replace("/", "-") for name in FASHION_MNIST_CLASSES]
    for split, count in per_class.items():
        data = load_fashion_mnist("train" if split == "train" else "test", limit=count * 20 + 500)
        labels = np.asarray(data["label"])
        for cls, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels == cls)[:count]:
                data[int(index)]["image"].save(folder / f"{int(index):05d}.png")
    return classes


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="backbone checkpoint (default: the shipped model); 'random' = tiny random")
    parser.add_argument("--data", choices=["textures", "fashion-mnist"], default="textures")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32, help="texture crop size and model input size")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--unfreeze", action="store_true", help="fine-tune the backbone too (default: linear probe)")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny data and 2 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_per_class, args.test_per_class, args.epochs = 4, 2, 1

    with tempfile.TemporaryDirectory() as tmp:
        output_dir = args.output_dir or Path(tmp) / "out"
        root = Path(tmp) / "imagefolder"
        splits = {"train": args.train_per_class, "test": args.test_per_class}
        write_image_folder(root, args.data, splits, args.image_size, args.seed)
        dataset = load_dataset("imagefolder", data_dir=str(root), cache_dir=str(Path(tmp) / "cache"))
        names = dataset["train"].features["label"].names  # imagefolder sorts the folder names
        train_rows, test_rows = dataset["train"].num_rows, dataset["test"].num_rows
        print(f"imagefolder: {train_rows} train / {test_rows} test images, classes {names}")

        backbone, processor = load_backbone(args.backbone, args.seed)
        size = {"height": args.image_size, "width": args.image_size}

        def transform(batch):
            pixels = processor([image.convert("RGB") for image in batch["image"]], size=size, return_tensors="pt")
            return {"pixel_values": pixels["pixel_values"], "labels": batch["label"]}

        def collate(rows):
            return {
                "pixel_values": torch.stack([row["pixel_values"] for row in rows]),
                "labels": torch.tensor([row["labels"] for row in rows]),
            }

        torch.manual_seed(args.seed)
        model = Dinov3HfForImageClassification.from_backbone(
            backbone,
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            freeze_backbone=not args.unfreeze,
        )
        accuracy = load_metric("accuracy")

        def compute_metrics(eval_pred):
            logits, labels = eval_pred
            return accuracy.compute(predictions=np.argmax(logits, axis=-1), references=labels)

        training_args = TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            max_steps=2 if args.smoke else -1,
            learning_rate=args.lr,
            lr_scheduler_type="cosine",
            warmup_steps=0,
            weight_decay=0.0,
            logging_steps=5,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            remove_unused_columns=False,  # keep the `image` column for the on-the-fly transform
            use_cpu=True,
            seed=args.seed,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=dataset["train"].with_transform(transform),
            eval_dataset=dataset["test"].with_transform(transform),
            data_collator=collate,
            compute_metrics=compute_metrics,
        )
        before = trainer.evaluate()["eval_accuracy"]
        trainer.train()
        after = trainer.evaluate()["eval_accuracy"]
        model_dir = Path(output_dir) / "model"
        trainer.save_model(str(model_dir))
        processor.save_pretrained(str(model_dir))
        print(
            f"test accuracy ({len(names)} classes, chance {1 / len(names):.3f}): before training {before:.3f}, "
            f"after {after:.3f}"
        )
        if args.output_dir:
            print(f"saved the classifier and its processor to {model_dir}")
        return {"accuracy_before": before, "accuracy": after, "num_classes": len(names)}


if __name__ == "__main__":
    main()
