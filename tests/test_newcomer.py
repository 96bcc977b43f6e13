"""What a newcomer trying every command ran into: `--help` / `--version` without loading torch, task models whose
weights are missing, unwritable outputs, 16-bit and float photos in overlays, models of the wrong kind, transformers'
DPT on a preset ViT config, and the task models exported from the package."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data
from transformers import AutoModelForSemanticSegmentation, DPTForDepthEstimation, pipeline

import dinov3_hf
from dinov3_hf import cli
from dinov3_hf.cli import main
from dinov3_hf.models import heads
from dinov3_hf.viz import segmentation_overlay

LABELS = {0: "cup", 1: "saucer", 2: "table"}
HEAVY_MODULES = ("torch", "transformers", "numpy", "PIL", "safetensors")


def tiny_vit(**overrides) -> dinov3_hf.Dinov3HfViTConfig:
    fields = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=8) | overrides
    return dinov3_hf.Dinov3HfViTConfig.from_preset("vits16", **fields)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny models: a segmentation model (several classes win), a depth model and a bare backbone."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    seg = heads.Dinov3HfForSemanticSegmentation(
        heads.Dinov3HfSemanticSegmentationConfig(backbone_config=tiny_vit(), id2label=LABELS)
    )
    with torch.no_grad():
        seg.classifier.weight.normal_(0, 1.0)
    seg.save_pretrained(root / "seg")
    depth = heads.Dinov3HfForDepthEstimation(heads.Dinov3HfDepthEstimationConfig(backbone_config=tiny_vit(), n_bins=8))
    depth.save_pretrained(root / "depth")
    dinov3_hf.Dinov3HfViTModel(tiny_vit()).save_pretrained(root / "backbone")
    return {name: root / name for name in ("seg", "depth", "backbone")}


@pytest.fixture(scope="module")
def gray_photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's camera photo (96 x 64) as 8-bit (L), 16-bit (I;16, x 257) and float (F, / 255) files."""
    root = tmp_path_factory.mktemp("photos")
    pixels = np.asarray(Image.fromarray(data.camera()).resize((96, 64)))
    images = {
        "L": Image.fromarray(pixels),
        "I;16": Image.fromarray(pixels.astype(np.uint16) * 257),
        "F": Image.fromarray(pixels.astype(np.float32) / 255),
    }
    paths = {"L": root / "cam8.png", "I;16": root / "cam16.png", "F": root / "camf.tiff"}
    for mode, image in images.items():
        assert image.mode == mode
        image.save(paths[mode])
        assert Image.open(paths[mode]).mode == mode
    return paths


def rewrite_weights(src: Path, dst: Path, drop: str | None = None, add: str | None = None) -> str:
    """Copy the model folder `src` to `dst` without the tensors whose names start with `drop`, plus a tensor `add`."""
    shutil.copytree(src, dst)
    weights = load_file(src / "model.safetensors")
    kept = {k: v for k, v in weights.items() if drop is None or not k.startswith(drop)}
    if add is not None:
        kept[add] = torch.zeros(3)
    save_file(kept, dst / "model.safetensors", metadata={"format": "pt"})
    return str(dst)


# -- 1. task models with missing or unexpected weights --------------------------------------------------------------


def test_task_models_refuse_checkpoints_with_missing_or_unexpected_weights(tmp_path, models, gray_photos, capsys):
    no_head = rewrite_weights(models["seg"], tmp_path / "no_head", drop="classifier.")
    extra = rewrite_weights(models["seg"], tmp_path / "extra", add="decoder.weight")
    with pytest.raises(ValueError, match=r"missing classifier\.bias, classifier\.weight\."):
        AutoModelForSemanticSegmentation.from_pretrained(no_head)
    with pytest.raises(ValueError, match=r"unexpected decoder\.weight"):
        heads.Dinov3HfForSemanticSegmentation.from_pretrained(extra)
    with pytest.raises(ValueError, match=r"missing classifier\.bias"):  # the pipeline loads through the Auto class
        pipeline("image-segmentation", model=no_head)
    photo = str(gray_photos["L"])
    assert main(["segment", photo, "-m", no_head, "-o", str(tmp_path / "out")]) == 1
    assert "missing classifier.bias, classifier.weight" in capsys.readouterr().err
    depth_no_head = rewrite_weights(models["depth"], tmp_path / "depth_no_head", drop="conv_depth.")
    assert main(["depth", photo, "-m", depth_no_head, "-o", str(tmp_path / "out")]) == 1
    assert "missing conv_depth.bias, conv_depth.weight" in capsys.readouterr().err
    # complete checkpoints load as before, with and without the loading info
    model, info = AutoModelForSemanticSegmentation.from_pretrained(models["seg"], output_loading_info=True)
    assert isinstance(model, heads.Dinov3HfForSemanticSegmentation) and not info["missing_keys"]
    assert isinstance(AutoModelForSemanticSegmentation.from_pretrained(models["seg"]), type(model))


# -- 2. outputs that are files or not writable ------------------------------------------------------------------------


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, gray_photos, capsys):
    photo = str(gray_photos["L"])
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    commands = {
        "features": ["features", photo, "-o"],
        "depth": ["depth", photo, "-m", "never-loaded", "-o"],
        "segment": ["segment", photo, "-m", "never-loaded", "-o"],
        "segment-text": ["segment-text", photo, "-l", "cat", "-m", "never-loaded", "-o"],
        "convert": ["convert", "never-loaded"],
    }
    for command, args in commands.items():
        for out, message in (
            (a_file, f"{a_file} is an existing file"),
            (a_file / "sub", f"{a_file / 'sub'} lies under the file {a_file}"),
            (Path("/sys/dinov3_hf_out"), "cannot write to"),  # sysfs: no new files, not even for root
        ):
            assert main([*args, str(out)]) == 1, (command, out)
            err = capsys.readouterr().err
            assert f"dinov3-hf {command}: error:" in err and message in err and str(out) in err, err
    assert a_file.read_text() == "not a folder"


# -- 3. 16-bit and float photos -----------------------------------------------------------------------------------


def test_overlays_of_16_bit_and_float_photos_match_the_8_bit_one(tmp_path, models, gray_photos):
    labels = np.zeros((64, 96), dtype=np.int64)
    labels[:, 48:] = 1
    images = {mode: Image.open(path) for mode, path in gray_photos.items()}
    reference = np.asarray(segmentation_overlay(images["L"], labels), dtype=np.int64)
    assert reference.std() > 20  # the photo shows
    np.testing.assert_array_equal(np.asarray(segmentation_overlay(images["I;16"], labels)), reference)
    as_int32 = Image.fromarray(np.asarray(images["I;16"]).astype(np.int32))  # mode I, as Pillow opens some files
    np.testing.assert_array_equal(np.asarray(segmentation_overlay(as_int32, labels)), reference)
    assert np.abs(np.asarray(segmentation_overlay(images["F"], labels), dtype=np.int64) - reference).max() <= 1

    overlays = {}
    for mode, path in gray_photos.items():
        assert main(["segment", str(path), "-m", str(models["seg"]), "-o", str(tmp_path / "out"), "--size", "32"]) == 0
        overlays[mode] = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_overlay.png"), dtype=np.int64)
    np.testing.assert_array_equal(overlays["I;16"], overlays["L"])
    # float input differs from the 8-bit one by float rounding only: equal but for a rare label flip at a near-tie
    assert (np.abs(overlays["F"] - overlays["L"]).max(axis=-1) <= 1).mean() > 0.99


# -- 4. transformers' DPT on a preset config -------------------------------------------------------------------------


def test_transformers_dpt_runs_on_a_preset_vit_config():
    preset = dinov3_hf.Dinov3HfViTConfig.from_preset(
        "vits16", hidden_size=64, num_attention_heads=2, num_hidden_layers=8
    )
    config = dinov3_hf.transformers_dpt_config(preset, neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=16)
    assert preset.reshape_hidden_states and preset.out_indices == [8]  # the preset itself is left as it was
    torch.manual_seed(0)
    model = DPTForDepthEstimation(config).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        maps = model.backbone(x).feature_maps
        depth = model(x).predicted_depth
    assert depth.shape == (2, 64, 96) and torch.isfinite(depth).all()
    # the official DPT layers, blocks [1, 3, 5, 7] counted from 0, as [CLS; patch tokens] sequences
    backbone = dinov3_hf.Dinov3HfViTModel(config.backbone_config).eval()
    backbone.load_state_dict(model.backbone.state_dict())
    with torch.inference_mode():
        layers = backbone.get_intermediate_layers(x, n=[1, 3, 5, 7], return_class_token=True, norm=True)
    assert len(maps) == 4
    for fmap, (patches, cls_token) in zip(maps, layers):
        torch.testing.assert_close(fmap, torch.cat([cls_token[:, None], patches], dim=1))
    with pytest.raises(TypeError, match="ViT token sequences"):
        dinov3_hf.transformers_dpt_config(dinov3_hf.Dinov3HfConvNextConfig())


# -- 5. models of the wrong kind ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "model", "message"),
    [
        ("segment-text", "seg", "not a dino.txt model: it is a semantic-segmentation model"),
        ("segment-text", "seg", "use it with `dinov3-hf segment`."),
        ("segment-text", "backbone", "not a dino.txt model: it is a bare backbone"),
        ("depth", "backbone", "not a depth-estimation model: it is a bare backbone"),
        ("segment", "depth", "not a semantic-segmentation model: it is a depth-estimation model"),
    ],
)
def test_models_of_the_wrong_kind_get_one_clear_error(tmp_path, models, gray_photos, capsys, command, model, message):
    args = [command, str(gray_photos["L"]), "-m", str(models[model]), "-o", str(tmp_path)]
    assert main([*args, "-l", "cat"] if command == "segment-text" else args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


# -- 6 and 7. --help and --version -------------------------------------------------------------------------------


def imported_modules(command: list[str]) -> tuple[set[str], float, str]:
    """The top-level modules a command imports (from `python -X importtime`), its wall time and its stdout."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    names = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    return names, seconds, done.stdout


def test_help_and_version_answer_without_importing_torch():
    script = shutil.which("dinov3-hf") or str(Path(sys.executable).parent / "dinov3-hf")
    version = importlib.metadata.version("dinov3-hf")
    baseline = min(imported_modules(["-c", "import argparse"])[1] for _ in range(2))
    for command in (["-m", "dinov3_hf", "--help"], [script, "--help"], [script, "--version"]):
        names, seconds, stdout = min((imported_modules(command) for _ in range(2)), key=lambda run: run[1])
        assert "dinov3_hf" in names and not names & set(HEAVY_MODULES), (command, names & set(HEAVY_MODULES))
        assert seconds < baseline + 1.0, (command, seconds, baseline)
        assert ("usage: dinov3-hf" in stdout) if "--help" in command else (stdout.strip() == f"dinov3-hf {version}")


def test_version_and_parser_constants(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dinov3-hf {importlib.metadata.version('dinov3-hf')}"
    from dinov3_hf.convert import FORMATS
    from dinov3_hf.convert.heads import LINEAR_PROBES, OFFICIAL_HEADS

    assert cli.CONVERT_FORMATS == FORMATS
    assert cli.CONVERT_HEADS == (*OFFICIAL_HEADS, *LINEAR_PROBES)


# -- 8. exports -----------------------------------------------------------------------------------------------------


def test_task_models_are_exported_from_the_package():
    for name in (
        "Dinov3HfForImageClassification", "Dinov3HfImageClassificationConfig",
        "Dinov3HfForSemanticSegmentation", "Dinov3HfSemanticSegmentationConfig",
        "Dinov3HfForDepthEstimation", "Dinov3HfDepthEstimationConfig", "DPTHead", "transformers_dpt_config",
    ):
        assert name in dinov3_hf.__all__ and getattr(dinov3_hf, name) is getattr(heads, name), name
    assert all(hasattr(dinov3_hf, name) for name in dinov3_hf.__all__)
