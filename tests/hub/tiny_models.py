"""Tiny models of each kind pushed in the Hub tests, their processors, and their outputs on one real photo (and on
captions, for dino.txt), computed with the processor: so equal outputs after a round trip mean equal weights, config
and processor."""

from __future__ import annotations

import torch
from helpers import randomize_
from PIL import Image
from skimage import data

from dinov3_hf import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfDinoTxtConfig,
    Dinov3HfDinoTxtModel,
    Dinov3HfDinoTxtProcessor,
    Dinov3HfForDepthEstimation,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageProcessor,
    Dinov3HfSemanticSegmentationConfig,
    Dinov3HfViTConfig,
    Dinov3HfViTModel,
)

KINDS = ("vit", "segmentation", "depth", "dinotxt")
CLASSES = {"vit": Dinov3HfViTModel, "segmentation": Dinov3HfForSemanticSegmentation,
           "depth": Dinov3HfForDepthEstimation, "dinotxt": Dinov3HfDinoTxtModel}
CAPTIONS = ["an astronaut", "a flag", "the sky"]


def backbone_config() -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                                         patch_size=8)


def build(kind: str, seed: int):
    """A `kind` model with every weight random (seeded), and its processor."""
    torch.manual_seed(seed)
    if kind == "vit":
        model = Dinov3HfViTModel(backbone_config())
    elif kind == "segmentation":
        model = Dinov3HfForSemanticSegmentation(
            Dinov3HfSemanticSegmentationConfig(backbone_config=backbone_config(), num_labels=3))
    elif kind == "depth":
        model = Dinov3HfForDepthEstimation(Dinov3HfDepthEstimationConfig(backbone_config=backbone_config()))
    else:
        config = Dinov3HfDinoTxtConfig(backbone_config=backbone_config(), text_hidden_size=32,
                                       text_num_hidden_layers=2, text_num_attention_heads=2)
        return randomize_(Dinov3HfDinoTxtModel(config), seed=seed).eval(), \
            Dinov3HfDinoTxtProcessor.for_model_config(config, image_size=32)
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 48, "width": 40})
    return randomize_(model, seed=seed).eval(), processor


@torch.no_grad()
def outputs(kind: str, model, processor) -> dict[str, torch.Tensor]:
    """The model's outputs on the astronaut photo (and the captions, for dino.txt), through `processor`."""
    image = Image.fromarray(data.astronaut())
    if kind == "dinotxt":
        inputs = processor(images=image, text=CAPTIONS, padding="max_length", return_tensors="pt")
        out = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
        return {"logits_per_image": out.logits_per_image}
    out = model(processor(image, return_tensors="pt")["pixel_values"])
    field = {"vit": "last_hidden_state", "segmentation": "logits", "depth": "predicted_depth"}[kind]
    return {field: getattr(out, field)}
