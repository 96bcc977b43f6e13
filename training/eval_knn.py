"""kNN accuracy (k=20, cosine, weighted votes) of a backbone's CLS features on held-out Fashion-MNIST images,
against the same architecture at random initialisation.

    python training/eval_knn.py --model runs/fashion_mnist_cpu/teacher_backbone
    python training/eval_knn.py            # the package's shipped default model

Bank: the first --bank training images of the train split *after* the ones pretraining used (offset 50,000);
queries: the first --queries images of the test split. Neither was seen during pretraining.
"""

from __future__ import annotations

import argparse
import sys

import torch

from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.metrics import knn_eval_on_dataset
from dinov3_hf.processing import Dinov3HfImageProcessor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="backbone folder (default: the shipped default model)")
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")
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
    trained = knn_eval_on_dataset(model, processor, bank, queries, k=args.k, progress=True)
    baseline = knn_eval_on_dataset(random_model, processor, bank, queries, k=args.k, progress=True)
    print(f"kNN accuracy (k={args.k}, {len(bank)} bank / {len(queries)} held-out queries): "
          f"trained {trained:.4f} | random init {baseline:.4f} | gain {100 * (trained - baseline):+.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
