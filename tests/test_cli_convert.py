"""`dinov3-hf convert` between all formats, and `features` on a converted official checkpoint."""

from __future__ import annotations

import json

import torch
from helpers import randomize_
from PIL import Image
from safetensors import safe_open
from skimage import data
from transformers import AutoImageProcessor, AutoModel, DINOv3ViTModel

from dinov3_hf import Dinov3HfImageProcessor, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import main


def official_checkpoint(path) -> Dinov3HfViTModel:
    config = Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=2)
    model = randomize_(Dinov3HfViTModel(config), std=0.05).eval()
    torch.save(model.state_dict(), path)
    return model


def test_convert_all_directions(tmp_path, capsys):
    model = official_checkpoint(tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "ours"), "--arch", "vits16"]) == 0
    assert "Converting" in capsys.readouterr().err  # progress bar
    ours = AutoModel.from_pretrained(tmp_path / "ours")
    assert isinstance(ours, Dinov3HfViTModel)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path / "ours"), Dinov3HfImageProcessor)

    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["DINOv3ViTModel"]
    theirs = DINOv3ViTModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.inference_mode():
        torch.testing.assert_close(theirs(x).pooler_output, model(x).pooler_output, atol=1e-5, rtol=0)

    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back.pth"), "--to", "official"]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    original = model.state_dict()
    assert sorted(back) == sorted(original)
    for key, value in back.items():
        if key.endswith("qkv.bias"):  # the masked key bias is not stored by transformers: it comes back as zeros
            dim = value.shape[0] // 3
            assert torch.equal(value[:dim], original[key][:dim]) and torch.equal(value[2 * dim :], original[key][2 * dim :])
            assert torch.all(value[dim : 2 * dim] == 0)
        else:
            assert torch.equal(value, original[key]), key


def test_convert_errors_are_reported(tmp_path, capsys):
    official_checkpoint(tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "out")]) == 1
    assert "pass the preset with --arch" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "out"), "--arch", "vitb16"]) == 1
    assert "does not match preset 'vitb16'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_features_from_official_checkpoint(tmp_path):
    model = official_checkpoint(tmp_path / "official.pth")
    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.png")  # 451 x 300
    code = main(["features", str(tmp_path / "chelsea.png"), "--model", str(tmp_path / "official.pth"), "--arch", "vits16",
                 "--size", "224", "--out", str(tmp_path / "feats")])
    assert code == 0
    with safe_open(str(tmp_path / "feats" / "chelsea.safetensors"), "pt") as f:
        patches = f.get_tensor("patch_tokens")
        cls = f.get_tensor("cls")
    assert patches.shape == (14, 21, 384)  # 224 x 336 input
    processor = Dinov3HfImageProcessor.for_model_config(model.config)
    pixels = processor(Image.open(tmp_path / "chelsea.png"), size={"shortest_edge": 224}, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        torch.testing.assert_close(cls, model(pixels).pooler_output[0], atol=1e-5, rtol=0)
    assert Image.open(tmp_path / "feats" / "chelsea_pca.png").size == (451, 300)
