"""kNN accuracy (k=20, cosine, weighted votes) and linear-probe accuracy of a backbone's CLS features (or another
`--readout`) on held-out Fashion-MNIST images, against the same architecture at random initialisation and against no
model at all (the raw pixels, and the pixels minus the bank's mean image).

    python training/eval_knn.py --model runs/fashion_mnist_cpu/teacher_backbone
    python training/eval_knn.py            # the package's shipped default model
    python training/eval_knn.py --json results.json
    python training/eval_knn.py --readout cls+patch_mean    # CLS and the mean patch token, each unit-normed

Bank (kNN neighbours, probe training set): the first --bank training images of the train split *after* the ones
pretraining used (offset 50,000); queries (test set): the first --queries images of the test split. Neither was seen
during pretraining.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.metrics import READOUTS, extract_features, knn_accuracy, linear_probe_accuracy, pixel_features
from dinov3_hf.processing import Dinov3HfImageProcessor


def evaluate_features(bank_x, bank_y, query_x, query_y, k: int) -> dict[str, float]:
    return {"knn": knn_accuracy(bank_x, bank_y, query_x, query_y, k=k),
            "linear_probe": linear_probe_accuracy(bank_x, bank_y, query_x, query_y)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="backbone folder (default: the shipped default model)")
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")
    parser.add_argument("--readout", choices=READOUTS, default="cls",
                        help="the feature of each image (default: the CLS token, the card's protocol)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from transformers import AutoModel

    from dinov3_hf.pretrained_models import default_model_path

    model = AutoModel.from_pretrained(args.model or default_model_path())
    torch.manual_seed(args.seed)
    random_model = type(model)(model.config)
    size = model.config.image_size
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": size, "width": size})
    bank = load_fashion_mnist("train", limit=args.bank, offset=50000)
    queries = load_fashion_mnist("test", limit=args.queries)
    bank_y, query_y = torch.tensor(bank["label"]), torch.tensor(queries["label"])

    def transform(images):
        return processor(list(images), return_tensors="pt")["pixel_values"]

    results = {}
    for name, backbone in (("trained", model), ("random init", random_model)):
        bank_x = extract_features(backbone, bank["image"], transform, args.readout, progress=True)
        query_x = extract_features(backbone, queries["image"], transform, args.readout, progress=True)
        results[name] = evaluate_features(bank_x, bank_y, query_x, query_y, args.k)
    bank_pixels, query_pixels = pixel_features(bank["image"]), pixel_features(queries["image"])
    results["raw pixels"] = evaluate_features(bank_pixels, bank_y, query_pixels, query_y, args.k)
    mean = bank_pixels.mean(0)
    results["mean-centred pixels"] = evaluate_features(bank_pixels - mean, bank_y, query_pixels - mean, query_y, args.k)

    print(f"Fashion-MNIST, {len(bank)} bank / {len(queries)} held-out queries, {args.readout} features:")
    print(f"{'features':<22}{f'kNN (k={args.k})':>12}{'linear probe':>14}")
    for name, result in results.items():
        print(f"{name:<22}{result['knn']:>12.4f}{result['linear_probe']:>14.4f}")
    gain = results["trained"]["knn"] - results["random init"]["knn"]
    print(f"kNN gain over random init: {100 * gain:+.1f} points; over raw pixels: "
          f"{100 * (results['trained']['knn'] - results['raw pixels']['knn']):+.1f} points")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bank": len(bank), "queries": len(queries), "k": args.k, "readout": args.readout, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
