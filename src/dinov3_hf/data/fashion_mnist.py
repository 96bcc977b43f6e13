"""Fashion-MNIST (60k train / 10k test, 28x28 grayscale, 10 classes) from Debian's `dataset-fashion-mnist` package."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {"train": "train", "test": "t10k"}


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_fashion_mnist(split: str = "train", limit: int | None = None, offset: int = 0):
    """A `datasets.Dataset` with columns `image` (PIL, mode L) and `label` (ClassLabel), rows offset .. offset+limit."""
    import datasets

    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 't10k'-style 'test', got {split!r}.")
    prefix = FASHION_MNIST_DIR / _FILES[split]
    images_file, labels_file = Path(f"{prefix}-images-idx3-ubyte.gz"), Path(f"{prefix}-labels-idx1-ubyte.gz")
    if not images_file.is_file():
        raise FileNotFoundError(
            f"{images_file} not found. Install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
            "(or point FASHION_MNIST_DIR at a folder with the IDX .gz files)."
        )
    images = _read_idx(images_file, 16).reshape(-1, 28, 28)
    labels = _read_idx(labels_file, 8).astype(np.int64)
    stop = len(images) if limit is None else min(len(images), offset + limit)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))}
    )
    return datasets.Dataset.from_dict(
        {"image": list(images[offset:stop]), "label": labels[offset:stop].tolist()}, features=features
    )
