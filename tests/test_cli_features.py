"""`dinov3-hf features` on real photos: output tensors, metadata, PCA image size, errors, `python -m dinov3_hf`."""

import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from skimage import data
from transformers.modeling_outputs import BaseModelOutputWithPooling

from dinov3_hf import Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import CliError, _features_of, main
from dinov3_hf.models.convnext import Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from dinov3_hf.processing import Dinov3HfImageProcessor


DIM = 64


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = Dinov3HfViTConfig.from_preset("vits16", hidden_size=DIM, num_attention_heads=2, num_hidden_layers=2)
    model = Dinov3HfViTModel(config).eval()
    path = tmp_path_factory.mktemp("tiny_vit")
    model.save_pretrained(path)
    Dinov3HfImageProcessor.for_model_config(config, resample="bicubic").save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")  # 512 x 512
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")  # 600 wide x 400 high
    return folder / "astronaut.png", folder / "coffee.jpg"


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_features_on_photos(tiny_model_dir, photos, tmp_path, capsys):
    model_dir, model = tiny_model_dir
    astronaut, coffee = photos
    out = tmp_path / "out"
    argv = ["features", str(astronaut), str(coffee), "--model", str(model_dir), "--size", "224", "--out", str(out)]
    assert main(argv) == 0
    assert "RANDOM" not in capsys.readouterr().err

    for path, grid in ((astronaut, (14, 14)), (coffee, (14, 21))):
        tensors, metadata = read(out / f"{path.stem}.safetensors")
        assert tensors["cls"].shape == (DIM,)
        assert tensors["registers"].shape == (4, DIM)
        assert tensors["patch_tokens"].shape == (*grid, DIM)
        assert (int(metadata["grid_height"]), int(metadata["grid_width"])) == grid
        assert metadata["model"] == str(model_dir) and metadata["weights"] == "loaded"

        original = Image.open(path)
        pca = Image.open(out / f"{path.stem}_pca.png")
        assert pca.size == original.size and pca.mode == "RGB"
        assert np.asarray(pca).std() > 0

    # the saved features are the model's outputs on the saved processor's (bicubic) preprocessing
    processor = Dinov3HfImageProcessor.from_pretrained(model_dir)
    pixel_values = processor(Image.open(coffee), size={"shortest_edge": 224}, return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model(pixel_values=pixel_values)
    tensors, _ = read(out / "coffee.safetensors")
    torch.testing.assert_close(tensors["cls"], expected.pooler_output[0])
    torch.testing.assert_close(tensors["registers"], expected.register_tokens[0])
    torch.testing.assert_close(tensors["patch_tokens"], expected.patch_tokens[0].reshape(14, 21, DIM))


def test_default_model_is_the_shipped_checkpoint(tmp_path, capsys):
    from dinov3_hf.pretrained_models import default_model_path

    image = tmp_path / "small.png"
    Image.fromarray(data.coffee()).resize((60, 40)).save(image)
    assert main(["features", str(image), "--size", "32", "--out", str(tmp_path / "out")]) == 0
    tensors, metadata = read(tmp_path / "out" / "small.safetensors")
    shipped = Dinov3HfViTModel.from_pretrained(default_model_path())
    stride = shipped.config.patch_size
    assert tensors["patch_tokens"].shape == (32 // stride, 48 // stride, shipped.config.hidden_size)
    assert metadata["weights"] == "shipped"
    assert Image.open(tmp_path / "out" / "small_pca.png").size == (60, 40)


def test_errors(tiny_model_dir, photos, tmp_path, capsys):
    model_dir, _ = tiny_model_dir
    out = str(tmp_path / "out")

    assert main(["features", str(tmp_path / "missing.png"), "-m", str(model_dir), "-o", out]) == 1
    assert "image file(s) not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # checked before loading the model or writing anything

    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    assert main(["features", str(broken), "-m", str(model_dir), "-o", out]) == 1
    assert "cannot read image" in capsys.readouterr().err

    clash = tmp_path / "astronaut.jpg"
    Image.open(photos[0]).convert("RGB").save(clash)
    assert main(["features", str(photos[0]), str(clash), "-m", str(model_dir), "-o", out]) == 1
    assert "share the name stem(s) astronaut" in capsys.readouterr().err

    assert main(["features", str(photos[0]), "-m", str(tmp_path / "no_model"), "-o", out]) == 1
    assert "cannot load model" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["features", str(photos[0])])  # --out is required
    assert "--out" in capsys.readouterr().err


def test_max_tokens(tiny_model_dir, tmp_path, capsys):
    """A 300 x 3 strip of a photo is refused at the default size (78400 tokens) and goes through with --max-tokens."""
    model_dir, _ = tiny_model_dir
    strip = tmp_path / "strip.png"
    Image.fromarray(data.coffee()[200:203, :300]).save(strip)
    out = tmp_path / "out"
    assert main(["features", str(strip), "-m", str(model_dir), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "3x300 pixels" in err and "448x44800 input of 28x2800 = 78400 patch tokens" in err
    assert "max_tokens=16384" in err and "--max-tokens 78400" in err

    args = ["features", str(strip), "-m", str(model_dir), "-o", str(out), "--size", "32"]  # 32 x 3200: 400 tokens
    assert main([*args, "--max-tokens", "399"]) == 1
    assert "400 patch tokens" in capsys.readouterr().err
    assert not (out / "strip.safetensors").exists()
    assert main([*args, "--max-tokens", "400"]) == 0
    tensors, metadata = read(out / "strip.safetensors")
    assert tensors["patch_tokens"].shape == (2, 200, DIM)
    assert (metadata["input_height"], metadata["input_width"]) == ("32", "3200")
    assert main([*args, "--max-tokens", "0"]) == 1
    assert "--max-tokens must be a positive number" in capsys.readouterr().err


def test_convnext_output_fields():
    """ConvNeXt outputs have no registers: `registers` is [0, C] and the grid is the stride-32 map."""
    config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 48])
    model = Dinov3HfConvNextModel(config).eval()
    processor = Dinov3HfImageProcessor.for_model_config(config, size={"shortest_edge": 64})
    pixel_values = processor(data.coffee(), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 64, 96)
    with torch.no_grad():
        tensors, grid = _features_of(model(pixel_values=pixel_values), pixel_values.shape[-2:], 32)
    assert grid == (2, 3)
    assert tensors["cls"].shape == (48,) and tensors["registers"].shape == (0, 48)
    assert tensors["patch_tokens"].shape == (2, 3, 48)
    plain = BaseModelOutputWithPooling(last_hidden_state=torch.zeros(1, 2, 3), pooler_output=torch.zeros(1, 3))
    with pytest.raises(CliError, match="without patch_tokens"):
        _features_of(plain, (64, 96), 32)


def test_python_dash_m(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dinov3_hf", "features", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("dinov3_hf", run_name="__main__")
    assert exit_info.value.code == 0
    assert "patch_tokens" in capsys.readouterr().out
