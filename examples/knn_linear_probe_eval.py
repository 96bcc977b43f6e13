#!/usr/bin/env python
"""Evaluate frozen CLS features on Fashion-MNIST: weighted kNN (as the official eval/knn.py) and a linear probe.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package (dinov3_hf.data.load_fashion_mnist). The kNN
classifier is dinov3_hf.metrics.knn_eval_on_dataset (cosine similarity, k neighbours, votes weighted by
exp(similarity / 0.07)); the linear probe is a softmax regression on the same frozen, normed CLS features, trained
full-batch with L-BFGS and a small weight decay. `--baseline-random` evaluates a random-init backbone as well.

    python examples/knn_linear_probe_eval.py                    # shipped backbone, 5k train / 1k test, ~1 CPU minute
    python examples/knn_linear_probe_eval.py --num-train 20000 --num-test 5000 --baseline-random
    python examples/knn_linear_probe_eval.py --smoke
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoImageProcessor, AutoModel

from dinov3_hf import Dinov3HfImageProcessor, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.metrics import extract_cls_features, knn_eval_on_dataset, linear_probe_accuracy


def load_backbone(spec: str | None, seed: int = 0):
    """(backbone model, processor): `None` is the shipped default model, "random" a tiny random ViT with 4-pixel
    patches (for tests), anything else a checkpoint folder or Hub id."""
    if spec == "random":
        torch.manual_seed(seed)
        config = Dinov3HfViTConfig.from_preset(
            "vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=4, layerscale_init=0.1
        )
        return Dinov3HfViTModel(config).eval(), Dinov3HfImageProcessor.for_model_config(config)
    if spec is None:
        from dinov3_hf.pretrained_models import default_model_path

        try:
            spec = str(default_model_path())
        except FileNotFoundError as err:
            raise SystemExit(f"{err}\nPass --backbone PATH (or --backbone random for a tiny random ViT).") from err
    model = AutoModel.from_pretrained(spec).eval()
    try:
        processor = AutoImageProcessor.from_pretrained(spec)
    except (OSError, ValueError):
        processor = None
    if not isinstance(processor, Dinov3HfImageProcessor):
        processor = Dinov3HfImageProcessor.for_model_config(model.config)
    return model, processor


def evaluate(model, processor, bank, queries, k: int, size: int) -> dict[str, float]:
    # resize to the model's input size; Fashion-MNIST is 28 x 28 grayscale (the processor converts it to RGB)
    def preprocess(images, **kwargs):
        return processor(images, size={"height": size, "width": size}, **kwargs)

    knn = knn_eval_on_dataset(model, preprocess, bank, queries, k=k)

    def transform(images):
        return preprocess(list(images), return_tensors="pt")["pixel_values"]

    train_x = extract_cls_features(model, bank["image"], transform)
    test_x = extract_cls_features(model, queries["image"], transform)
    train_y, test_y = torch.tensor(bank["label"]), torch.tensor(queries["label"])
    probe = linear_probe_accuracy(train_x, train_y, test_x, test_y)
    return {"knn_accuracy": knn, "linear_probe_accuracy": probe}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="backbone checkpoint (default: the shipped model); 'random' = tiny random")
    parser.add_argument("--num-train", type=int, default=5000, help="training images (kNN bank, probe training)")
    parser.add_argument("--num-test", type=int, default=1000, help="test images (from the official test split)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=28, help="model input size (a multiple of the patch)")
    parser.add_argument("--baseline-random", action="store_true", help="also evaluate a random-init backbone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="200 train / 100 test images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_train, args.num_test, args.k = 200, 100, 10

    bank = load_fashion_mnist("train", limit=args.num_train)
    queries = load_fashion_mnist("test", limit=args.num_test)
    model, processor = load_backbone(args.backbone, args.seed)
    runs = {"pretrained": model}
    if args.baseline_random:
        torch.manual_seed(args.seed + 1)
        runs["random init"] = type(model)(model.config).eval()
    results = {}
    for name, weights in runs.items():
        result = evaluate(weights, processor, bank, queries, args.k, args.image_size)
        print(
            f"[{name} backbone] Fashion-MNIST ({bank.num_rows} train / {queries.num_rows} test): "
            f"{args.k}-NN accuracy {result['knn_accuracy']:.3f}, linear probe accuracy "
            f"{result['linear_probe_accuracy']:.3f}"
        )
        results[name] = result
    metrics = dict(results["pretrained"])
    if "random init" in results:
        metrics.update({f"random_init_{key}": value for key, value in results["random init"].items()})
    return metrics


if __name__ == "__main__":
    main()
