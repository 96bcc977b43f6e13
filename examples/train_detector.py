#!/usr/bin/env python
"""Train an RT-DETR object detector on a DINOv3 backbone with the HF Trainer; report COCO box mAP on held-out images.

Data: the pasted-objects set (`dinov3_hf.data.pasted_objects`): quokka, horse and coin cutouts from real photos,
pasted onto texture backgrounds, with exact boxes. Two held-out sets: images of another seed on the training
textures (the main metrics), and images of a third seed on textures never seen in training (`HELD_OUT_BACKGROUNDS`,
metrics prefixed `unseen_backgrounds_`).

Model: transformers' `RTDetrForObjectDetection` (Zhao et al. 2023, arXiv 2304.08069: hybrid encoder, IoU-aware query
selection and denoising queries, which learns in far fewer steps than DETR) with one of our backbones as
`backbone_config`. A ViT feeds it through the simple feature pyramid (ViTDet, `pyramid_strides`) from its last block;
a ConvNeXt gives its last three stages. The backbone is frozen (the new pyramid is trained), LoRA-tuned (`--lora`,
PEFT on the block projections, as in examples/lora_finetune.py) or, with `--layer-decay`, its trainable parameters
get the layer-wise lr decay of `dinov3_hf.ssl.param_groups` (Meta's dinov3/train/param_groups.py).

    python examples/train_detector.py                      # shipped backbone, about 3 CPU minutes
    python examples/train_detector.py --random-init        # the same architecture, randomly initialised
    python examples/train_detector.py --lora --layer-decay 0.8 --output-dir runs/detector
    python examples/train_detector.py --smoke
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, Trainer, TrainingArguments

from dinov3_hf.data.pasted_objects import CATEGORIES, HELD_OUT_BACKGROUNDS, PastedObjectsImage, make_pasted_objects
from dinov3_hf.metrics.detection import box_map
from dinov3_hf.pretrained_models import load_task_backbone
from dinov3_hf.ssl.param_groups import apply_schedules, task_param_groups

# every projection inside a ViT block: attention (fused qkv, output proj) and FFN (MLP fc1/fc2, SwiGLU w1/w2/w3)
LORA_TARGET_REGEX = r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|w1|w2|w3))"


def backbone_overrides(spec: str | None, channels: int, layers: list[int] | None = None) -> dict:
    """Config fields that make the backbone give three maps of strides (s, 2s, 4s): a ViT's `layers` (one block for
    every level, or one per level; default its last block) through the simple feature pyramid (s = patch_size if it
    is below 8, else patch_size / 2: 8/16/32 for 16-pixel patches), a ConvNeXt's stages `layers` (default its last
    three, 8/16/32). The ViT's pretraining-time RoPE augmentations (shift, jitter, rescale in training mode, Meta's
    dinov3/layers/rope_position_encoding.py) are switched off: the task model sees the coordinates it is tested on."""
    from transformers import AutoConfig

    from dinov3_hf.pretrained_models import load_backbone

    source, _ = load_backbone(spec)
    config = source.config if isinstance(source, nn.Module) else AutoConfig.from_pretrained(source)
    if "convnext" in config.model_type:
        return {"out_indices": layers or [2, 3, 4]}
    patch = config.patch_size
    stride = patch if patch < 8 else patch // 2
    return {
        "out_indices": layers or [config.num_hidden_layers],
        "pyramid_strides": [stride, 2 * stride, 4 * stride],
        "pyramid_channels": channels,
        "reshape_hidden_states": True,
        "rope_shift": None,
        "rope_jitter": None,
        "rope_rescale": None,
    }


def prepare_backbone(backbone: nn.Module, lora_rank: int | None) -> None:
    """Freeze the pretrained weights (the feature pyramid stays trainable); with `lora_rank`, add LoRA adapters to
    every block projection."""
    for name, param in backbone.named_parameters():
        param.requires_grad_(name.startswith("pyramid."))
    if lora_rank:
        if not hasattr(backbone, "blocks"):
            raise SystemExit("--lora needs a ViT backbone (LoRA goes on its block projections); drop --lora.")
        lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=LORA_TARGET_REGEX)
        inject_adapter_in_model(lora, backbone)
        for name, param in backbone.named_parameters():
            if name.startswith("pyramid."):
                param.requires_grad_(True)


def collate_fn(processor, image_size: int):
    """Batch of PastedObjectsImage -> RT-DETR inputs: normalised pixels and per image {"class_labels", "boxes"}
    with boxes as (cx, cy, w, h) over the image size."""

    def collate(records: list[PastedObjectsImage]) -> dict:
        size = {"height": image_size, "width": image_size}
        pixels = processor([r.image for r in records], size=size, return_tensors="pt")["pixel_values"]
        labels = []
        for record in records:
            x0, y0, x1, y1 = record.boxes.unbind(-1)
            scale = torch.tensor([record.image.width, record.image.height] * 2, dtype=torch.float32)
            boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1) / scale
            labels.append({"class_labels": record.labels, "boxes": boxes})
        return {"pixel_values": pixels, "labels": labels}

    return collate


def build_detector(backbone: nn.Module, strides: list[int], args) -> RTDetrForObjectDetection:
    """A small RT-DETR around `backbone`: its three maps feed the hybrid encoder (AIFI on the coarsest level)."""
    config = RTDetrConfig(
        backbone_config=backbone.config,
        num_labels=len(CATEGORIES),
        id2label=dict(enumerate(CATEGORIES)),
        label2id={name: i for i, name in enumerate(CATEGORIES)},
        encoder_in_channels=backbone.channels,
        feat_strides=strides,
        d_model=args.hidden_dim,
        encoder_hidden_dim=args.hidden_dim,
        encoder_ffn_dim=2 * args.hidden_dim,
        decoder_in_channels=[args.hidden_dim] * 3,
        decoder_ffn_dim=2 * args.hidden_dim,
        decoder_layers=args.decoder_layers,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        num_queries=args.num_queries,
        num_denoising=args.num_denoising,
        freeze_backbone_batch_norms=False,
    )
    torch.manual_seed(args.seed)
    detector = RTDetrForObjectDetection(config)
    detector.model.backbone.model.load_state_dict(backbone.state_dict())
    return detector


def detect(detector, processor, post, records: list[PastedObjectsImage], image_size: int, batch_size: int) -> list:
    """Per image {"boxes" (xyxy pixels), "scores", "labels"}: the top `num_queries` (query, class) scores."""
    detector.eval()
    predictions = []
    collate = collate_fn(processor, image_size)
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            outputs = detector(pixel_values=collate(batch)["pixel_values"])
            sizes = [(r.image.height, r.image.width) for r in batch]
            predictions += post.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
    return predictions


def add_shared_arguments(parser: argparse.ArgumentParser, weight_decay: float) -> None:
    """The backbone, data and training options of both dense-task examples."""
    parser.add_argument("--backbone", help="backbone checkpoint (default: the shipped model); 'random' = tiny random")
    parser.add_argument("--random-init", action="store_true", help="the backbone's architecture, randomly initialised")
    parser.add_argument("--lora", action="store_true", help="LoRA-tune the ViT blocks (default: frozen backbone)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--layer-decay", type=float, default=1.0, help="layer-wise lr decay of the backbone's groups")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hidden-dim", type=int, default=128, help="head width (and the pyramid's channels)")
    parser.add_argument("--layers", type=int, nargs="+", help="ViT blocks feeding the pyramid: 1 or 3 (default: last)")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=weight_decay)
    parser.add_argument("--output-dir", type=Path, default=None, help="write metrics.json and the model here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny data and model, 2 steps")


def load_data_and_backbone(args) -> tuple[list, dict[str, list], nn.Module, object, list[int]]:
    """(train images, held-out sets, backbone, processor, its three strides). Held-out sets: "" = images of another
    seed on the training textures, "unseen_backgrounds_" = images of a third seed on textures never seen in training
    (the prefix of their metric names)."""
    train = make_pasted_objects(args.num_train, image_size=args.image_size, seed=args.seed)
    tests = {
        "": make_pasted_objects(args.num_test, image_size=args.image_size, seed=args.seed + 1000),
        "unseen_backgrounds_": make_pasted_objects(
            args.num_test, image_size=args.image_size, seed=args.seed + 2000, backgrounds=HELD_OUT_BACKGROUNDS
        ),
    }
    print(f"pasted objects of {args.image_size}px: {len(train)} train / 2 x {args.num_test} held-out images, "
          f"{CATEGORIES}")
    overrides = backbone_overrides(args.backbone, args.hidden_dim, args.layers)
    backbone, processor = load_task_backbone(args.backbone, random_init=args.random_init, seed=args.seed, **overrides)
    strides = backbone.config.pyramid_strides if "pyramid_strides" in overrides else [8, 16, 32]
    return train, tests, backbone, processor, strides


def fit(model: nn.Module, inner: nn.Module, train: list, collate, args, max_grad_norm: float) -> float:
    """Freeze or LoRA-tune `inner` (the model's backbone), build the AdamW groups (layer-wise lr decay on the
    backbone) and train with the HF Trainer (cosine schedule); returns the trainable fraction of the parameters."""
    prepare_backbone(inner, args.lora_rank if args.lora else None)
    groups = task_param_groups(model, inner, layer_decay=args.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    apply_schedules(optimizer, lr=args.lr, wd=args.weight_decay, last_layer_lr=args.lr)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    weights = "random init" if args.random_init else (args.backbone or "shipped model")
    print(f"{type(model).__name__} on {type(inner).__name__} ({weights}): trainable {trainable:,} of {total:,}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=str(Path(tmp) / "trainer"),
                per_device_train_batch_size=args.batch_size,
                num_train_epochs=args.epochs,
                max_steps=2 if args.smoke else -1,
                warmup_steps=0 if args.smoke else 20,
                lr_scheduler_type="cosine",
                max_grad_norm=max_grad_norm,
                logging_steps=10,
                save_strategy="no",
                report_to="none",
                remove_unused_columns=False,
                use_cpu=True,
                seed=args.seed,
                disable_tqdm=True,
            ),
            train_dataset=train,
            data_collator=collate,
            optimizers=(optimizer, None),
        )
        trainer.train()
    return trainable / total


def write_outputs(model: nn.Module, metrics: dict, args) -> None:
    """metrics.json (and, unless LoRA-tuned, the trained model under model/) in `args.output_dir`."""
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if not args.lora:
            model.save_pretrained(args.output_dir / "model")
        print(f"wrote {args.output_dir / 'metrics.json'}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(parser, weight_decay=1e-4)
    parser.add_argument("--decoder-layers", type=int, default=3)
    parser.add_argument("--num-queries", type=int, default=30)
    parser.add_argument("--num-denoising", type=int, default=20)
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_train, args.num_test, args.image_size, args.batch_size = 4, 2, 32, 2
        args.hidden_dim, args.decoder_layers, args.num_queries, args.num_denoising = 32, 1, 10, 4

    train, tests, backbone, processor, strides = load_data_and_backbone(args)
    detector = build_detector(backbone, strides, args)
    # RT-DETR's official gradient clipping (max norm 0.1)
    trainable = fit(detector, detector.model.backbone.model, train, collate_fn(processor, args.image_size), args, 0.1)

    metrics = {"trainable_fraction": trainable}
    for prefix, test in tests.items():
        predictions = detect(detector, processor, RTDetrImageProcessor(), test, args.image_size, args.batch_size)
        result = box_map(predictions, [record.target() for record in test])
        print(f"held-out {prefix or 'seen_backgrounds_'}box " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
        metrics.update({prefix + key: value for key, value in result.items()})
    write_outputs(detector, metrics, args)
    return metrics


if __name__ == "__main__":
    main()
