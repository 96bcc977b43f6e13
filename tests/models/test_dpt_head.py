"""The official DPT depth head inside `Dinov3HfForDepthEstimation(head_type="dpt")`: output shapes at several input
sizes, the centre padding to a multiple of the patch size, an independent functional re-computation of the official
forward, CHMv2's mixlog bins by hand, frozen-backbone gradients, save/reload and the depth-estimation pipeline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from PIL import Image
from skimage import data
from transformers import AutoModelForDepthEstimation, pipeline

from dinov3_hf import Dinov3HfConvNextConfig, Dinov3HfImageProcessor, Dinov3HfViTConfig
from dinov3_hf.models.heads import Dinov3HfDepthEstimationConfig, Dinov3HfForDepthEstimation, logits_to_depth
from dinov3_hf.models.heads.dpt import center_pad


def vit_config(layers: int = 4) -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=layers)


# tiny widths, but the structural switches of the two released DPT heads
DD_LIKE = dict(use_batchnorm=True, use_cls_token=False, dpt_use_bias=False, dpt_projection_after_fusion=True)
CHMV2_LIKE = dict(
    use_batchnorm=False, use_cls_token=True, dpt_use_bias=True, dpt_projection_after_fusion=False,
    bins_strategy="mixlog", norm_strategy="mixlog", min_depth=0.001, max_depth=96.0,
)


def dpt_model(**fields) -> Dinov3HfForDepthEstimation:
    fields = {
        "post_process_channels": [8, 16, 16, 24], "dpt_channels": 16, "dpt_hidden_channels": 8, "n_bins": 12,
        "min_depth": 0.5, "max_depth": 8.0, **fields,
    }
    config = Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), head_type="dpt", **fields)
    model = Dinov3HfForDepthEstimation(config)
    randomize_(model, std=0.2)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(1 + 0.5 * torch.rand(module.running_var.shape, generator=gen))
    return model.eval()


def pixels(height: int, width: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height * 100 + width))


# -- an independent functional transcription of the official DPTHead forward ----------------------------------------


def reference_dpt_logits(sd: dict, features, readout: bool, batchnorm: bool, projection: bool) -> torch.Tensor:
    """Official `DPTHead.forward` written with torch.nn.functional on the official state-dict keys."""

    def conv(x, key, **kw):
        return F.conv2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), **kw)

    maps = []
    for i, (x, cls) in enumerate(features):
        if readout:
            b, c, h, w = x.shape
            tokens = x.flatten(2).permute(0, 2, 1)
            tokens = torch.cat([tokens, cls.unsqueeze(1).expand_as(tokens)], -1)
            readout_key = f"reassemble_blocks.readout_projects.{i}.0"
            tokens = F.gelu(F.linear(tokens, sd[f"{readout_key}.weight"], sd[f"{readout_key}.bias"]))
            x = tokens.permute(0, 2, 1).reshape(b, c, h, w)
        if batchnorm:
            bn = f"reassemble_blocks.batchnorm_layers.{i}"
            x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"])
        x = conv(x, f"reassemble_blocks.projects.{i}.conv")
        resize = f"reassemble_blocks.resize_layers.{i}"
        if i == 0:
            x = F.conv_transpose2d(x, sd[f"{resize}.weight"], sd[f"{resize}.bias"], stride=4)
        elif i == 1:
            x = F.conv_transpose2d(x, sd[f"{resize}.weight"], sd[f"{resize}.bias"], stride=2)
        elif i == 3:
            x = conv(x, resize, stride=2, padding=1)
        maps.append(conv(x, f"convs.{i}.conv", padding=1))

    def rcu(x, key):
        y = conv(F.relu(x), f"{key}.conv1.conv", padding=1)
        y = conv(F.relu(y), f"{key}.conv2.conv", padding=1)
        return x + y

    out = None
    for j in range(4):
        skip = maps[3 - j]
        if j == 0:
            x = skip
        else:
            if skip.shape != out.shape:
                skip = F.interpolate(skip, size=out.shape[-2:], mode="bilinear", align_corners=False)
            x = out + rcu(skip, f"fusion_blocks.{j}.res_conv_unit1")
        x = rcu(x, f"fusion_blocks.{j}.res_conv_unit2")
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        out = conv(x, f"fusion_blocks.{j}.project.conv")
    if projection:
        out = F.relu(conv(out, "project.conv", padding=1))
    x = conv(out, "conv_depth.head.0", padding=1)
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    x = F.relu(conv(x, "conv_depth.head.2", padding=1))
    return conv(x, "conv_depth.head.4")


@pytest.mark.parametrize("fields", [DD_LIKE, CHMV2_LIKE], ids=["dd", "chmv2"])
def test_dpt_matches_functional_reference(fields):
    model = dpt_model(**fields)
    x = pixels(32, 64)  # a 2 x 4 patch grid
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
        features = model.backbone.get_intermediate_layers(x, n=[0, 1, 2, 3], reshape=True, return_class_token=True)
        sd = {k[len("dpt_head."):]: v for k, v in model.state_dict().items() if k.startswith("dpt_head.")}
        logits = reference_dpt_logits(
            sd, features, fields["use_cls_token"], fields["use_batchnorm"], fields["dpt_projection_after_fusion"]
        )
    assert logits.shape == (2, 12, 32, 64)  # a /16 grid of even size comes back at the input resolution
    torch.testing.assert_close(model.bin_logits(x)[0].detach(), logits)
    c = model.config
    expected = logits_to_depth(logits, c.min_depth, c.max_depth, c.bins_strategy, c.norm_strategy)[:, 0]
    torch.testing.assert_close(out.predicted_depth, expected)
    assert len(out.hidden_states) == 4 and out.hidden_states[0].shape == (2, 32, 2, 4)


@pytest.mark.parametrize("size", [(32, 64), (40, 56), (17, 33)])
def test_dpt_output_shapes_and_centre_padding(size):
    model = dpt_model(**DD_LIKE)
    x = pixels(*size)
    with torch.no_grad():
        depth = model(x).predicted_depth
    assert depth.shape == (2, *size)
    assert torch.isfinite(depth).all() and depth.min() >= 0.5 and depth.max() <= 8.0
    padded, (top, left) = center_pad(x, 16)
    height, width = padded.shape[-2:]
    assert height % 16 == 0 and width % 16 == 0 and height - size[0] < 16 and width - size[1] < 16
    # the padding is split evenly, the odd pixel at the bottom / right, and filled with zeros
    assert (top, left) == ((height - size[0]) // 2, (width - size[1]) // 2)
    torch.testing.assert_close(padded[..., top : top + size[0], left : left + size[1]], x)
    border = torch.ones_like(padded, dtype=torch.bool)
    border[..., top : top + size[0], left : left + size[1]] = False
    assert torch.all(padded[border] == 0)
    # the prediction is the padded image's, cropped (for even grids no resizing is involved)
    if size != (17, 33):  # 17x33 pads to a 2x3 grid: odd, so its logits are resized (checked above by shape only)
        with torch.no_grad():
            full = model(padded).predicted_depth
        torch.testing.assert_close(depth, full[:, top : top + size[0], left : left + size[1]])


def test_mixlog_bins_and_norm_by_hand():
    # mixlog over [1, 32 / 8] = [1, 4] with 3 bins: linear [1, 2.5, 4], log [1, 2, 4], t = [1, 0.5, 0]
    # -> bins [1, 2.25, 4]. logits [-1, 1, 3] -> ReLU [0, 1, 3] (+1e-8), normalised by 4; depth x 8.
    logits = torch.tensor([-1.0, 1.0, 3.0]).reshape(1, 3, 1, 1)
    depth = logits_to_depth(logits, 1.0, 32.0, "mixlog", "mixlog", mixlog_scale=8.0)
    assert depth.shape == (1, 1, 1, 1)
    assert depth.item() == pytest.approx(8 * (1e-8 * 1 + 1 * 2.25 + 3 * 4) / (4 + 3e-8), rel=1e-6)
    # all-negative logits -> equal weights -> 8 x the mean bin
    assert logits_to_depth(-torch.ones(1, 3, 1, 1), 1.0, 32.0, "mixlog", "mixlog").item() == pytest.approx(
        8 * (1 + 2.25 + 4) / 3, rel=1e-6
    )
    # the CHMv2 bins: 256 over [0.001, 12], from log spacing at the near end to linear at the far end
    config = Dinov3HfDepthEstimationConfig(
        backbone_config=vit_config(), bins_strategy="chmv2_mixlog", norm_strategy="chmv2_mixlog", max_depth=96.0
    )
    assert (config.bins_strategy, config.norm_strategy, config.mixlog_scale) == ("mixlog", "mixlog", 8.0)
    from dinov3_hf.models.heads.losses import depth_bins

    bins = depth_bins(256, 0.001, 96.0, "mixlog")
    assert bins[0].item() == pytest.approx(0.001) and bins[-1].item() == pytest.approx(12.0)
    assert torch.all(bins[1:] > bins[:-1])
    log1 = torch.exp(torch.linspace(torch.log(torch.tensor(0.001)), torch.log(torch.tensor(12.0)), 256))[1]
    assert bins[1].item() == pytest.approx((254 / 255) * log1.item() + (1 / 255) * (0.001 + 11.999 / 255), rel=1e-5)
    with pytest.raises(ValueError, match="mixlog"):
        Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), bins_strategy="mixlog", max_depth=0.005)


def test_gradients_reach_the_head_only_when_frozen():
    model = dpt_model(**CHMV2_LIKE).train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    x = pixels(32, 32, batch=1)
    gt = 1 + 10 * torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    model(x, labels=gt).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    head = dict(model.dpt_head.named_parameters())
    assert head and all(p.grad is not None for p in head.values())
    assert head["reassemble_blocks.readout_projects.0.0.weight"].grad.abs().sum() > 0
    model.zero_grad()
    model.set_backbone_frozen(False)
    model(x, labels=gt).loss.backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


def test_config_checks_and_default_layers():
    assert Dinov3HfDepthEstimationConfig(backbone_config=vit_config(12), head_type="dpt").layers == [2, 5, 8, 11]
    assert Dinov3HfDepthEstimationConfig(backbone_config=vit_config(24), head_type="dpt").layers == [5, 11, 17, 23]
    assert Dinov3HfDepthEstimationConfig(backbone_config=vit_config(24)).layers == [-1]
    with pytest.raises(ValueError, match="exactly 4"):
        Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), head_type="dpt", layers=[1, 2, 3])
    with pytest.raises(ValueError, match="ViT backbone"):
        Dinov3HfDepthEstimationConfig(
            backbone_config=Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32]),
            head_type="dpt",
        )
    with pytest.raises(ValueError, match="head_type"):
        Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), head_type="adabins")
    # the head is Kaiming-initialised like the official ConvModules (not the linear probes' N(0, 0.01))
    model = Dinov3HfForDepthEstimation(
        Dinov3HfDepthEstimationConfig(backbone_config=vit_config(), head_type="dpt", dpt_channels=64)
    )
    weight = model.dpt_head.convs[0].conv.weight  # fan_out = 64 * 9
    assert weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)


def test_save_reload_from_backbone_and_pipeline(tmp_path):
    model = dpt_model(**CHMV2_LIKE)
    model.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForDepthEstimation.from_pretrained(tmp_path / "model").eval()
    assert type(reloaded) is Dinov3HfForDepthEstimation and reloaded.config.head_type == "dpt"
    assert reloaded.config.norm_strategy == "mixlog" and reloaded.config.post_process_channels == [8, 16, 16, 24]
    assert not any(p.requires_grad for p in reloaded.backbone.parameters())
    x = pixels(32, 48, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).predicted_depth, model(x).predicted_depth)
    # a new DPT head on a backbone
    fresh = Dinov3HfForDepthEstimation.from_backbone(model.backbone, head_type="dpt", dpt_channels=8)
    assert fresh.config.layers == [0, 1, 2, 3] and fresh.dpt_head.conv_depth.head[0].out_channels == 4

    # the depth-estimation pipeline on a small real photo (H x W = 40 x 60, not multiples of 16)
    photo = Image.fromarray(data.coffee()).resize((60, 40))
    path = tmp_path / "model"
    Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 32, "width": 48}).save_pretrained(path)
    estimate = pipeline("depth-estimation", model=str(path))
    out = estimate(photo)
    assert out["predicted_depth"].shape == (40, 60) and out["depth"].size == photo.size
    assert torch.isfinite(out["predicted_depth"]).all() and out["predicted_depth"].min() > 0
    processor = Dinov3HfImageProcessor.from_pretrained(path)
    with torch.no_grad():
        outputs = estimate.model(**processor(photo, return_tensors="pt"))
    expected = processor.post_process_depth_estimation(outputs, target_sizes=[(40, 60)])[0]["predicted_depth"]
    torch.testing.assert_close(out["predicted_depth"], expected)
