"""`dinov3-hf export`: the README's ONNX snippet runs as written on the shipped default model and matches PyTorch;
dino.txt models give both towers; user errors are refused before any work."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import randomize_

from dinov3_hf import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfViTConfig, Dinov3HfViTModel, cli
from dinov3_hf.cli import main
from dinov3_hf.pretrained_models import DEFAULT_MODEL, default_model_path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks(section: str) -> dict[str, str]:
    """The fenced code blocks of a README section, by language (one per language)."""
    text = README.read_text()
    body = text[text.index(f"## {section}\n") :]
    body = body[: body.index("\n## ", 1)]
    return {lang: code for lang, code in re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)}


def test_readme_onnx_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = readme_blocks("Deploy: ONNX")
    monkeypatch.chdir(tmp_path)
    commands = [line.split("#")[0].strip() for line in blocks["bash"].splitlines()]
    commands = [c for c in commands if c and not c.startswith("pip install")]  # the extra is installed for the tests
    assert commands == [f"dinov3-hf export {DEFAULT_MODEL} model_onnx/"]
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0
    namespace: dict = {}
    exec(compile(blocks["python"], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("(1, 128) (1, 3136, 128)")

    # onnxruntime on the real image agrees with the shipped model in PyTorch
    model = Dinov3HfViTModel.from_pretrained(default_model_path()).eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(namespace["inputs"]["pixel_values"]))
    np.testing.assert_allclose(namespace["cls"], expected.pooler_output.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(namespace["patches"], expected.patch_tokens.numpy(), atol=1e-4, rtol=0)


def test_parser_names_the_shipped_model():
    assert cli.SHIPPED_MODEL == DEFAULT_MODEL


def test_dinotxt_model_gives_both_towers(tmp_path, capsys):
    config = Dinov3HfDinoTxtConfig(
        backbone_config=Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2,
                                                      num_hidden_layers=1),
        vision_head_layers=1, text_hidden_size=16, text_num_hidden_layers=1, text_num_attention_heads=2,
    )
    model = randomize_(Dinov3HfDinoTxtModel(config)).eval()
    model.save_pretrained(tmp_path / "dinotxt")
    assert main(["export", str(tmp_path / "dinotxt"), str(tmp_path / "onnx")]) == 0
    assert "no dino.txt processor" in capsys.readouterr().err
    text = ort.InferenceSession(str(tmp_path / "onnx" / "text_model.onnx"), providers=["CPUExecutionProvider"])
    image = ort.InferenceSession(str(tmp_path / "onnx" / "image_model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in text.get_inputs()] == ["input_ids"]
    assert [o.name for o in text.get_outputs()] == ["text_embeds"]
    assert [o.name for o in image.get_outputs()] == ["image_embeds", "patch_tokens"]
    ids = torch.tensor([[320, 1000, 49407, 0, 0], [5, 6, 7, 8, 49407]])
    pixels = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_text = model.get_text_features(ids).numpy()
        expected_image = model.get_image_features(pixels).numpy()
    np.testing.assert_allclose(text.run(None, {"input_ids": ids.numpy()})[0], expected_text, atol=1e-4, rtol=0)
    np.testing.assert_allclose(image.run(None, {"pixel_values": pixels.numpy()})[0], expected_image, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--opset", "0"], "--opset must be a positive"),
        (["--format", "tflite"], None),  # argparse refuses it (exit status 2)
    ],
)
def test_bad_options_are_refused(tmp_path, capsys, args, message):
    argv = ["export", DEFAULT_MODEL, str(tmp_path / "out"), *args]
    if message is None:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
        return
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unusable_destination_and_missing_model_are_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["export", DEFAULT_MODEL, str(tmp_path / "file")]) == 1
    assert f"DST {tmp_path / 'file'} is an existing file, but must be a folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "cannot load model" in capsys.readouterr().err
