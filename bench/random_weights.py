"""Release-size models with random weights, built on the meta device and materialised straight on the target device
(no fp32 copy of a 7B model in host memory first)."""

from __future__ import annotations

import torch
from torch import nn


def materialise_random(model_class: type[nn.Module], config, device: str, seed: int = 0) -> nn.Module:
    """`model_class(config)` on `device` in eval mode: matrices N(0, 0.02); vectors 1, except biases and BatchNorm
    running means 0; integer buffers 0; the ViT's fixed buffers (RoPE periods, key-bias mask) at their defaults."""
    with torch.device("meta"):
        model = model_class(config)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point():
                tensor.zero_()
            elif tensor.ndim == 1:
                tensor.fill_(0.0 if name.endswith(("bias", "running_mean")) else 1.0)
            else:
                tensor.normal_(0.0, 0.02, generator=gen)
        for module in model.modules():
            if hasattr(module, "default_periods"):
                module.periods.copy_(module.default_periods())
            if hasattr(module, "default_bias_mask"):
                module.bias_mask.copy_(module.default_bias_mask())
    return model.eval()
