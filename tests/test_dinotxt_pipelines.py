"""dino.txt zero-shot classification and open-vocabulary segmentation end to end on real photos (pipelines,
function, CLI), with template averaging and sliding windows checked by hand, and clear errors for bad labels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data
from transformers import AutoProcessor, pipeline

from dinov3_hf import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfDinoTxtProcessor, Dinov3HfViTConfig
from dinov3_hf.cli import main
from dinov3_hf.models.dinotxt import class_text_embeddings, open_vocab_segmentation

LABELS = ["astronaut", "flag", "sky"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    backbone = Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                                             patch_size=8)
    config = Dinov3HfDinoTxtConfig(backbone_config=backbone, text_hidden_size=32, text_num_hidden_layers=2,
                                   text_num_attention_heads=2, vision_head_layerscale_init=0.5)
    model = Dinov3HfDinoTxtModel(config).eval()
    path = tmp_path_factory.mktemp("dinotxt")
    model.save_pretrained(path)
    Dinov3HfDinoTxtProcessor.for_model_config(config, image_size=64).save_pretrained(path)
    return path, model, AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((90, 70))  # not a multiple of the patch size


def test_processor_round_trip(saved):
    _, _, processor = saved
    assert isinstance(processor, Dinov3HfDinoTxtProcessor)
    out = processor(images=Image.fromarray(data.coffee()), text=["a cup", "a saucer"])
    assert out["pixel_values"].shape == (1, 3, 64, 64) and out["input_ids"].shape == (2, 77)
    assert out["input_ids"].tolist() == processor.tokenizer(["a cup", "a saucer"], padding="max_length")["input_ids"]


def test_zero_shot_pipeline(saved, astronaut):
    path, model, processor = saved
    classifier = pipeline("zero-shot-image-classification", model=str(path))
    result = classifier(astronaut, candidate_labels=LABELS)
    assert sorted(r["label"] for r in result) == sorted(LABELS)
    assert sum(r["score"] for r in result) == pytest.approx(1.0)
    # the pipeline's scores are the model's softmax over "This is a photo of {}." prompts
    ids = processor.tokenizer([f"This is a photo of {label}." for label in LABELS], padding=True, return_tensors="pt")
    pixels = processor.image_processor(astronaut, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = model(input_ids=ids["input_ids"], pixel_values=pixels).logits_per_image.softmax(-1)[0]
    assert {r["label"]: r["score"] for r in result} == pytest.approx(dict(zip(LABELS, probs.tolist())), abs=1e-5)


def test_template_averaging(saved):
    _, model, processor = saved
    templates = ["a photo of a {}.", "the {} in the picture"]
    embeds = class_text_embeddings(model, processor.tokenizer, LABELS[:2], templates, patch_aligned=True)
    expected = []
    for label in LABELS[:2]:
        ids = processor.tokenizer([t.format(label) for t in templates], padding="max_length", return_tensors="pt")
        halves = F.normalize(model.get_text_features(ids["input_ids"])[:, 32:], dim=-1)
        expected.append(F.normalize(halves.mean(0), dim=0))
    torch.testing.assert_close(embeds, torch.stack(expected).detach())


def test_sliding_windows_average_the_window_softmaxes(saved):
    _, model, _ = saved
    pixels = torch.randn(1, 3, 40, 56)
    classes = F.normalize(torch.randn(3, 32), dim=-1)

    def window_probs(crop):
        vision = model.encode_image(crop)
        patch = model.config.backbone_config.patch_size
        h, w = crop.shape[-2] // patch, crop.shape[-1] // patch
        cos = (F.normalize(vision.patch_tokens, dim=-1) @ classes.t()).transpose(1, 2).reshape(1, 3, h, w)
        return F.interpolate(cos, size=crop.shape[-2:], mode="bilinear").softmax(dim=1)

    with torch.no_grad():
        whole = open_vocab_segmentation(model, pixels, classes, window=None)
        torch.testing.assert_close(whole, window_probs(pixels))
        slid = open_vocab_segmentation(model, pixels, classes, window=32, stride=16)
        # windows: rows start at 0 and 8 (flush), columns at 0, 16 and 24 (flush)
        total, count = torch.zeros(1, 3, 40, 56), torch.zeros(1, 1, 40, 56)
        for top in (0, 8):
            for left in (0, 16, 24):
                total[..., top : top + 32, left : left + 32] += window_probs(pixels[..., top : top + 32, left : left + 32])
                count[..., top : top + 32, left : left + 32] += 1
    torch.testing.assert_close(slid, total / count)
    assert slid.shape == (1, 3, 40, 56) and torch.allclose(slid.sum(1), torch.ones(1, 40, 56))


def test_open_vocabulary_segmentation_pipeline(saved, astronaut):
    path, _, _ = saved
    segmenter = pipeline("open-vocabulary-segmentation", model=str(path))
    result = segmenter(astronaut, candidate_labels=LABELS, shortest_edge=48, window=32, stride=16)
    assert result["segmentation"].shape == (70, 90)  # the image's size
    assert result["labels"] == LABELS
    torch.testing.assert_close(result["segmentation"], result["scores"].argmax(0))
    assert set(result["segmentation"].unique().tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="non-empty list of class names"):
        segmenter(astronaut, candidate_labels=[])


def test_empty_labels_are_a_clear_error(saved):
    _, model, processor = saved
    with pytest.raises(ValueError, match="non-empty list of non-empty class names"):
        class_text_embeddings(model, processor.tokenizer, [])
    with pytest.raises(TypeError, match="split it first"):
        class_text_embeddings(model, processor.tokenizer, "cat,dog")


def test_cli_segment_text(saved, tmp_path, capsys):
    path, _, _ = saved
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).resize((75, 50)).save(photo)
    out = tmp_path / "out"
    args = ["segment-text", str(photo), "--labels", "cup, saucer ,table", "--model", str(path), "--out", str(out),
            "--size", "48", "--window", "32", "--stride", "16"]
    assert main(args) == 0
    overlay, mask = Image.open(out / "coffee_overlay.png"), Image.open(out / "coffee_mask.png")
    assert overlay.size == mask.size == (75, 50)
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2}
    assert main(["segment-text", str(photo), "--labels", " , ", "--model", str(path), "--out", str(out)]) == 1
    assert "--labels needs at least one class name" in capsys.readouterr().err


def test_cli_segment_text_refuses_a_checkpoint_without_its_text_tower(saved, tmp_path, capsys):
    path, _, _ = saved
    incomplete = tmp_path / "no_text"
    shutil.copytree(path, incomplete)
    weights = load_file(path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("text_model.")}, incomplete / "model.safetensors",
              metadata={"format": "pt"})
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).resize((75, 50)).save(photo)
    args = ["segment-text", str(photo), "--labels", "cup", "--model", str(incomplete), "--out", str(tmp_path / "out")]
    assert main(args) == 1
    assert "weights missing text_model.blocks.0" in capsys.readouterr().err
    assert not (tmp_path / "out" / "coffee_mask.png").exists()
