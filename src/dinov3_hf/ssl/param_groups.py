"""AdamW parameter groups with layer-wise lr decay and per-step lr / weight-decay updates
(official `dinov3/train/param_groups.py`).

Per parameter of `modules["backbone"]` (a ViT with `blocks`):
    lr_multiplier = layer_decay ** (n_blocks + 1 - layer_id)      (× patch_embed_lr_mult for `patch_embed.*`)
    layer_id      = 0 for patch_embed / cls_token / storage_tokens / mask_token, i + 1 for `blocks.i.*`,
                    n_blocks + 1 (multiplier 1) for everything else (final norms).
A backbone without `blocks` (the ConvNeXt: `downsample_layers`, `stages`, `norm`) gets lr multiplier 1 everywhere,
whatever `layer_decay`: the official layer-id rule never matches ConvNeXt names, and every official ConvNeXt recipe
uses layer_decay 1.0. Every other module is a head: lr multiplier `head_lr_multiplier`, weight-decay multiplier
`head_wd_multiplier` (× `last_layer_wd_multiplier` for its prototypes). Weight-decay multiplier 0 for names ending in
`bias` or containing `norm` or `gamma` (tokens and the patch-embed weight are decayed). `is_last_layer` marks names
containing `last_layer` (they follow `last_layer_lr`). The official values are head_lr_multiplier =
head_wd_multiplier = last_layer_wd_multiplier = 1.
`task_param_groups` applies the same rule to a task model (a detector or segmenter around the backbone).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_FIRST_LAYER_NAMES = ("patch_embed", "cls_token", "storage_tokens", "mask_token")


def _vit_layer_id(name: str, n_blocks: int) -> int:
    """0 for the embedding parameters, i + 1 for `blocks.i.*`, n_blocks + 1 otherwise (torch.compile's
    `_orig_mod.` is ignored)."""
    parts = name.replace("_orig_mod.", "").split(".")
    if parts[0] in _FIRST_LAYER_NAMES:
        return 0
    if parts[0] == "blocks":
        return int(parts[1]) + 1
    return n_blocks + 1


def build_param_groups(
    modules: dict[str, nn.Module],
    layer_decay: float = 1.0,
    patch_embed_lr_mult: float = 0.2,
    head_wd_multiplier: float = 1.0,
    head_lr_multiplier: float = 1.0,
    last_layer_wd_multiplier: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer groups over the trainable parameters of `modules` ({"backbone": vit, "dino_head": ..., ...}).

    Parameters sharing (lr_multiplier, wd_multiplier, is_last_layer) form one group with keys "params",
    "lr_multiplier", "wd_multiplier", "is_last_layer" and "name" (e.g. "lr0.81_wd1" or "lr1_wd1_last_layer").
    Set each group's lr / weight decay with `apply_schedules` before the first step.
    """
    if layer_decay <= 0:
        raise ValueError(f"layer_decay must be > 0, got {layer_decay}.")
    multipliers = {"patch_embed_lr_mult": patch_embed_lr_mult, "head_wd_multiplier": head_wd_multiplier,
                   "head_lr_multiplier": head_lr_multiplier, "last_layer_wd_multiplier": last_layer_wd_multiplier}
    negative = {name: value for name, value in multipliers.items() if value < 0}
    if negative:
        raise ValueError(f"Multipliers must be >= 0, got {negative}.")
    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    for module_name, module in modules.items():
        is_backbone = module_name == "backbone"
        blocks = getattr(module, "blocks", None) if is_backbone else None
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            lr_mult, wd_mult = 1.0, 1.0
            if is_backbone:
                if blocks is not None:
                    lr_mult = layer_decay ** (len(blocks) + 1 - _vit_layer_id(name, len(blocks)))
                if "patch_embed" in name:
                    lr_mult *= patch_embed_lr_mult
            else:
                lr_mult, wd_mult = head_lr_multiplier, head_wd_multiplier
            is_last_layer = "last_layer" in name
            if is_last_layer:
                wd_mult *= last_layer_wd_multiplier
            if name.endswith("bias") or "norm" in name or "gamma" in name:
                wd_mult = 0.0
            key = (lr_mult, wd_mult, is_last_layer)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "lr_multiplier": lr_mult,
                    "wd_multiplier": wd_mult,
                    "is_last_layer": is_last_layer,
                    "name": f"lr{lr_mult:.6g}_wd{wd_mult:g}" + ("_last_layer" if is_last_layer else ""),
                }
            groups[key]["params"].append(param)
    if not groups:
        raise ValueError(f"No trainable parameters in modules {list(modules)}.")
    return list(groups.values())


def _modules_outside(model: nn.Module, inner: nn.Module) -> nn.ModuleList:
    """The largest submodules of `model` that do not contain `inner`: together they hold every parameter of `model`
    outside `inner` (shared ones once)."""
    outside = nn.ModuleList()
    for name, child in model.named_children():
        if child is inner:
            continue
        if any(module is inner for module in child.modules()):
            if any(True for _ in child.parameters(recurse=False)):
                raise ValueError(f"{name} holds both {type(inner).__name__} and parameters of its own: "
                                 "split them into submodules to give the backbone its own learning rates.")
            outside.extend(_modules_outside(child, inner))
        else:
            outside.append(child)
    return outside


def task_param_groups(
    model: nn.Module, backbone: nn.Module, layer_decay: float = 1.0, patch_embed_lr_mult: float = 1.0
) -> list[dict[str, Any]]:
    """`build_param_groups` for a task model (detector, segmenter) built around one of our backbones: `backbone` (a
    submodule of `model`) gets the layer-wise lr decay, every other trainable parameter of `model` is head (lr
    multiplier 1)."""
    if not any(module is backbone for module in model.modules()):
        raise ValueError(f"The backbone ({type(backbone).__name__}) is not a submodule of {type(model).__name__}.")
    return build_param_groups({"backbone": backbone, "head": _modules_outside(model, backbone)},
                              layer_decay=layer_decay, patch_embed_lr_mult=patch_embed_lr_mult)


def apply_schedules(optimizer: torch.optim.Optimizer, lr: float, wd: float, last_layer_lr: float) -> None:
    """Per group: lr = (last_layer_lr if is_last_layer else lr) × lr_multiplier, weight_decay = wd × wd_multiplier."""
    for group in optimizer.param_groups:
        if "lr_multiplier" not in group:
            raise KeyError(f"Optimizer group {group.get('name')!r} has no 'lr_multiplier': use build_param_groups.")
        base_lr = last_layer_lr if group["is_last_layer"] else lr
        group["lr"] = base_lr * group["lr_multiplier"]
        group["weight_decay"] = wd * group["wd_multiplier"]
