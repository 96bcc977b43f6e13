import pytest
import torch
from torch import nn

from dinov3_hf.models.convnext import Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from dinov3_hf.models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.ssl.param_groups import apply_schedules, build_param_groups, task_param_groups


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(64, 8), nn.GELU())
        self.last_layer = nn.Linear(8, 16, bias=False)


@pytest.fixture(scope="module")
def modules():
    config = Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=2, hidden_size=64, num_attention_heads=2)
    return {"backbone": Dinov3HfViTModel(config), "dino_head": Head(), "ibot_head": Head()}


def _lookup(groups, module, name):
    param = module.get_parameter(name)
    (group,) = [g for g in groups if any(p is param for p in g["params"])]
    return group["lr_multiplier"], group["wd_multiplier"], group["is_last_layer"]


def test_multipliers(modules):
    groups = build_param_groups(modules, layer_decay=0.5, patch_embed_lr_mult=0.2, head_wd_multiplier=0.3)
    vit, head = modules["backbone"], modules["dino_head"]
    # n_blocks = 2: mult = 0.5 ** (3 - layer_id)
    expected = {
        "cls_token": (0.125, 1.0),
        "storage_tokens": (0.125, 1.0),
        "mask_token": (0.125, 1.0),
        "patch_embed.proj.weight": (0.125 * 0.2, 1.0),
        "patch_embed.proj.bias": (0.125 * 0.2, 0.0),
        "blocks.0.attn.qkv.weight": (0.25, 1.0),
        "blocks.0.norm1.weight": (0.25, 0.0),
        "blocks.0.ls1.gamma": (0.25, 0.0),
        "blocks.1.mlp.fc1.weight": (0.5, 1.0),
        "blocks.1.mlp.fc1.bias": (0.5, 0.0),
        "norm.weight": (1.0, 0.0),
    }
    for name, (lr_mult, wd_mult) in expected.items():
        got = _lookup(groups, vit, name)
        assert got == (pytest.approx(lr_mult), wd_mult, False), name
    assert _lookup(groups, head, "mlp.0.weight") == (1.0, 0.3, False)
    assert _lookup(groups, head, "mlp.0.bias") == (1.0, 0.0, False)
    assert _lookup(groups, head, "last_layer.weight") == (1.0, 0.3, True)
    # every trainable parameter exactly once, groups keyed by (lr, wd, last_layer)
    all_params = [p for m in modules.values() for p in m.parameters()]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(all_params) and {id(p) for p in grouped} == {id(p) for p in all_params}
    keys = [(g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]) for g in groups]
    assert len(keys) == len(set(keys))
    # tokens (wd 1) + {patch_embed, block 0, block 1} × wd {0, 1} + (lr 1, wd 0: final norm and head biases)
    # + head weights (wd 0.3) + last layers
    assert len(groups) == 10


def test_head_lr_and_prototype_weight_decay_multipliers(modules):
    """The small-data switches: heads at `head_lr_multiplier` × the lr, prototypes at `last_layer_wd_multiplier` × the
    heads' weight decay; the backbone is untouched."""
    groups = build_param_groups(modules, layer_decay=1.0, patch_embed_lr_mult=1.0, head_wd_multiplier=0.5,
                                head_lr_multiplier=0.25, last_layer_wd_multiplier=0.0)
    head, vit = modules["ibot_head"], modules["backbone"]
    assert _lookup(groups, head, "mlp.0.weight") == (0.25, 0.5, False)
    assert _lookup(groups, head, "mlp.0.bias") == (0.25, 0.0, False)
    assert _lookup(groups, head, "last_layer.weight") == (0.25, 0.0, True)
    assert _lookup(groups, vit, "blocks.1.mlp.fc1.weight") == (1.0, 1.0, False)
    optimizer = torch.optim.AdamW(groups)
    apply_schedules(optimizer, lr=2e-3, wd=0.04, last_layer_lr=1e-3)
    (last,) = [g for g in optimizer.param_groups if g["is_last_layer"]]
    assert last["lr"] == pytest.approx(0.25 * 1e-3) and last["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="head_lr_multiplier"):
        build_param_groups(modules, head_lr_multiplier=-1.0)
    assert all(isinstance(g["name"], str) for g in groups)


def test_frozen_params_excluded_and_decay_one(modules):
    vit = modules["backbone"]
    vit.mask_token.requires_grad_(False)
    try:
        groups = build_param_groups({"backbone": vit}, layer_decay=1.0, patch_embed_lr_mult=1.0)
    finally:
        vit.mask_token.requires_grad_(True)
    grouped = [p for g in groups for p in g["params"]]
    assert all(p is not vit.mask_token for p in grouped)
    assert {(g["lr_multiplier"], g["wd_multiplier"]) for g in groups} == {(1.0, 1.0), (1.0, 0.0)}


def test_convnext_backbone_all_equal_layer_ids():
    config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8])
    convnext = Dinov3HfConvNextModel(config)
    groups = build_param_groups({"backbone": convnext}, layer_decay=0.5)
    assert {g["lr_multiplier"] for g in groups} == {1.0}
    assert _lookup(groups, convnext, "stages.0.0.gamma")[1] == 0.0
    assert _lookup(groups, convnext, "stages.0.0.pwconv1.weight")[1] == 1.0


def test_apply_schedules(modules):
    groups = build_param_groups(modules, layer_decay=0.5, head_wd_multiplier=0.3)
    optimizer = torch.optim.AdamW(groups, lr=123.0)
    apply_schedules(optimizer, lr=1e-3, wd=0.04, last_layer_lr=0.0)
    by_key = {(g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"]): g for g in optimizer.param_groups}
    assert by_key[(0.125, 1.0, False)]["lr"] == pytest.approx(1.25e-4)
    assert by_key[(0.125, 1.0, False)]["weight_decay"] == pytest.approx(0.04)
    assert by_key[(1.0, 0.0, False)]["weight_decay"] == 0.0
    assert by_key[(1.0, 0.3, False)]["weight_decay"] == pytest.approx(0.012)
    assert by_key[(1.0, 0.3, True)]["lr"] == 0.0  # last layer frozen
    apply_schedules(optimizer, lr=1e-3, wd=0.04, last_layer_lr=1e-3)
    assert by_key[(1.0, 0.3, True)]["lr"] == pytest.approx(1e-3)
    with pytest.raises(KeyError, match="lr_multiplier"):
        apply_schedules(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1), lr=1.0, wd=0.0, last_layer_lr=1.0)


def test_errors(modules):
    with pytest.raises(ValueError, match="layer_decay"):
        build_param_groups(modules, layer_decay=0.0)
    with pytest.raises(ValueError, match="No trainable"):
        build_param_groups({"dino_head": nn.Identity()})


def test_trainer_uses_the_recipe_multipliers(tmp_path):
    from test_pretraining import tiny_config

    from dinov3_hf.ssl.pretraining import build_trainer

    config = tiny_config(tmp_path)
    config["recipe"] = {**config["recipe"], "head_lr_multiplier": 0.5, "last_layer_wd_multiplier": 0.0, "layer_decay": 1.0}
    trainer = build_trainer(config)
    trainer.create_optimizer()
    model = trainer.model
    for param, lr_mult, wd_mult in ((model.student["dino_head"].last_layer.weight, 0.5, 0.0),
                                    (model.student["ibot_head"].mlp[0].weight, 0.5, 1.0),
                                    (model.student["backbone"].blocks[0].attn.qkv.weight, 1.0, 1.0)):
        (group,) = [g for g in trainer.optimizer.param_groups if any(p is param for p in g["params"])]
        assert (group["lr_multiplier"], group["wd_multiplier"]) == (pytest.approx(lr_mult), wd_mult)


def test_task_param_groups_on_a_detector_around_the_backbone(modules):
    """A task model nests the backbone (RT-DETR: model.backbone.model): the backbone's parameters get the layer-wise
    decay, every other parameter (shared ones once) lr multiplier 1; a model without the backbone is refused."""
    vit = modules["backbone"]
    shared = nn.Linear(64, 4)
    detector = nn.Module()
    detector.model = nn.Module()
    detector.model.backbone = nn.Module()
    detector.model.backbone.model = vit
    detector.model.encoder = nn.Linear(64, 64)
    detector.model.class_embed = shared
    detector.class_embed = shared  # the same head under two names, as RT-DETR's decoder and detector share theirs
    groups = task_param_groups(detector, vit, layer_decay=0.5)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(detector.parameters()))
    assert _lookup(groups, vit, "blocks.0.attn.qkv.weight") == (0.25, 1.0, False)  # 0.5 ** (3 - 1)
    assert _lookup(groups, vit, "blocks.1.mlp.fc1.weight") == (0.5, 1.0, False)
    assert _lookup(groups, vit, "cls_token") == (0.125, 1.0, False)
    assert _lookup(groups, detector, "model.encoder.weight") == (1.0, 1.0, False)
    assert _lookup(groups, detector, "class_embed.bias") == (1.0, 0.0, False)
    with pytest.raises(ValueError, match="not a submodule"):
        task_param_groups(detector.model.encoder, vit)
    detector.model.scale = nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="parameters of its own"):
        task_param_groups(detector, vit)
