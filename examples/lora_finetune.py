#!/usr/bin/env python
"""LoRA fine-tuning of a DINOv3 classifier with PEFT: train, save the adapter, load it, merge it, check the merge.

LoRA adapters go on the attention and FFN projections of every ViT block, named in dinov3_hf as
`blocks.N.attn.qkv`, `blocks.N.attn.proj` and `blocks.N.mlp.fc1` / `fc2` (MLP) or `blocks.N.mlp.w1` (the SwiGLU
gate) / `w2` / `w3` (SwiGLU, the "plus" models and 7B). The linear classifier is trained in full (`modules_to_save`).
Data: crops of the bundled CC0 textures (brick, grass, gravel, coffee, rocket), one class per texture.

Afterwards the adapter is saved (a few hundred kB), loaded onto a fresh copy of the base model, merged into the
weights with `merge_and_unload()`, and the merged model is checked to give the adapter model's logits (to 1e-5).
The merged model is a plain `Dinov3HfForImageClassification` that loads without PEFT.

    python examples/lora_finetune.py                   # shipped backbone, ~1 CPU minute
    python examples/lora_finetune.py --rank 16 --output-dir runs/lora
    python examples/lora_finetune.py --smoke
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments

from dinov3_hf.data import texture_crop_dataset
from dinov3_hf.metrics import accuracy
from dinov3_hf.models.heads import Dinov3HfForImageClassification
from dinov3_hf.pretrained_models import load_backbone

# every projection inside a ViT block: attention (fused qkv, output proj) and FFN (MLP fc1/fc2, SwiGLU w1/w2/w3)
LORA_TARGET_REGEX = r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|w1|w2|w3))"


def logits_of(model, pixel_values: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="ViT checkpoint (default: the shipped model); 'random' = tiny random ViT")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny data and 3 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_per_class, args.test_per_class, args.rank = 4, 2, 4

    crops = {"size": args.image_size, "texture_scale": 0.5}
    train = texture_crop_dataset(5 * args.train_per_class, seed=args.seed, **crops)
    test = texture_crop_dataset(5 * args.test_per_class, seed=args.seed + 1000, **crops)
    names = train.features["label"].names
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

    test_batch = transform(test[:])
    labels = dict(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    def base_model():
        torch.manual_seed(args.seed)  # the same classifier initialisation every time
        return Dinov3HfForImageClassification.from_backbone(backbone, **labels)

    model = base_model()
    module_names = [name for name, _ in model.named_modules() if re.fullmatch(LORA_TARGET_REGEX, name)]
    targets = sorted({name.split("blocks.", 1)[1] for name in module_names})
    if not targets:
        raise SystemExit("No ViT block projections found to adapt: LoRA here needs a dinov3_hf ViT backbone.")
    blocks = {t.split(".", 1)[0] for t in targets}
    kinds = sorted({t.split(".", 1)[1] for t in targets})
    print(f"LoRA targets: {', '.join(kinds)} in each of {len(blocks)} blocks")
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGET_REGEX,
        modules_to_save=["classifier"],  # the new head is trained in full and saved with the adapter
    )
    peft_model = get_peft_model(model, lora)
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    before = accuracy(logits_of(peft_model, test_batch["pixel_values"]), test_batch["labels"])

    with tempfile.TemporaryDirectory() as tmp:
        output_dir = args.output_dir or Path(tmp)
        trainer = Trainer(
            model=peft_model,
            args=TrainingArguments(
                output_dir=str(output_dir / "trainer"),
                per_device_train_batch_size=args.batch_size,
                num_train_epochs=args.epochs,
                max_steps=3 if args.smoke else -1,
                learning_rate=args.lr,
                lr_scheduler_type="cosine",
                weight_decay=0.0,
                logging_steps=5,
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
        adapter_logits = logits_of(peft_model, test_batch["pixel_values"])
        after = accuracy(adapter_logits, test_batch["labels"])
        print(f"test accuracy ({len(names)} classes): before {before:.3f}, after LoRA fine-tuning {after:.3f}")

        adapter_dir = output_dir / "adapter"
        peft_model.save_pretrained(adapter_dir)
        size_kb = sum(f.stat().st_size for f in adapter_dir.iterdir()) / 1024
        files = ", ".join(f.name for f in sorted(adapter_dir.iterdir()))
        print(f"saved the adapter to {adapter_dir} ({size_kb:.0f} kB: {files})")

        loaded = PeftModel.from_pretrained(base_model(), adapter_dir)
        loaded_diff = (logits_of(loaded, test_batch["pixel_values"]) - adapter_logits).abs().max().item()
        merged = loaded.merge_and_unload()
        merged_logits = logits_of(merged, test_batch["pixel_values"])
        merged_diff = (merged_logits - adapter_logits).abs().max().item()
        print(f"max |logit difference|: reloaded adapter {loaded_diff:.2e}, merged weights {merged_diff:.2e}")
        # merging adds B @ A * scale to each weight in float32: equal up to rounding (1e-5 of the logit scale)
        tolerance = 1e-5 * max(1.0, adapter_logits.abs().max().item())
        if merged_diff > tolerance or loaded_diff > tolerance:
            raise SystemExit(f"The reloaded / merged model differs from the adapter model by over {tolerance:.1e}.")
        merged_dir = output_dir / "merged"
        merged.save_pretrained(merged_dir)
        processor.save_pretrained(merged_dir)
        reloaded = Dinov3HfForImageClassification.from_pretrained(merged_dir)
        reload_diff = (logits_of(reloaded, test_batch["pixel_values"]) - adapter_logits).abs().max().item()
        print(f"merged model saved to {merged_dir}; loaded without PEFT it differs by {reload_diff:.2e}")
        return {
            "accuracy_before": before,
            "accuracy": after,
            "trainable_fraction": trainable / total,
            "reloaded_adapter_max_diff": loaded_diff,
            "merged_max_diff": merged_diff,
            "merged_reload_max_diff": reload_diff,
        }


if __name__ == "__main__":
    main()
