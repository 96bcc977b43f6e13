"""Loading our checkpoints: transformers' calling conventions, AutoBackbone offline, and clear errors for missing or
truncated files. The Hub is offline here (tests/conftest.py sets HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers import randomize_
from transformers import AutoBackbone, DINOv3ViTConfig, DINOv3ViTModel

from dinov3_hf import (
    Dinov3HfConvNextBackbone,
    Dinov3HfConvNextConfig,
    Dinov3HfConvNextModel,
    Dinov3HfViTBackbone,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)
from dinov3_hf.convert import CheckpointError, CheckpointNotFoundError, export_model, load_model
from dinov3_hf.models.heads import Dinov3HfForImageClassification


def tiny_vit() -> Dinov3HfViTModel:
    config = Dinov3HfViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               patch_size=8, num_register_tokens=2)
    return randomize_(Dinov3HfViTModel(config)).eval()


def tiny_convnext() -> Dinov3HfConvNextModel:
    config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])
    return randomize_(Dinov3HfConvNextModel(config)).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("make", [tiny_vit, tiny_convnext])
def test_from_pretrained_without_a_path_takes_config_and_state_dict(make):
    """transformers' `from_pretrained(None, config=..., state_dict=...)` builds the model from the given weights."""
    source = make()
    loaded = type(source).from_pretrained(None, config=source.config, state_dict=source.state_dict())
    assert type(loaded) is type(source) and not loaded.training
    assert_same_weights(loaded, source)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(pixels).last_hidden_state, source(pixels).last_hidden_state)


@pytest.mark.parametrize(("make", "backbone_class"), [(tiny_vit, Dinov3HfViTBackbone),
                                                      (tiny_convnext, Dinov3HfConvNextBackbone)])
@pytest.mark.parametrize("relative", [False, True])
def test_auto_backbone_loads_a_saved_folder_offline(make, backbone_class, relative, tmp_path, monkeypatch):
    """A relative folder name is a valid Hub repo id, which transformers would look up on the Hub first."""
    model = make()
    backbone = backbone_class(model.config)
    backbone.load_state_dict(model.state_dict())
    backbone.save_pretrained(tmp_path / "saved")
    monkeypatch.chdir(tmp_path)
    loaded = AutoBackbone.from_pretrained("saved" if relative else tmp_path / "saved", out_indices=[1, 2])
    assert type(loaded) is backbone_class and loaded.out_indices == [1, 2] and not loaded.training
    assert_same_weights(loaded, backbone)
    pixels = torch.randn(1, 3, 32, 32)
    reference = backbone_class.from_pretrained(tmp_path / "saved", out_indices=[1, 2])
    with torch.no_grad():
        for ours, ref in zip(loaded(pixels).feature_maps, reference(pixels).feature_maps, strict=True):
            assert torch.equal(ours, ref)


@pytest.mark.parametrize("missing", ["./does/not/exist", "does/not/exist", "../nowhere", "~/nowhere", "ABSOLUTE"])
def test_a_missing_path_is_reported_as_missing(missing, tmp_path):
    missing = str(tmp_path / "gone") if missing == "ABSOLUTE" else missing
    named = re.escape(repr(missing))
    with pytest.raises(FileNotFoundError, match=f"{named} does not exist"):
        Dinov3HfViTModel.from_pretrained(missing)
    with pytest.raises(CheckpointError, match=f"{named} does not exist"):  # as other checkpoint errors, too
        load_model(missing)
    with pytest.raises(CheckpointNotFoundError, match=f"{named} does not exist"):
        Dinov3HfForImageClassification.from_backbone(missing, num_labels=2)


def test_a_missing_path_object_is_missing_even_if_it_could_be_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'model' does not exist"):
        Dinov3HfViTModel.from_pretrained(tmp_path.__class__("model"))
    # the same name as a string may be a Hub repo: it is looked up there (offline here), not reported missing
    with pytest.raises(OSError) as error:
        Dinov3HfViTModel.from_pretrained("model")
    assert not isinstance(error.value, FileNotFoundError)


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_safetensors_file_is_named(tmp_path):
    export_model(tiny_vit(), tmp_path / "ours")
    transformers_config = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, num_register_tokens=2)
    DINOv3ViTModel(transformers_config).save_pretrained(tmp_path / "theirs")
    for folder in (tmp_path / "ours", tmp_path / "theirs"):
        _truncate(folder / "model.safetensors")
        named = f"{re.escape(str(folder / 'model.safetensors'))}.*truncated or corrupt"
        with pytest.raises(CheckpointError, match=named):
            Dinov3HfViTModel.from_pretrained(folder)
        with pytest.raises(CheckpointError, match=named):
            load_model(folder)


def test_a_truncated_shard_is_named(tmp_path):
    model = tiny_vit()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) > 2
    _truncate(tmp_path / shards[1])
    named = re.escape(str(tmp_path / shards[1]))
    with pytest.raises(CheckpointError, match=named):
        Dinov3HfViTModel.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=named):
        load_model(tmp_path)
