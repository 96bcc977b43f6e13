"""Task models (linear classifier, linear segmentation probe, linear depth probe): shapes, frozen backbone, losses
against hand computation, bin math, save/reload, Auto classes and the clear errors for labels of
the wrong size or range, bad layer indices and a `num_labels` mismatch on load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from transformers import (
    AutoConfig,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

from dinov3_hf import Dinov3HfConvNextConfig, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.models.heads import (
    Dinov3HfDepthEstimationConfig,
    Dinov3HfForDepthEstimation,
    Dinov3HfForImageClassification,
    Dinov3HfForSemanticSegmentation,
    Dinov3HfImageClassificationConfig,
    Dinov3HfSemanticSegmentationConfig,
    SigLoss,
    logits_to_depth,
    sig_loss,
)


def vit_config(**kwargs) -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset("vits16", hidden_size=64, num_attention_heads=2, num_hidden_layers=2, **kwargs)


def convnext_config() -> Dinov3HfConvNextConfig:
    return Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])


def classifier(**kwargs) -> Dinov3HfForImageClassification:
    return Dinov3HfForImageClassification(Dinov3HfImageClassificationConfig(backbone_config=vit_config(), **kwargs))


def randomize_bn_(model) -> None:
    """Non-trivial BatchNorm running statistics, so that save/reload and eval-mode maths see them."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(1 + 0.5 * torch.rand(module.running_var.shape, generator=gen))


@pytest.fixture
def pixels():
    return torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))


# -- classification -------------------------------------------------------------------------------------------------


def test_classifier_is_linear_on_cls_and_mean_patch(pixels):
    model = classifier(num_labels=5)
    assert model.classifier.in_features == 128 and model.classifier.out_features == 5
    assert torch.all(model.classifier.bias == 0) and 0.007 < model.classifier.weight.std().item() < 0.013
    randomize_(model).eval()
    labels = torch.tensor([1, 4])
    out = model(pixels, labels=labels)
    assert out.logits.shape == (2, 5)
    with torch.no_grad():
        backbone = model.backbone(pixels)
        features = torch.cat([backbone.pooler_output, backbone.patch_tokens.mean(1)], dim=-1)
        logits = features @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(out.logits, logits)
    # cross-entropy by hand: mean over the batch of logsumexp(logits) - logit of the label
    expected = sum(torch.logsumexp(logits[i], 0) - logits[i, labels[i]] for i in range(2)) / 2
    torch.testing.assert_close(out.loss, expected)


def test_classifier_on_convnext_uses_pool_and_mean_token():
    config = Dinov3HfImageClassificationConfig(backbone_config=convnext_config(), num_labels=4)
    model = Dinov3HfForImageClassification(config).eval()
    assert model.classifier.in_features == 2 * 32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        backbone = model.backbone(x)
        expected = model.classifier(torch.cat([backbone.pooler_output, backbone.patch_tokens.mean(1)], dim=-1))
        torch.testing.assert_close(model(x).logits, expected)
    cls_only = Dinov3HfForImageClassification.from_backbone(model.backbone, num_labels=4, use_mean_patch_token=False)
    assert cls_only.classifier.in_features == 32 and cls_only(x).logits.shape == (2, 4)


def test_frozen_backbone_gets_no_grads_and_trainable_one_does(pixels):
    model = classifier(num_labels=3)
    model.train()
    assert not model.backbone.training and model.classifier.training  # frozen backbone stays in eval mode
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model(pixels, labels=torch.tensor([0, 2])).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0

    model.zero_grad()
    model.set_backbone_frozen(False)
    assert model.backbone.training and model.config.freeze_backbone is False
    model(pixels, labels=torch.tensor([0, 2])).loss.backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None


# -- segmentation ---------------------------------------------------------------------------------------------------


def test_segmentation_head_matches_manual_computation(pixels):
    config = Dinov3HfSemanticSegmentationConfig(backbone_config=vit_config(), num_labels=4, layers=[0, -1])
    model = Dinov3HfForSemanticSegmentation(config)
    assert model.classifier.in_channels == 128 and isinstance(model.dropout, torch.nn.Dropout2d)
    randomize_(model)
    randomize_bn_(model)
    model.eval()
    labels = torch.randint(0, 4, (2, 32, 48), generator=torch.Generator().manual_seed(2))
    labels[0, :5] = 255
    out = model(pixels, labels=labels)
    assert out.logits.shape == (2, 4, 2, 3)
    with torch.no_grad():
        maps = model.backbone.get_intermediate_layers(pixels, n=[0, 1], reshape=True, norm=True)
        x = torch.cat(maps, dim=1)
        bn = model.batchnorm
        x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
        logits = torch.einsum("bchw,kc->bkhw", x, model.classifier.weight[:, :, 0, 0])
        logits = logits + model.classifier.bias[:, None, None]
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-5)
    # loss: bilinear upsampling to the labels, CE averaged over the non-ignored pixels
    log_probs = F.interpolate(logits, size=(32, 48), mode="bilinear", align_corners=False).log_softmax(1)
    keep = labels != 255
    picked = log_probs.gather(1, labels.clamp(max=3)[:, None])[:, 0]
    torch.testing.assert_close(out.loss, -picked[keep].mean(), rtol=1e-4, atol=1e-5)


def test_segmentation_on_convnext_stages_resizes_to_the_first():
    config = Dinov3HfSemanticSegmentationConfig(backbone_config=convnext_config(), num_labels=3, layers=[1, 3])
    model = Dinov3HfForSemanticSegmentation(config).eval()
    assert model.classifier.in_channels == 16 + 32
    logits = model(torch.randn(1, 3, 64, 96)).logits
    assert logits.shape == (1, 3, 8, 12)  # stage 1 (0-based) has stride 8


def test_segmentation_label_errors(pixels):
    model = Dinov3HfForSemanticSegmentation(
        Dinov3HfSemanticSegmentationConfig(backbone_config=vit_config(), num_labels=4)
    )
    with pytest.raises(ValueError, match=r"\(2, 16, 24\).*\(2, 3, 32, 48\)"):
        model(pixels, labels=torch.zeros(2, 16, 24, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_labels=4"):
        model(pixels, labels=torch.full((2, 32, 48), 7))
    with pytest.raises(ValueError, match=r"layers=\[5\]"):
        Dinov3HfSemanticSegmentationConfig(backbone_config=vit_config(), layers=[5])


# -- depth ----------------------------------------------------------------------------------------------------------


def test_linear_depth_bin_math_by_hand():
    # bins linspace(1, 4, 4) = [1, 2, 3, 4]; ReLU + 0.1 of [-1, 0, 0.9, 1.9] = [0.1, 0.1, 1.0, 2.0], sum 3.2
    logits = torch.tensor([-1.0, 0.0, 0.9, 1.9]).reshape(1, 4, 1, 1)
    depth = logits_to_depth(logits, 1.0, 4.0)
    assert depth.shape == (1, 1, 1, 1)
    assert depth.item() == pytest.approx((0.1 * 1 + 0.1 * 2 + 1.0 * 3 + 2.0 * 4) / 3.2)
    # all-negative logits -> uniform weights -> the mean bin
    assert logits_to_depth(-torch.ones(1, 4, 1, 1), 1.0, 4.0).item() == pytest.approx(2.5)
    # log bins: exp(linspace(log 1, log 4, 3)) = [1, 2, 4]
    assert logits_to_depth(torch.tensor([0.0, 0.0, 5.0]).reshape(1, 3, 1, 1), 1.0, 4.0, "log").item() == pytest.approx(
        (0.1 * 1 + 0.1 * 2 + 5.1 * 4) / 5.3
    )


def test_sigloss_by_hand_and_warmup():
    pred = torch.tensor([[1.0, 2.0], [4.0, 3.0]])
    gt = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # the 0 is missing depth
    g = [math.log(p + 1e-3) - math.log(t + 1e-3) for p, t in ((1, 1), (2, 1), (4, 2))]
    mean = sum(g) / 3
    var = sum((x - mean) ** 2 for x in g) / 2  # unbiased
    assert sig_loss(pred, gt).item() == pytest.approx(math.sqrt(var + 0.15 * mean**2), rel=1e-5)
    assert sig_loss(pred, gt, mean_only=True).item() == pytest.approx(math.sqrt(0.15) * abs(mean), rel=1e-5)
    assert sig_loss(pred, torch.zeros(2, 2)).item() == 0.0

    loss = SigLoss(warmup_steps=2)
    loss.eval()
    assert loss(pred, gt).item() == pytest.approx(math.sqrt(var + 0.15 * mean**2), rel=1e-5)  # no warm-up in eval
    loss.train()
    warm = [loss(pred, gt).item() for _ in range(3)]
    assert warm[0] == warm[1] == pytest.approx(math.sqrt(0.15) * abs(mean), rel=1e-5)
    assert warm[2] == pytest.approx(math.sqrt(var + 0.15 * mean**2), rel=1e-5)


@pytest.mark.parametrize("use_cls_token", [False, True])
def test_depth_head_matches_manual_computation(pixels, use_cls_token):
    config = Dinov3HfDepthEstimationConfig(
        backbone_config=vit_config(), use_cls_token=use_cls_token, min_depth=0.5, max_depth=8.0, n_bins=16
    )
    model = Dinov3HfForDepthEstimation(config)
    assert model.conv_depth.in_channels == (128 if use_cls_token else 64)
    randomize_(model)
    randomize_bn_(model)
    model.eval()
    gt = 0.5 + 7 * torch.rand(2, 32, 48, generator=torch.Generator().manual_seed(3))
    out = model(pixels, labels=gt)
    assert out.predicted_depth.shape == (2, 32, 48)
    assert out.predicted_depth.min() >= 0.5 and out.predicted_depth.max() <= 8.0
    with torch.no_grad():
        result = model.backbone.get_intermediate_layers(pixels, n=1, reshape=True, return_class_token=True)
        fmap, cls = result[0]
        if use_cls_token:
            fmap = torch.cat([fmap, cls[:, :, None, None].expand_as(fmap)], dim=1)
        logits = model.conv_depth(model.batchnorm(fmap))
        weights = torch.relu(logits) + 0.1
        weights = weights / weights.sum(1, keepdim=True)
        depth = (weights * torch.linspace(0.5, 8.0, 16)[None, :, None, None]).sum(1, keepdim=True)
        depth = F.interpolate(depth, size=(32, 48), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.predicted_depth, depth)
    torch.testing.assert_close(out.loss, sig_loss(depth, gt))


def test_depth_label_size_error(pixels):
    model = Dinov3HfForDepthEstimation(Dinov3HfDepthEstimationConfig(backbone_config=vit_config()))
    with pytest.raises(ValueError, match=r"\(2, 30, 40\).*\(2, 3, 32, 48\)"):
        model(pixels, labels=torch.ones(2, 30, 40))


# -- save / reload, Auto classes, loading errors --------------------------------------------------------------------

TASKS = [
    (Dinov3HfForImageClassification, Dinov3HfImageClassificationConfig, AutoModelForImageClassification, "logits"),
    (Dinov3HfForSemanticSegmentation, Dinov3HfSemanticSegmentationConfig, AutoModelForSemanticSegmentation, "logits"),
    (Dinov3HfForDepthEstimation, Dinov3HfDepthEstimationConfig, AutoModelForDepthEstimation, "predicted_depth"),
]


@pytest.mark.parametrize("model_class,config_class,auto_class,field", TASKS)
def test_save_reload_and_auto_class(tmp_path, pixels, model_class, config_class, auto_class, field):
    kwargs = {} if field == "predicted_depth" else {"num_labels": 3}
    model = model_class(config_class(backbone_config=vit_config(), **kwargs))
    randomize_(model)
    randomize_bn_(model)
    model.eval()
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is config_class
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    assert type(auto_class.from_config(model.config)) is model_class
    assert reloaded.config.backbone_config.model_type == "dinov3_hf_vit"
    assert not any(p.requires_grad for p in reloaded.backbone.parameters())
    with torch.no_grad():
        torch.testing.assert_close(getattr(reloaded(pixels), field), getattr(model(pixels), field))


def test_num_labels_mismatch_on_load_is_a_clear_error(tmp_path, pixels):
    model = classifier(num_labels=5)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"num_labels=5.*num_labels=3.*ignore_mismatched_sizes=True"):
        Dinov3HfForImageClassification.from_pretrained(tmp_path, num_labels=3)
    with pytest.raises(ValueError, match=r"num_labels=5"):
        AutoModelForImageClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b"})
    reloaded = Dinov3HfForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    assert reloaded.classifier.out_features == 3 and reloaded.config.num_labels == 3
    torch.testing.assert_close(reloaded.backbone.patch_embed.proj.weight, model.backbone.patch_embed.proj.weight)


def test_head_from_backbone_checkpoint(tmp_path):
    backbone = randomize_(Dinov3HfViTModel(vit_config()))
    backbone.save_pretrained(tmp_path)
    model = Dinov3HfForSemanticSegmentation.from_pretrained(tmp_path, num_labels=7, layers=[0, 1])
    assert isinstance(model, Dinov3HfForSemanticSegmentation) and model.config.num_labels == 7
    assert model.config.layers == [0, 1] and model.config.freeze_backbone
    torch.testing.assert_close(model.backbone.blocks[1].attn.qkv.weight, backbone.blocks[1].attn.qkv.weight)
    with pytest.raises(ValueError, match="not a DINOv3 backbone"):
        model.save_pretrained(tmp_path / "head")
        Dinov3HfForDepthEstimation.from_backbone(tmp_path / "head")


def test_trainer_updates_only_the_head(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = Dinov3HfForSemanticSegmentation(
        Dinov3HfSemanticSegmentationConfig(backbone_config=vit_config(), num_labels=3)
    )
    gen = torch.Generator().manual_seed(4)
    rows = [
        {"pixel_values": torch.randn(3, 32, 32, generator=gen), "labels": torch.randint(0, 3, (32, 32), generator=gen)}
        for _ in range(4)
    ]
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.classifier.weight.clone()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-2, report_to=[],
        save_strategy="no", use_cpu=True, logging_strategy="no", dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    assert {id(p) for group in trainer.optimizer.param_groups for p in group["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    assert not any(p.requires_grad for p in model.backbone.parameters())
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, backbone_before[key])
    assert not torch.equal(model.classifier.weight, head_before)
