#!/usr/bin/env python
"""Gram anchoring at toy scale: continue a small pretrained model with and without the Gram loss, on
the same data and steps, and compare what the paper says Gram anchoring protects: the dense features.

Both arms start from the same pretraining checkpoint (`--init-from`, default the Fashion-MNIST CPU run that made the
shipped model) with `training/configs/fashion_mnist_gram_cpu.yaml`; the "without" arm sets `recipe.gram=null` and
changes nothing else. The EMA teacher of each arm (and of the starting checkpoint) is then measured on held-out
images:

  (a) Gram distance to the Gram teacher: GramLoss(model patches at 28 px, Gram teacher patches at 56 px resized to the
      model's grid), on 1,000 Fashion-MNIST test images;
  (b) mean CLS-patch cosine similarity on the same images (high values = patch features collapsing onto the CLS);
  (c) dense linear probe: mIoU of the package's linear segmentation head on held-out texture mosaics
      (examples/train_segmentation_probe.py);
  plus kNN accuracy (k = 20) of the CLS token on Fashion-MNIST.

    python bench/gram_anchoring_toy.py                        # 2 arms x 300 steps; ~30-40 min on 2 CPU cores
    python bench/gram_anchoring_toy.py --steps 20 --smoke     # a quick check of the wiring

Prints a table and writes `<out>/gram_anchoring_toy.png` and `<out>/results.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoModel

from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.metrics import knn_eval_on_dataset
from dinov3_hf.processing import Dinov3HfImageProcessor
from dinov3_hf.ssl.losses import GramLoss, downsample_patch_tokens
from dinov3_hf.ssl.meta_arch import read_training_checkpoint, submodule_state
from dinov3_hf.ssl.pretraining import run_training

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "fashion_mnist_gram_cpu.yaml"


def load_segmentation_probe():
    spec = importlib.util.spec_from_file_location("segmentation_probe", REPO / "examples" / "train_segmentation_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pixels(images, size: int, config) -> torch.Tensor:
    processor = Dinov3HfImageProcessor.for_model_config(config, size={"height": size, "width": size})
    return processor([image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]


@torch.no_grad()
def dense_metrics(model, gram_teacher, images) -> dict[str, float]:
    """(a) Gram distance to the Gram teacher and (b) mean CLS-patch cosine similarity, in batches of 250."""
    gram, cosine, n = 0.0, 0.0, 0
    patch = model.config.patch_size
    for start in range(0, len(images), 250):
        chunk = images[start : start + 250]
        x, x_teacher = pixels(chunk, 28, model.config), pixels(chunk, 56, model.config)
        out = model(x)
        teacher = gram_teacher(x_teacher).patch_tokens
        teacher = downsample_patch_tokens(teacher, (56 // patch, 56 // patch), (28 // patch, 28 // patch))
        gram += GramLoss()(out.patch_tokens, teacher).item() * len(chunk)
        cls = torch.nn.functional.normalize(out.pooler_output, dim=-1)
        patches = torch.nn.functional.normalize(out.patch_tokens, dim=-1)
        cosine += (patches @ cls[:, :, None]).mean().item() * len(chunk)
        n += len(chunk)
    return {"gram_distance": gram / n, "cls_patch_cosine": cosine / n}


def plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("gram_distance", "(a) Gram distance to Gram teacher ↓"), ("cls_patch_cosine", "(b) mean CLS-patch cosine"),
               ("texture_miou", "(c) texture-mosaic linear probe mIoU ↑"), ("knn_accuracy", "CLS kNN accuracy ↑")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4))
    names = list(results)
    colors = ["#999999", "#1f77b4", "#d62728"][: len(names)]
    for ax, (key, title) in zip(axes, metrics):
        values = [results[name][key] for name in names]
        ax.bar(names, values, color=colors)
        ax.set_title(title, fontsize=9)
        for i, value in enumerate(values):
            ax.text(i, value, f"{value:.4f}" if key == "gram_distance" else f"{value:.3f}", ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Gram anchoring at toy scale: continuing a Fashion-MNIST DINOv3-style ViT with / without the Gram loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-from", default="runs/fashion_mnist_cpu", help="pretraining run or checkpoint folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("runs/gram_anchoring_toy"))
    parser.add_argument("--smoke", action="store_true", help="small evaluation sets and a 2-step probe")
    args = parser.parse_args(argv)

    start_state = read_training_checkpoint(args.init_from)
    arms = {"with Gram": [], "without Gram": ["recipe.gram=null"]}
    teachers = {}
    for name, extra in arms.items():
        output = args.out / name.replace(" ", "_")
        overrides = [f"recipe.init_from={args.init_from}", f"recipe.gram.teacher_checkpoint={args.init_from}",
                     f"training.output_dir={output}", f"training.max_steps={args.steps}"]
        if extra:  # without Gram: drop the gram section instead of pointing into it
            overrides = [o for o in overrides if not o.startswith("recipe.gram.")] + extra
        trainer = run_training(CONFIG, overrides)
        teachers[name] = output / "teacher_backbone"
        config = trainer.model.teacher["backbone"].config
    # the starting point, saved like the arms' teachers
    start = type(trainer.model.teacher["backbone"])(config)
    start.load_state_dict(submodule_state(start_state, "teacher.backbone"))
    start_path = args.out / "start_teacher_backbone"
    start.save_pretrained(start_path)
    Dinov3HfImageProcessor.for_model_config(config, size={"height": 28, "width": 28}).save_pretrained(start_path)
    gram_teacher = start.eval()

    n_eval = 200 if args.smoke else 1000
    test = load_fashion_mnist("test", limit=n_eval)
    bank = load_fashion_mnist("train", limit=2000 if args.smoke else 10000, offset=50000)
    probe = load_segmentation_probe()
    results = {}
    for name, path in {"start": start_path, **teachers}.items():
        model = AutoModel.from_pretrained(path).eval()
        metrics = dense_metrics(model, gram_teacher, list(test["image"]))
        processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 28, "width": 28})
        metrics["knn_accuracy"] = knn_eval_on_dataset(model, processor, bank, test)
        probe_args = ["--backbone", str(path)] + (["--smoke"] if args.smoke else [])
        metrics["texture_miou"] = float(probe.main(probe_args)["mean_iou"])
        results[name] = metrics
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "gram_anchoring_toy.png")
    print(f"\n{'model':14s} {'gram dist':>10s} {'cls-patch cos':>14s} {'texture mIoU':>13s} {'kNN acc':>8s}")
    for name, m in results.items():
        print(f"{name:14s} {m['gram_distance']:10.5f} {m['cls_patch_cosine']:14.4f} {m['texture_miou']:13.4f} "
              f"{m['knn_accuracy']:8.4f}")
    print(f"plot: {args.out / 'gram_anchoring_toy.png'}")
    return results


if __name__ == "__main__":
    main()
