#!/usr/bin/env python
"""Train the official linear segmentation probe on texture mosaics and report mIoU on held-out mosaics.

Texture mosaics (dinov3_hf.data.TextureMosaics) are images split into Voronoi cells, each filled with a crop of one
bundled CC0 texture / photo (brick, grass, gravel, coffee, rocket), so every pixel's label is exact and the data is
unlimited. A frozen DINOv3 backbone feeds `Dinov3HfForSemanticSegmentation` (BatchNorm + 1x1 conv on the patch
features), trained with the HF Trainer. The held-out mosaics have other layouts and take their pixels from parts of
the textures that training never saw (training windows lie in the top 60% of each texture, held-out ones below).
The metrics come from dinov3_hf's offline `mean_iou` evaluate module, on label maps at full image resolution.

    python examples/train_segmentation_probe.py                   # shipped backbone, ~1-2 CPU minutes
    python examples/train_segmentation_probe.py --baseline-random # also probe a random-init backbone
    python examples/train_segmentation_probe.py --smoke
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from dinov3_hf import Dinov3HfViTModel
from dinov3_hf.data import TextureMosaics, texture_mosaic_dataset
from dinov3_hf.metrics import load_metric
from dinov3_hf.models.heads import Dinov3HfForSemanticSegmentation
from dinov3_hf.pretrained_models import load_backbone


def random_like(backbone, seed: int):
    """A randomly initialised backbone with the architecture of `backbone` (a model or checkpoint path)."""
    from transformers import AutoConfig

    config = backbone.config if isinstance(backbone, torch.nn.Module) else AutoConfig.from_pretrained(backbone)
    torch.manual_seed(seed)
    return Dinov3HfViTModel(config).eval()


def train_and_evaluate(backbone, processor, train, test, id2label, args, output_dir: Path) -> dict:
    size = {"height": args.image_size, "width": args.image_size}

    def transform(batch):
        pixels = processor([image.convert("RGB") for image in batch["image"]], size=size, return_tensors="pt")
        labels = torch.stack([torch.from_numpy(np.asarray(label, dtype=np.int64)) for label in batch["label"]])
        return {"pixel_values": pixels["pixel_values"], "labels": labels}

    def collate(rows):
        return {key: torch.stack([row[key] for row in rows]) for key in ("pixel_values", "labels")}

    torch.manual_seed(args.seed)
    model = Dinov3HfForSemanticSegmentation.from_backbone(backbone, id2label=id2label)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            max_steps=2 if args.smoke else -1,
            learning_rate=args.lr,
            lr_scheduler_type="cosine",
            weight_decay=0.0,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            remove_unused_columns=False,
            use_cpu=True,
            seed=args.seed,
            disable_tqdm=True,
        ),
        train_dataset=train.with_transform(transform),
        data_collator=collate,
    )
    trainer.train()

    # held-out evaluation at full resolution: logits upsampled to the label maps, then argmax
    model.eval()
    metric = load_metric("mean_iou")
    with torch.no_grad():
        for start in range(0, test.num_rows, args.batch_size):
            batch = test[start : start + args.batch_size]
            inputs = transform(batch)
            outputs = model(pixel_values=inputs["pixel_values"])
            sizes = [label.shape for label in inputs["labels"]]
            predictions = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            metric.add_batch(
                predictions=[p.numpy() for p in predictions], references=[r.numpy() for r in inputs["labels"]]
            )
    result = metric.compute(num_labels=len(id2label), ignore_index=255)
    return {"model": model, **result}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="backbone checkpoint (default: the shipped model); 'random' = tiny random")
    parser.add_argument("--classes", nargs="+", default=None, help="texture names (default: the 5 default textures)")
    parser.add_argument("--layout", choices=["voronoi", "rectangles"], default="voronoi")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--baseline-random", action="store_true", help="also probe a randomly initialised backbone")
    parser.add_argument("--output-dir", type=Path, default=None, help="save the trained probe here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny data and 2 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_train, args.num_test, args.image_size, args.batch_size = 8, 4, 32, 4

    mosaic_args = {"size": args.image_size, "layout": args.layout, "n_regions": (2, 5)}
    if args.classes:
        mosaic_args["classes"] = tuple(args.classes)
    id2label = TextureMosaics(**mosaic_args).id2label
    # held out: other layouts (another seed) and texture pixels never seen in training (the bottom 40% of each texture)
    train = texture_mosaic_dataset(args.num_train, seed=args.seed, source_rows=(0.0, 0.6), **mosaic_args)
    test = texture_mosaic_dataset(args.num_test, seed=args.seed + 1000, source_rows=(0.6, 1.0), **mosaic_args)
    print(f"mosaics of {args.image_size}px: {train.num_rows} train / {test.num_rows} held-out, classes {id2label}")

    backbone, processor = load_backbone(args.backbone, args.seed)
    runs = {"pretrained": backbone}
    if args.baseline_random:
        runs["random init"] = random_like(backbone, args.seed + 1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, weights in runs.items():
            result = train_and_evaluate(weights, processor, train, test, id2label, args, Path(tmp) / name)
            per_class = ", ".join(
                f"{id2label[i]} {iou:.2f}" for i, iou in enumerate(np.asarray(result["per_category_iou"]))
            )
            print(
                f"[{name} backbone] held-out mIoU {result['mean_iou']:.3f}, pixel accuracy "
                f"{result['overall_accuracy']:.3f} (per class: {per_class})"
            )
            results[name] = result
    main_result = results["pretrained"]
    if args.output_dir:
        main_result["model"].save_pretrained(args.output_dir)
        processor.save_pretrained(args.output_dir)
        print(f"saved the probe to {args.output_dir} (try: dinov3-hf segment IMAGE --model {args.output_dir} ...)")
    metrics = {"mean_iou": main_result["mean_iou"], "overall_accuracy": main_result["overall_accuracy"]}
    if "random init" in results:
        metrics["random_init_mean_iou"] = results["random init"]["mean_iou"]
    return metrics


if __name__ == "__main__":
    main()
