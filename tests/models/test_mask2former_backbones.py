"""Our backbones driving transformers' Mask2FormerForUniversalSegmentation: the ViT through its simple feature pyramid
and the ConvNeXt through its four stages. Each tiny model trains on synthetic scenes, reloads identically through
AutoModelForUniversalSegmentation, and serves panoptic, instance and semantic segmentation through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForUniversalSegmentation,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    pipeline,
)

from dinov3_hf import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig, Dinov3HfViTBackbone, Dinov3HfViTConfig

SIZE = 64
LABELS = {0: "background", 1: "red", 2: "blue"}
COLOURS = {1: (220, 30, 30), 2: (30, 30, 220)}


def scenes(n: int, seed: int = 0) -> tuple[list[Image.Image], list[torch.Tensor]]:
    """Grey noisy images with a red and a blue square (sides 16-28 px, the blue one on top), and their label maps
    (0 background, 1 red, 2 blue)."""
    rng = np.random.default_rng(seed)
    images, label_maps = [], []
    for _ in range(n):
        pixels = rng.normal(128, 20, (SIZE, SIZE, 3))
        label_map = np.zeros((SIZE, SIZE), dtype=np.int64)
        for label, colour in COLOURS.items():
            side = rng.integers(16, 29)
            top, left = rng.integers(0, SIZE - side, 2)
            pixels[top : top + side, left : left + side] = colour
            label_map[top : top + side, left : left + side] = label
        images.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)))
        label_maps.append(torch.from_numpy(label_map))
    return images, label_maps


def mask2former(backbone_config) -> Mask2FormerForUniversalSegmentation:
    config = Mask2FormerConfig(
        backbone_config=backbone_config, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_layers=1,
        decoder_layers=3, num_attention_heads=2, dim_feedforward=64, encoder_feedforward_dim=64, num_queries=6,
        train_num_points=1024, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(0)
    return Mask2FormerForUniversalSegmentation(config)


BACKBONES = {
    "vit_pyramid": (
        lambda: Dinov3HfViTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_register_tokens=1, out_indices=[2],
            pyramid_strides=[4, 8, 16, 32], pyramid_channels=32,
        ),
        Dinov3HfViTBackbone,
    ),
    "convnext": (
        lambda: Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 24, 32, 48], out_indices=[1, 2, 3, 4]),
        Dinov3HfConvNextBackbone,
    ),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_mask2former_trains_reloads_and_serves(name, tmp_path):
    make_config, backbone_class = BACKBONES[name]
    model = mask2former(make_config())
    assert isinstance(model.model.pixel_level_module.encoder, backbone_class)
    processor = Mask2FormerImageProcessor(size={"height": SIZE, "width": SIZE}, ignore_index=255)
    images, label_maps = scenes(4)
    classes = [m.unique() for m in label_maps]
    masks = [torch.stack([m == k for k in c]).float() for m, c in zip(label_maps, classes)]  # [N, H, W] per image
    pixel_values = processor(images, return_tensors="pt").pixel_values

    # training: the loss (fixed point sampling seed) falls well below its value at initialisation
    def loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes).loss.item()

    model.train()
    initial = loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(25):
        optimizer.zero_grad()
        model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes).loss.backward()
        optimizer.step()
    assert loss() < 0.5 * initial
    model.eval()

    # save / reload through the Auto class: the same weights bit for bit, so the same outputs (up to the last bit:
    # with several threads the kernels' rounding can depend on where the loaded tensors sit in memory)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForUniversalSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded.model.pixel_level_module.encoder, backbone_class)
    for field in ("out_indices", "pyramid_strides", "pyramid_channels", "hidden_sizes"):
        assert getattr(reloaded.config.backbone_config, field, None) == getattr(model.config.backbone_config, field, None)
    state, reloaded_state = model.state_dict(), reloaded.state_dict()
    assert state.keys() == reloaded_state.keys() and all(torch.equal(state[k], reloaded_state[k]) for k in state)
    with torch.inference_mode():
        out, out_reloaded = model(pixel_values=pixel_values), reloaded(pixel_values=pixel_values)
    torch.testing.assert_close(out.class_queries_logits, out_reloaded.class_queries_logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.masks_queries_logits, out_reloaded.masks_queries_logits, atol=1e-5, rtol=0)

    # serving: the pipeline's maps are the image processor's post-processing of the same outputs
    segmenter = pipeline("image-segmentation", model=reloaded, image_processor=processor)
    image = images[0]
    with torch.inference_mode():
        outputs = reloaded(**processor(image, return_tensors="pt"))
    semantic = segmenter(image, subtask="semantic")
    expected = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[(SIZE, SIZE)], return_segmentation_scores=True
    )[0]
    label_map = torch.full((SIZE, SIZE), -1)
    for segment in semantic:
        assert segment["mask"].size == (SIZE, SIZE) and segment["mask"].mode == "L"
        region = torch.from_numpy(np.array(segment["mask"]) > 0)
        assert (label_map[region] == -1).all()  # one label per pixel
        label_map[region] = reloaded.config.label2id[segment["label"]]
    assert torch.equal(label_map, expected.segmentation_scores.argmax(0))
    accuracy, background_share = (label_map == label_maps[0]).float().mean(), (label_maps[0] == 0).float().mean()
    assert accuracy > 0.9 > background_share  # beats calling every pixel background

    settings = dict(threshold=0.5, mask_threshold=0.5, overlap_mask_area_threshold=0.8)
    for subtask in ("panoptic", "instance"):
        segments = segmenter(image, subtask=subtask, **settings)
        post_process = getattr(processor, f"post_process_{subtask}_segmentation")
        expected = post_process(outputs, target_sizes=[(SIZE, SIZE)], **settings)[0]
        assert {s["label"] for s in segments} == set(LABELS.values())  # the trained model finds every class
        assert [s["label"] for s in segments] == [LABELS[s["label_id"]] for s in expected["segments_info"]]
        assert [s["score"] for s in segments] == pytest.approx([s["score"] for s in expected["segments_info"]])
        for segment, info in zip(segments, expected["segments_info"]):
            assert segment["mask"].size == (SIZE, SIZE) and segment["mask"].mode == "L"
            assert torch.equal(torch.from_numpy(np.array(segment["mask"]) > 0), expected["segmentation"] == info["id"])
