"""Linear probe on frozen features: a softmax regression fitted full-batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .functional import accuracy


def fit_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    n_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The logits function x -> W x̃ + b of a softmax regression on standardised features
    x̃ = (x − mean_train) / std_train, fitted with L-BFGS on `cross_entropy + weight_decay·‖W‖²` over the whole
    training set (seeded: the init is fixed)."""
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    train_x = (train_features.float() - mean) / std
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(train_x.shape[1], n_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train_x), train_labels) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    linear.requires_grad_(False)
    return lambda features: linear((features.float() - mean) / std)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Test accuracy of [`fit_linear_probe`] trained on the training features."""
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    logits = fit_linear_probe(train_features, train_labels, n_classes, weight_decay, max_iter)
    with torch.no_grad():
        return accuracy(logits(test_features), test_labels)
