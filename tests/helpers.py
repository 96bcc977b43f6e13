"""Shared test utilities: random weights that exercise every parameter."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Fill every parameter with random values: norms near 1, LayerScale near 0.5, the rest N(0, std).

    Stock initialisations leave LayerScale at 1e-5 and biases at 0, which would hide wiring mistakes.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype)
        if "norm" in name and name.endswith("weight"):
            param.copy_(1 + 0.1 * noise)
        elif name.endswith("gamma") or name.endswith("lambda1"):
            param.copy_(0.5 + 0.1 * noise)
        else:
            param.copy_(std * noise)
    return model
