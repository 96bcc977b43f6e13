#!/usr/bin/env python
"""Train Mask2Former (universal segmentation) on a DINOv3 backbone with the HF Trainer; report panoptic quality,
semantic mIoU and COCO mask mAP on held-out images.

Data: the pasted-objects set (`dinov3_hf.data.pasted_objects`): quokka, horse and coin cutouts from real photos,
pasted onto texture backgrounds, with exact masks. Held-out sets as in examples/train_detector.py (another seed on
the training textures; `unseen_backgrounds_`: a third seed on textures never seen in training). Mask2Former's
labels: 0 = background (one "stuff" segment per image), k + 1 = category k ("things", one segment per object), so
its semantic output is the data's `semantic` map.

Model: transformers' `Mask2FormerForUniversalSegmentation` (Cheng et al. 2022, arXiv 2112.01527) with one of our
backbones as `backbone_config`, fed as in examples/train_detector.py (a ViT through the simple feature pyramid, a
ConvNeXt's last three stages; frozen, `--lora`, `--layer-decay`). One trained model gives all three outputs through
the post-processing of `Mask2FormerImageProcessor`:
- panoptic: PQ / SQ / RQ over the three things and the background stuff (`metrics.detection.panoptic_quality`);
- semantic: mIoU over background + the three categories (the offline `mean_iou` module);
- instance: COCO mask AP of the object segments (`metrics.detection.mask_map`).

    python examples/train_universal_segmentation.py                # shipped backbone, about 3 CPU minutes
    python examples/train_universal_segmentation.py --random-init  # the same architecture, randomly initialised
    python examples/train_universal_segmentation.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
)

from dinov3_hf.data.pasted_objects import CATEGORIES, PastedObjectsImage
from dinov3_hf.metrics import load_metric
from dinov3_hf.metrics.detection import mask_map, panoptic_quality

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_detector import add_shared_arguments, fit, load_data_and_backbone, write_outputs  # noqa: E402

BACKGROUND = 0
LABELS = ("background", *CATEGORIES)  # Mask2Former class ids: 0 = background (stuff), k + 1 = CATEGORIES[k]


def collate_fn(processor, image_size: int):
    """Batch of PastedObjectsImage -> Mask2Former inputs: normalised pixels, per image the binary masks of its
    segments (background first, if any pixel is background, then the objects) and their class ids."""

    def collate(records: list[PastedObjectsImage]) -> dict:
        size = {"height": image_size, "width": image_size}
        pixels = processor([r.image for r in records], size=size, return_tensors="pt")["pixel_values"]
        mask_labels, class_labels = [], []
        for record in records:
            background = (record.semantic == BACKGROUND)[None]
            keep = background.any(dim=(1, 2))
            masks = torch.cat([background[keep], record.masks]).float()
            classes = torch.cat([torch.zeros(int(keep.sum()), dtype=torch.int64), record.labels + 1])
            mask_labels.append(masks)
            class_labels.append(classes)
        return {"pixel_values": pixels, "mask_labels": mask_labels, "class_labels": class_labels}

    return collate


def build_segmenter(backbone, strides: list[int], args) -> Mask2FormerForUniversalSegmentation:
    """A small Mask2Former around `backbone`: its three maps feed the multi-scale deformable pixel decoder, whose
    finest output (stride `strides[0]`) is the mask feature map."""
    config = Mask2FormerConfig(
        backbone_config=backbone.config,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        feature_strides=strides,
        common_stride=strides[0],
        feature_size=args.hidden_dim,
        mask_feature_size=args.hidden_dim,
        hidden_dim=args.hidden_dim,
        encoder_feedforward_dim=2 * args.hidden_dim,
        dim_feedforward=2 * args.hidden_dim,
        encoder_layers=args.encoder_layers,
        decoder_layers=args.decoder_layers,
        num_attention_heads=4,
        num_queries=args.num_queries,
        train_num_points=args.train_points,
    )
    torch.manual_seed(args.seed)
    segmenter = Mask2FormerForUniversalSegmentation(config)
    segmenter.model.pixel_level_module.encoder.load_state_dict(backbone.state_dict())
    return segmenter


def instance_predictions(result: dict, height: int, width: int) -> dict[str, torch.Tensor]:
    """`post_process_instance_segmentation(..., return_binary_maps=True)` output -> {"masks", "scores", "labels"}
    of the object segments (background segments dropped, class ids back to CATEGORIES indices)."""
    info = result["segments_info"]
    keep = [i for i, segment in enumerate(info) if segment["label_id"] != BACKGROUND]
    masks = result["segmentation"].bool()[keep] if keep else torch.zeros((0, height, width), dtype=torch.bool)
    return {
        "masks": masks,
        "scores": torch.tensor([info[i]["score"] for i in keep], dtype=torch.float32),
        "labels": torch.tensor([info[i]["label_id"] - 1 for i in keep], dtype=torch.int64),
    }


def panoptic_prediction(result: dict) -> dict:
    """`post_process_panoptic_segmentation` output -> the data's panoptic format: object segments labelled with
    CATEGORIES indices; background segments are left out (their pixels count as background)."""
    info = [{"id": s["id"], "label_id": s["label_id"] - 1} for s in result["segments_info"] if s["label_id"] != 0]
    return {"segmentation": result["segmentation"], "segments_info": info}


def evaluate(segmenter, processor, records: list[PastedObjectsImage], image_size: int, batch_size: int) -> dict:
    """Held-out PQ / SQ / RQ, mIoU and pixel accuracy, and mask mAP (see the module docstring)."""
    post = Mask2FormerImageProcessor()
    collate = collate_fn(processor, image_size)
    miou = load_metric("mean_iou")
    instances, panoptic = [], []
    segmenter.eval()
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            outputs = segmenter(pixel_values=collate(batch)["pixel_values"])
            sizes = [(r.image.height, r.image.width) for r in batch]
            semantic = post.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            miou.add_batch(
                predictions=[s.numpy() for s in semantic], references=[r.semantic.numpy() for r in batch]
            )
            for result, (h, w) in zip(
                post.post_process_instance_segmentation(
                    outputs, threshold=0.0, target_sizes=sizes, return_binary_maps=True
                ),
                sizes,
            ):
                instances.append(instance_predictions(result, h, w))
            panoptic += [
                panoptic_prediction(result)
                for result in post.post_process_panoptic_segmentation(
                    outputs, threshold=0.5, label_ids_to_fuse={BACKGROUND}, target_sizes=sizes
                )
            ]
    semantic_scores = miou.compute(num_labels=len(LABELS), ignore_index=255)
    background = len(CATEGORIES)  # PQ's category id of the background stuff (object categories are 0 .. K - 1)
    quality = panoptic_quality(
        panoptic, [r.panoptic() for r in records], things=range(len(CATEGORIES)), stuffs=[background],
        unlabelled=background,
    )
    masks = mask_map(instances, [r.target() for r in records])
    return {
        **quality,
        "mean_iou": float(semantic_scores["mean_iou"]),
        "pixel_accuracy": float(semantic_scores["overall_accuracy"]),
        "per_class_iou": {name: float(v) for name, v in zip(LABELS, np.asarray(semantic_scores["per_category_iou"]))},
        **{f"mask_{key}": value for key, value in masks.items()},
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(parser, weight_decay=0.05)
    parser.add_argument("--encoder-layers", type=int, default=2)
    parser.add_argument("--decoder-layers", type=int, default=4)
    parser.add_argument("--num-queries", type=int, default=20)
    parser.add_argument("--train-points", type=int, default=1024, help="points sampled per mask for the mask loss")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_train, args.num_test, args.image_size, args.batch_size = 4, 2, 32, 2
        args.hidden_dim, args.encoder_layers, args.decoder_layers, args.num_queries = 32, 1, 2, 6
        args.train_points = 64

    train, tests, backbone, processor, strides = load_data_and_backbone(args)
    segmenter = build_segmenter(backbone, strides, args)
    inner = segmenter.model.pixel_level_module.encoder
    trainable = fit(segmenter, inner, train, collate_fn(processor, args.image_size), args, max_grad_norm=1.0)

    metrics = {"trainable_fraction": trainable}
    for prefix, test in tests.items():
        result = evaluate(segmenter, processor, test, args.image_size, args.batch_size)
        print(
            f"held-out {prefix or 'seen_backgrounds_'}PQ {result['pq']:.3f} (SQ {result['sq']:.3f},"
            f" RQ {result['rq']:.3f}), mIoU {result['mean_iou']:.3f} (pixel accuracy {result['pixel_accuracy']:.3f}),"
            f" mask mAP {result['mask_map']:.3f} (AP50 {result['mask_map_50']:.3f}); per-class IoU "
            + ", ".join(f"{name} {iou:.2f}" for name, iou in result["per_class_iou"].items())
        )
        metrics.update({prefix + key: value for key, value in result.items()})
    write_outputs(segmenter, metrics, args)
    return metrics


if __name__ == "__main__":
    main()
