"""Our ViT (with the simple feature pyramid) and ConvNeXt as `backbone_config` of transformers' DETR family (DETR,
Conditional DETR, Deformable DETR, RT-DETR, D-FINE): train, save / reload, serve through `pipeline("object-detection")`;
a pretrained ViT with a new pyramid loads from any checkpoint format into a detector."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_
from PIL import Image
from transformers import (
    AutoModelForObjectDetection,
    ConditionalDetrConfig,
    ConditionalDetrForObjectDetection,
    ConditionalDetrImageProcessor,
    DeformableDetrConfig,
    DeformableDetrForObjectDetection,
    DeformableDetrImageProcessor,
    DetrConfig,
    DetrForObjectDetection,
    DetrImageProcessor,
    DFineConfig,
    DFineForObjectDetection,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessor,
    pipeline,
)

from dinov3_hf import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig, Dinov3HfViTBackbone, Dinov3HfViTConfig

ID2LABEL = {0: "square", 1: "bar", 2: "blob"}
D_MODEL = 32
STRIDES = {"single": [32], "multi": [8, 16, 32]}  # DETR reads one stride-32 map; the others three levels


def backbone_config(kind: str, levels: str) -> Dinov3HfViTConfig | Dinov3HfConvNextConfig:
    """A tiny ViT with the simple feature pyramid (one level: block 2 feeds it; three levels: the patch embedding,
    block 1 and block 2 feed one each), or a tiny ConvNeXt's stages."""
    strides = STRIDES[levels]
    if kind == "vit":
        return Dinov3HfViTConfig.from_preset(
            "vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
            out_indices=[0, 1, 2][-len(strides) :], pyramid_strides=strides, pyramid_channels=D_MODEL,
        )
    stages = {8: "stage2", 16: "stage3", 32: "stage4"}
    return Dinov3HfConvNextConfig(
        depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 48, 64], out_features=[stages[s] for s in strides]
    )


def detector(name: str, kind: str):
    """The detector with our backbone and its transformers image processor (ImageNet normalisation, as DINOv3)."""
    common = dict(
        d_model=D_MODEL, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=6, id2label=ID2LABEL, dropout=0.0,
    )
    size = {"shortest_edge": 64, "longest_edge": 96}
    if name == "detr":
        config = DetrConfig(backbone_config=backbone_config(kind, "single"), **common)
        return DetrForObjectDetection(config), DetrImageProcessor(size=size)
    if name == "conditional_detr":
        config = ConditionalDetrConfig(backbone_config=backbone_config(kind, "single"), **common)
        return ConditionalDetrForObjectDetection(config), ConditionalDetrImageProcessor(size=size)
    backbone = backbone_config(kind, "multi")
    channels = [D_MODEL] * 3 if kind == "vit" else backbone.hidden_sizes[1:]
    if name == "deformable_detr":
        config = DeformableDetrConfig(
            backbone_config=backbone, num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, **common
        )
        return DeformableDetrForObjectDetection(config), DeformableDetrImageProcessor(size=size)
    rt_detr_fields = dict(
        backbone_config=backbone, encoder_in_channels=channels, feat_strides=STRIDES["multi"],
        encoder_hidden_dim=D_MODEL, decoder_in_channels=[D_MODEL] * 3, num_denoising=4, decoder_n_points=2, **common,
    )
    # RT-DETR's processor only rescales to [0, 1] by default; DINOv3 was trained on ImageNet-normalised pixels
    processor = RTDetrImageProcessor(size={"height": 64, "width": 96}, do_normalize=True)
    if name == "rt_detr":
        return RTDetrForObjectDetection(RTDetrConfig(**rt_detr_fields)), processor
    return DFineForObjectDetection(DFineConfig(**rt_detr_fields)), processor


CASES = [
    ("detr", "vit"), ("detr", "convnext"), ("deformable_detr", "vit"), ("deformable_detr", "convnext"),
    ("rt_detr", "vit"), ("rt_detr", "convnext"), ("d_fine", "vit"), ("conditional_detr", "convnext"),
]
BACKBONE_CLASSES = {"vit": Dinov3HfViTBackbone, "convnext": Dinov3HfConvNextBackbone}


def our_backbone(model, kind: str) -> torch.nn.Module:
    (backbone,) = [m for m in model.modules() if isinstance(m, BACKBONE_CLASSES[kind])]
    return backbone


def synthetic_batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Two 64x96 noise images, each with bright rectangles at its boxes (cxcywh, normalised) of known classes."""
    gen = torch.Generator().manual_seed(0)
    pixels = 0.2 * torch.randn(2, 3, 64, 96, generator=gen)
    boxes = [torch.tensor([[0.3, 0.4, 0.3, 0.4], [0.75, 0.7, 0.3, 0.3]]), torch.tensor([[0.5, 0.5, 0.5, 0.5]])]
    classes = [torch.tensor([0, 2]), torch.tensor([1])]
    for image, image_boxes, image_classes in zip(pixels, boxes, classes):
        for (cx, cy, w, h), label in zip(image_boxes.tolist(), image_classes.tolist()):
            x0, x1 = round((cx - w / 2) * 96), round((cx + w / 2) * 96)
            y0, y1 = round((cy - h / 2) * 64), round((cy + h / 2) * 64)
            image[label, y0:y1, x0:x1] += 2.0  # the class shows in its own colour channel
    return pixels, [{"class_labels": c, "boxes": b} for c, b in zip(classes, boxes)]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_training_reduces_loss_through_our_backbone(name, kind):
    torch.manual_seed(0)
    model, _ = detector(name, kind)
    backbone_before = {k: v.clone() for k, v in our_backbone(model, kind).state_dict().items()}
    pixels, labels = synthetic_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # the same denoising queries (RT-DETR, D-FINE) at every step
        loss = model(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    backbone_after = our_backbone(model, kind).state_dict()
    changed = [k for k, v in backbone_before.items() if v.is_floating_point() and not torch.equal(v, backbone_after[k])]
    assert any(k.startswith(("blocks.", "stages.")) for k in changed)  # gradients reach our backbone
    assert kind != "vit" or any(k.startswith("pyramid.") for k in changed)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_reload_and_object_detection_pipeline(name, kind, tmp_path):
    torch.manual_seed(0)
    model, processor = detector(name, kind)
    randomize_(model).eval()  # no parameter left at a constant init that a failed load would reproduce
    image = Image.fromarray(torch.randint(0, 256, (60, 90, 3), dtype=torch.uint8).numpy())  # 90 wide, 60 high
    inputs = processor(images=[image], return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    our_backbone(reloaded, kind)  # exactly one of ours inside
    state, reloaded_state = model.state_dict(), reloaded.state_dict()  # the same weights, bit for bit
    assert state.keys() == reloaded_state.keys() and all(torch.equal(state[k], reloaded_state[k]) for k in state)
    with torch.inference_mode():
        again = reloaded(**inputs)
    # the same outputs up to the last bit: with several threads the rounding can depend on tensor placement in memory
    torch.testing.assert_close(again.logits, outputs.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(again.pred_boxes, outputs.pred_boxes, atol=1e-6, rtol=0)

    detections = pipeline("object-detection", model=reloaded, image_processor=processor)(image, threshold=0.0)
    expected = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(60, 90)])[0]
    assert len(detections) == len(expected["scores"]) > 0
    # each box in the original image's pixels: the query's (cx, cy, w, h) * (width, height), as corners
    cx, cy, w, h = outputs.pred_boxes[0].unbind(-1)
    by_hand = torch.stack([(cx - w / 2) * 90, (cy - h / 2) * 60, (cx + w / 2) * 90, (cy + h / 2) * 60], -1)
    by_hand = {tuple(box) for box in by_hand.int().tolist()}
    for detection, score, label, box in zip(detections, expected["scores"], expected["labels"], expected["boxes"]):
        assert set(detection) == {"score", "label", "box"}
        assert detection["score"] == pytest.approx(score.item(), abs=1e-6) and 0 <= detection["score"] <= 1
        assert detection["label"] == ID2LABEL[label.item()]
        corners = [detection["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
        assert corners == box.int().tolist()
        assert tuple(corners) in by_hand


def test_pretrained_vit_with_a_new_pyramid_from_a_transformers_checkpoint(tmp_path):
    """`from_pretrained` of a transformers-format DINOv3 with pyramid fields: the checkpoint's weights (oracle:
    transformers' DINOv3ViTModel on them), a freshly initialised pyramid, copied whole into an RT-DETR."""
    source = DINOv3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16
    )
    source = randomize_(DINOv3ViTModel(source)).eval()
    source.save_pretrained(tmp_path / "hf")
    pyramid = dict(out_indices=[2], pyramid_strides=[8, 16, 32], pyramid_channels=D_MODEL)
    backbone = Dinov3HfViTBackbone.from_pretrained(tmp_path / "hf", **pyramid)
    pixels = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        out = backbone(pixels, output_hidden_states=True)
        torch.testing.assert_close(backbone.norm(out.hidden_states[2]), source(pixels).last_hidden_state)
    assert [tuple(f.shape) for f in out.feature_maps] == [(1, D_MODEL, 8, 12), (1, D_MODEL, 4, 6), (1, D_MODEL, 2, 3)]
    norms = [m for m in backbone.pyramid.modules() if hasattr(m, "eps")]
    assert norms and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)  # fresh init, not leftovers
    convs = [m.weight for m in backbone.pyramid.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(torch.isfinite(w).all() and w.std() > 0 for w in convs)

    config = RTDetrConfig(
        backbone_config=backbone.config, encoder_in_channels=backbone.channels, feat_strides=[8, 16, 32],
        d_model=D_MODEL, encoder_hidden_dim=D_MODEL, decoder_in_channels=[D_MODEL] * 3, decoder_layers=2,
        num_queries=6, id2label=ID2LABEL,
    )
    model = RTDetrForObjectDetection(config).eval()
    model.model.backbone.model.load_state_dict(backbone.state_dict())
    with torch.inference_mode():
        inside = model.model.backbone.model(pixels).feature_maps
    assert all(torch.equal(a, b) for a, b in zip(inside, out.feature_maps, strict=True))

    with pytest.raises(ValueError, match=r"pyramid_strides=\[7\]"):
        Dinov3HfViTBackbone.from_pretrained(tmp_path / "hf", out_indices=[2], pyramid_strides=[7])
