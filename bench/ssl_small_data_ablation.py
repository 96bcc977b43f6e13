"""Which recipe switches make DINO + iBOT learn on small data? Each arm trains the small Fashion-MNIST config
(training/configs/fashion_mnist_small_cpu.yaml) with one switch changed, at the same budget and seed, then reports:

- kNN accuracy (k = 20, cosine, weighted votes) of the EMA teacher's CLS features: 10,000 held-out training images
  (offset 50,000) as the bank, the first 10,000 test images as queries (the shipped model card's protocol);
- the DINO and iBOT target entropies at the end of the run, as a fraction of ln K, and the final DINO loss / ln K;
- raw-pixel and mean-centred-pixel kNN on the same protocol, the baselines a user cares about.

    python bench/ssl_small_data_ablation.py                   # every arm (~5 min per arm on 2 cores)
    python bench/ssl_small_data_ablation.py --arms recipe official_head --steps 100

Results go to bench/results/ssl_small_data_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.metrics import knn_accuracy, knn_eval_on_dataset, pixel_features
from dinov3_hf.processing import Dinov3HfImageProcessor
from dinov3_hf.ssl.config import load_yaml_with_overrides
from dinov3_hf.ssl.pretraining import build_trainer

REPO = Path(__file__).parents[1]
CONFIG = REPO / "training" / "configs" / "fashion_mnist_small_cpu.yaml"
OFFICIAL_HEADS = [f"recipe.{head}.{key}={value}" for head in ("dino_head", "ibot_head")
                  for key, value in (("normalize_prototypes", "false"), ("prototypes", 1024))]

T004 = "recipe.teacher_temp={kind: constant, value: 0.04}"
NO_BLUR = "global_blur_probabilities: [0, 0], local_blur_probability: 0"
NO_SOLARIZE = "global_solarize_probabilities: [0, 0]"

# name -> (what changes against the recipe, overrides)
ARMS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("the small-data recipe (fashion_mnist_small_cpu.yaml)", []),
    "koleo_only": ("DINO and iBOT removed (KoLeo alone)", ["recipe.dino_loss_weight=0", "recipe.ibot_loss_weight=0"]),
    "no_koleo": ("KoLeo removed", ["recipe.koleo_loss_weight=0"]),
    "official_head": ("official head: plain prototypes, 1024 of them", OFFICIAL_HEADS),
    "plain_prototypes": ("prototypes not normalised (official)", [
        "recipe.dino_head.normalize_prototypes=false", "recipe.ibot_head.normalize_prototypes=false"]),
    "1024_prototypes": ("1024 prototypes", ["recipe.dino_head.prototypes=1024", "recipe.ibot_head.prototypes=1024"]),
    "64_prototypes": ("64 prototypes", ["recipe.dino_head.prototypes=64", "recipe.ibot_head.prototypes=64"]),
    "teacher_temp_x10": ("teacher temperature ×10 (0.4 → 0.7)", [
        "recipe.teacher_temp={kind: warmup_constant, warmup_iters: 50, start: 0.4, peak: 0.7}"]),
    "teacher_temp_0.04": ("teacher temperature constant 0.04", ["recipe.teacher_temp={kind: constant, value: 0.04}"]),
    "teacher_temp_0.025": ("teacher temperature constant 0.025", ["recipe.teacher_temp={kind: constant, value: 0.025}"]),
    "t0.04_head_lr_x0.25": ("teacher temperature 0.04, head lr ×0.25", [
        "recipe.teacher_temp={kind: constant, value: 0.04}", "recipe.head_lr_multiplier=0.25"]),
    "t0.04_64_prototypes": ("teacher temperature 0.04, 64 prototypes", [
        "recipe.teacher_temp={kind: constant, value: 0.04}", "recipe.dino_head.prototypes=64",
        "recipe.ibot_head.prototypes=64"]),
    "bottleneck_32": ("bottleneck 32", ["recipe.dino_head.bottleneck_dim=32", "recipe.ibot_head.bottleneck_dim=32"]),
    "no_last_layer_freeze": ("no last-layer freeze", ["recipe.freeze_last_layer_iters=0"]),
    "head_lr_x0.5": ("head lr ×0.5", ["recipe.head_lr_multiplier=0.5"]),
    "no_last_layer_wd": ("no weight decay on the prototypes", ["recipe.last_layer_wd_multiplier=0"]),
    "layerscale_1e-5": ("LayerScale init 1e-5 (official)", ["recipe.backbone.layerscale_init=1e-5"]),
    "local_scale_0.2_0.5": ("local crops 16 px, scale 0.2-0.5", ["recipe.local_size=16", "recipe.local_scale=[0.2, 0.5]"]),
    # crops and photometric distortions for 28-px images, at the teacher temperature that makes DINO learn
    "t0.04_no_blur": ("teacher temperature 0.04, no blur", [T004, f"recipe.distortions={{{NO_BLUR}}}"]),
    "t0.04_no_blur_solarize": ("teacher temperature 0.04, no blur, no solarize", [
        T004, f"recipe.distortions={{{NO_BLUR}, {NO_SOLARIZE}}}"]),
    "t0.04_no_photometric": ("teacher temperature 0.04, no colour jitter, grayscale, blur or solarize", [
        T004, f"recipe.distortions={{{NO_BLUR}, {NO_SOLARIZE}, color_jitter_probability: 0, grayscale_probability: 0}}"]),
    "t0.04_blur_both_globals": ("teacher temperature 0.04, global crop 1 blurred too (p = 0.5)", [
        T004, "recipe.distortions={global_blur_probabilities: [0.5, 0.9]}"]),
    "t0.04_global_scale_0.6": ("teacher temperature 0.04, global crops scale 0.6-1", [T004, "recipe.global_scale=[0.6, 1.0]"]),
    "t0.04_global_scale_0.2": ("teacher temperature 0.04, global crops scale 0.2-1", [T004, "recipe.global_scale=[0.2, 1.0]"]),
    "t0.04_6_local_crops": ("teacher temperature 0.04, 6 local crops", [T004, "recipe.n_local_crops=6"]),
}


def pixel_knn(bank, queries, centre: bool) -> float:
    """kNN on the raw 28×28 pixels (optionally minus the bank's mean image), same k, votes and metric."""
    train, test = pixel_features(bank["image"]), pixel_features(queries["image"])
    if centre:
        mean = train.mean(0)
        train, test = train - mean, test - mean
    return knn_accuracy(train, torch.tensor(bank["label"]), test, torch.tensor(queries["label"]), k=20)


def run_arm(name: str, overrides: list[str], steps: int, output: Path, bank, queries) -> dict:
    config = load_yaml_with_overrides(CONFIG, [
        f"training.output_dir={output / name}", f"training.max_steps={steps}", "training.disable_tqdm=true",
        f"training.logging_steps={max(1, min(25, steps // 4))}",
        f"recipe.lr.total_iters={steps}", f"recipe.momentum.total_iters={steps}", *overrides,
    ])
    trainer = build_trainer(config)
    start = time.time()
    trainer.train()
    elapsed = time.time() - start
    teacher = trainer.model.teacher["backbone"]
    size = teacher.config.image_size
    processor = Dinov3HfImageProcessor.for_model_config(teacher.config, size={"height": size, "width": size})
    logs = [entry for entry in trainer.state.log_history if "dino_entropy_fraction" in entry]
    last = logs[-1]
    ln_k = last["dino_entropy"] / last["dino_entropy_fraction"] if last["dino_entropy_fraction"] else math.nan
    return {
        "knn": knn_eval_on_dataset(teacher, processor, bank, queries),
        "dino_entropy_fraction": last["dino_entropy_fraction"],
        "ibot_entropy_fraction": last["ibot_entropy_fraction"],
        "dino_global_over_ln_k": last["dino_global"] / ln_k,
        "prototypes_used": last["dino_prototypes_used"],
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--output", type=Path, default=Path("runs/ssl_small_data_ablation"))
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "ssl_small_data_ablation")
    args = parser.parse_args(argv)

    bank = load_fashion_mnist("train", limit=args.bank, offset=50000)
    queries = load_fashion_mnist("test", limit=args.queries)
    results = {
        "baselines": {"raw_pixels": pixel_knn(bank, queries, centre=False),
                      "mean_centred_pixels": pixel_knn(bank, queries, centre=True)},
        "protocol": {"steps": args.steps, "bank": args.bank, "queries": args.queries, "config": CONFIG.name},
        "arms": {},
    }
    for name in args.arms:
        description, overrides = ARMS[name]
        results["arms"][name] = {"change": description, **run_arm(name, overrides, args.steps, args.output, bank, queries)}
        print(name, json.dumps(results["arms"][name]), flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.results}.json").write_text(json.dumps(results, indent=1))
    lines = [
        f"Small-data ablation: {args.steps} steps of {CONFIG.name} per arm, one seed; kNN on {args.bank} held-out "
        f"train / {args.queries} test images. Raw pixels: {results['baselines']['raw_pixels']:.4f}, mean-centred "
        f"pixels: {results['baselines']['mean_centred_pixels']:.4f}.",
        "",
        "| arm | change | kNN | DINO entropy / ln K | iBOT entropy / ln K | DINO loss / ln K |",
        "|---|---|---|---|---|---|",
    ]
    for name, arm in results["arms"].items():
        lines.append(f"| {name} | {arm['change']} | {arm['knn']:.4f} | {arm['dino_entropy_fraction']:.3f} | "
                     f"{arm['ibot_entropy_fraction']:.3f} | {arm['dino_global_over_ln_k']:.3f} |")
    Path(f"{args.results}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
