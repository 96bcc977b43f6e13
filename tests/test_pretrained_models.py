"""`load_task_backbone`: the shipped model's weights in a backbone view with a new feature pyramid, or a fresh init."""

from __future__ import annotations

import pytest
import torch

from dinov3_hf import Dinov3HfViTBackbone, Dinov3HfViTModel
from dinov3_hf.pretrained_models import default_model_path, load_task_backbone

PYRAMID = {"out_indices": [4], "pyramid_strides": [4, 8, 16], "pyramid_channels": 16}


def test_load_task_backbone_keeps_the_checkpoint_weights_and_adds_the_pyramid():
    shipped = Dinov3HfViTModel.from_pretrained(default_model_path()).state_dict()
    backbone, _ = load_task_backbone(None, **PYRAMID)
    assert isinstance(backbone, Dinov3HfViTBackbone) and backbone.channels == [16, 16, 16]
    state = backbone.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in shipped.items())
    assert {name for name in state if name not in shipped} == {n for n in state if n.startswith("pyramid.")} != set()
    maps = backbone(torch.zeros(1, 3, 32, 32)).feature_maps  # 4-pixel patches: an 8 x 8 grid
    assert [tuple(m.shape) for m in maps] == [(1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]

    random, _ = load_task_backbone(None, random_init=True, **PYRAMID)
    differs = [name for name, tensor in shipped.items() if not torch.equal(random.state_dict()[name], tensor)]
    assert "blocks.0.attn.qkv.weight" in differs and "patch_embed.proj.weight" in differs
    with pytest.raises(TypeError, match="not a field"):
        load_task_backbone(None, pyramid_levels=3)
