"""k-nearest-neighbour classification of frozen features, as in the official `eval/knn.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy of a cosine-similarity kNN classifier with weighted votes.

    Each test sample takes its k most similar training samples (cosine similarity s) and votes for their labels with
    weights exp(s / temperature); the class with the largest total weight wins.
    """
    if train_features.shape[0] < k:
        raise ValueError(f"k={k} is larger than the {train_features.shape[0]} training samples.")
    train = F.normalize(train_features.float(), dim=-1)
    test = F.normalize(test_features.float(), dim=-1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test), 1024):
        sims, idx = (test[start : start + 1024] @ train.T).topk(k, dim=-1)
        votes = torch.zeros(len(sims), n_classes).scatter_add_(1, train_labels[idx], (sims / temperature).exp())
        correct += int((votes.argmax(-1) == test_labels[start : start + 1024]).sum())
    return correct / len(test)


def pixel_features(images: Sequence) -> torch.Tensor:
    """The raw pixels of each image (PIL or array, all of one size) as a flat float vector [N, H·W·C]: the no-model
    baseline of a kNN or linear-probe evaluation."""
    import numpy as np

    return torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32).reshape(-1) for image in images]))


READOUTS = ("cls", "patch_mean", "cls+patch_mean")


def _readout(output, readout: str) -> torch.Tensor:
    if readout == "cls":
        return output.pooler_output.float()
    if getattr(output, "patch_tokens", None) is None:
        raise ValueError(f"readout={readout!r} needs a model whose output has patch_tokens (a dinov3_hf backbone); "
                         f"{type(output).__name__} has none. Use readout='cls'.")
    patch_mean = output.patch_tokens.float().mean(dim=1)
    if readout == "patch_mean":
        return patch_mean
    return torch.cat([F.normalize(output.pooler_output.float(), dim=-1), F.normalize(patch_mean, dim=-1)], dim=-1)


@torch.inference_mode()
def extract_features(
    model: torch.nn.Module,
    images: Sequence,
    transform: Callable[[Sequence], torch.Tensor],
    readout: str = "cls",
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """One feature vector per image; `transform` turns a list of images into a batch tensor. `readout`:
    "cls" the normed CLS token (`pooler_output`); "patch_mean" the mean of the normed patch tokens;
    "cls+patch_mean" [CLS / |CLS|, mean / |mean|], so that both halves weigh the same in a cosine."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}.")
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress):
        pixel_values = transform(images[start : start + batch_size])
        chunks.append(_readout(model(pixel_values), readout))
    return torch.cat(chunks)


def extract_cls_features(
    model: torch.nn.Module,
    images: Sequence,
    transform: Callable[[Sequence], torch.Tensor],
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """The normed CLS token (`pooler_output`) of each image: `extract_features` with readout "cls"."""
    return extract_features(model, images, transform, "cls", batch_size, progress)


def knn_eval_on_dataset(model: torch.nn.Module, processor, bank, queries, k: int = 20, image_key: str = "image",
                        label_key: str = "label", progress: bool = False) -> float:
    """kNN accuracy of `model`'s CLS features: `bank` and `queries` are datasets with image and label columns."""

    def transform(images):
        return processor(list(images), return_tensors="pt")["pixel_values"]

    bank_features = extract_cls_features(model, bank[image_key], transform, progress=progress)
    query_features = extract_cls_features(model, queries[image_key], transform, progress=progress)
    return knn_accuracy(bank_features, torch.tensor(bank[label_key]), query_features, torch.tensor(queries[label_key]), k=k)
