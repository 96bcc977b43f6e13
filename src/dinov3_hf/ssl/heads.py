"""DINO / iBOT projection head (official `dinov3/layers/dino_head.py`).

    z = last_layer( normalize( mlp(x) ) )

``mlp``: Linear(in, hidden) → GELU → [Linear(hidden, hidden) → GELU] × (n_layers − 2) → Linear(hidden,
bottleneck) (n_layers = 1: Linear(in, bottleneck)), all with bias and no normalisation layers; ``normalize``
is L2 over the last dimension; ``last_layer`` is a bias-free Linear(bottleneck, out_dim) (plain, no weight
norm, as in DINOv3) giving the prototype scores. With ``normalize_prototypes`` its rows are L2-normalised in the
forward (DINO v1's weight-normalised last layer with g = 1): the scores are then cosines in [-1, 1]. Parameter names (``mlp.*``, ``last_layer.weight``) follow Meta's checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DINOHead(nn.Module):
    """MLP → L2-normalised bottleneck → prototype scores [..., out_dim]."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        last_layer_init_std: float = 0.02,
        normalize_prototypes: bool = False,
    ) -> None:
        super().__init__()
        self.last_layer_init_std = last_layer_init_std
        self.normalize_prototypes = normalize_prototypes
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if n_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(n_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal Linear weights (std 0.02; `last_layer_init_std` for the last layer), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = self.last_layer_init_std if module is self.last_layer else 0.02
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, no_last_layer: bool = False, only_last_layer: bool = False) -> Tensor:
        """Prototype scores; ``no_last_layer``: the normalised bottleneck; ``only_last_layer``: x is that bottleneck."""
        if no_last_layer and only_last_layer:
            raise ValueError("no_last_layer and only_last_layer are mutually exclusive")
        if not only_last_layer:
            x = self.mlp(x)
            x = F.normalize(x, p=2, dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        if not no_last_layer:
            weight = self.last_layer.weight
            x = F.linear(x, F.normalize(weight, dim=-1) if self.normalize_prototypes else weight)
        return x
