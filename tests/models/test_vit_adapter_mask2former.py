"""The ADE20K segmentor (`dinov3_vit7b16_ms`: ViT-Adapter + Mask2Former) at reduced sizes: the official key layout
(spelled out below from the official module tree, `dinov3/eval/segmentation/models/`), strict loading and bit-exact
export, the release layout on the meta device, the adapter's wiring, inference as
`dinov3/eval/segmentation/inference.py`, and the errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForUniversalSegmentation

from dinov3_hf.cli import main
from dinov3_hf.convert import CheckpointError
from dinov3_hf.convert.heads import (
    build_official_head_model,
    load_official_head,
    official_head_config,
    official_head_shapes,
    ours_to_official_head,
    save_official_head,
)
from dinov3_hf.models.heads.adapter_mask2former import (
    Dinov3HfAdapterMask2FormerConfig,
    Dinov3HfAdapterMask2FormerForUniversalSegmentation,
)
from dinov3_hf.convert.segmentation_head import official_segmentor_config_from_state
from dinov3_hf.models.heads.vit_adapter import DWConv, Dinov3HfViTAdapterConfig, four_even_intervals, reference_points
from dinov3_hf.models.vit import Dinov3HfViTConfig, Dinov3HfViTModel

D, INPLANE, HIDDEN, FFN, HEADS, ENC, DEC, QUERIES, LABELS = 64, 16, 64, 128, 4, 2, 3, 6, 5
DEFORM_HEADS, POINTS = 16, 4


def tiny_vit_config(depth: int = 4) -> Dinov3HfViTConfig:
    """D=64, 4 heads, with the 7B's structural flags (SwiGLU aligned to 64, no qkv bias, untied local CLS norm)."""
    return Dinov3HfViTConfig(
        hidden_size=D, num_hidden_layers=depth, num_attention_heads=4, ffn_type="swiglu", ffn_ratio=3.0,
        swiglu_align_to=64, qkv_bias=False, untie_global_and_local_cls_norm=True,
    )


def tiny_config() -> Dinov3HfAdapterMask2FormerConfig:
    adapter = Dinov3HfViTAdapterConfig(
        vit_config=tiny_vit_config(), interaction_indexes=[0, 1, 2, 3], conv_inplane=INPLANE
    )
    return Dinov3HfAdapterMask2FormerConfig(
        backbone_config=adapter, hidden_dim=HIDDEN, dim_feedforward=FFN, num_attention_heads=HEADS,
        encoder_layers=ENC, decoder_layers=DEC + 1, num_queries=QUERIES, num_labels=LABELS,
    )


def official_layout() -> dict[str, tuple[int, ...]]:
    """The official head file's keys and shapes for the tiny sizes above, from the official module tree."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[prefix + name] = (c,)
        keys[prefix + "num_batches_tracked"] = ()

    def linear(prefix: str, out: int, inp: int) -> None:
        keys[prefix + "weight"], keys[prefix + "bias"] = (out, inp), (out,)

    a, i = "segmentation_model.0.", INPLANE
    keys[a + "level_embed"] = (3, D)
    convs = (
        ("stem.0", "stem.1", (i, 3, 3, 3)), ("stem.3", "stem.4", (i, i, 3, 3)), ("stem.6", "stem.7", (i, i, 3, 3)),
        ("conv2.0", "conv2.1", (2 * i, i, 3, 3)), ("conv3.0", "conv3.1", (4 * i, 2 * i, 3, 3)),
        ("conv4.0", "conv4.1", (4 * i, 4 * i, 3, 3)),
    )
    for conv, bn_index, shape in convs:
        keys[f"{a}spm.{conv}.weight"] = shape
        bn(f"{a}spm.{bn_index}.", shape[0])
    for k, c in ((1, i), (2, 2 * i), (3, 4 * i), (4, 4 * i)):
        keys[f"{a}spm.fc{k}.weight"], keys[f"{a}spm.fc{k}.bias"] = (D, c, 1, 1), (D,)
    extractors = [f"{a}interactions.{k}.extractor." for k in range(4)]
    extractors += [f"{a}interactions.3.extra_extractors.{k}." for k in range(2)]
    for e in extractors:
        for norm in ("query_norm", "feat_norm", "ffn_norm"):
            keys[f"{e}{norm}.weight"], keys[f"{e}{norm}.bias"] = (D,), (D,)
        linear(e + "attn.sampling_offsets.", DEFORM_HEADS * 1 * POINTS * 2, D)
        linear(e + "attn.attention_weights.", DEFORM_HEADS * POINTS, D)
        linear(e + "attn.value_proj.", D // 2, D)
        linear(e + "attn.output_proj.", D, D // 2)
        linear(e + "ffn.fc1.", D // 4, D)
        keys[e + "ffn.dwconv.dwconv.weight"], keys[e + "ffn.dwconv.dwconv.bias"] = (D // 4, 1, 3, 3), (D // 4,)
        linear(e + "ffn.fc2.", D, D // 4)
    keys[a + "up.weight"], keys[a + "up.bias"] = (D, D, 2, 2), (D,)
    for k in range(1, 5):
        bn(f"{a}norm{k}.", D)
    p, h = "segmentation_model.1.pixel_decoder.", HIDDEN
    for k in range(3):
        keys[f"{p}input_convs.{k}.0.weight"], keys[f"{p}input_convs.{k}.0.bias"] = (h, D, 1, 1), (h,)
        keys[f"{p}input_convs.{k}.1.weight"], keys[f"{p}input_convs.{k}.1.bias"] = (h,), (h,)
    keys[p + "encoder.level_encoding"] = (3, h)
    for layer in range(ENC):
        e = f"{p}encoder.encoder.layers.{layer}."
        linear(e + "self_attn.sampling_offsets.", HEADS * 3 * 4 * 2, h)
        linear(e + "self_attn.attention_weights.", HEADS * 3 * 4, h)
        linear(e + "self_attn.value_proj.", h, h)
        linear(e + "self_attn.output_proj.", h, h)
        for norm in ("norm1", "norm2"):
            keys[f"{e}{norm}.weight"], keys[f"{e}{norm}.bias"] = (h,), (h,)
        linear(e + "linear1.", FFN, h)
        linear(e + "linear2.", h, FFN)
    keys[p + "mask_feature.weight"], keys[p + "mask_feature.bias"] = (h, h, 1, 1), (h,)
    keys[p + "lateral_convs.0.weight"] = (h, D, 1, 1)
    keys[p + "output_convs.0.weight"] = (h, h, 3, 3)
    for conv in ("lateral_convs", "output_convs"):
        keys[f"{p}{conv}.0.norm.weight"], keys[f"{p}{conv}.0.norm.bias"] = (h,), (h,)
    q = "segmentation_model.1.predictor."
    for layer in range(DEC):
        for block, attn in (("transformer_self_attention_layers", "self_attn"),
                            ("transformer_cross_attention_layers", "multihead_attn")):
            keys[f"{q}{block}.{layer}.{attn}.in_proj_weight"] = (3 * h, h)
            keys[f"{q}{block}.{layer}.{attn}.in_proj_bias"] = (3 * h,)
            linear(f"{q}{block}.{layer}.{attn}.out_proj.", h, h)
            keys[f"{q}{block}.{layer}.norm.weight"], keys[f"{q}{block}.{layer}.norm.bias"] = (h,), (h,)
        linear(f"{q}transformer_ffn_layers.{layer}.linear1.", FFN, h)
        linear(f"{q}transformer_ffn_layers.{layer}.linear2.", h, FFN)
        keys[f"{q}transformer_ffn_layers.{layer}.norm.weight"] = (h,)
        keys[f"{q}transformer_ffn_layers.{layer}.norm.bias"] = (h,)
    keys[q + "post_norm.weight"], keys[q + "post_norm.bias"] = (h,), (h,)
    keys[q + "query_feat.weight"] = keys[q + "query_embed.weight"] = (QUERIES, h)
    keys[q + "level_embed.weight"] = (3, h)
    linear(q + "class_embed.", LABELS + 1, h)
    for k in range(3):
        linear(f"{q}mask_embed.layers.{k}.", h, h)
    return keys


def random_official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_layout().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("norm.weight") or ".norm" in key and key.endswith("weight") and len(shape) == 1:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return random_official_state()


@pytest.fixture(scope="module")
def model(official_state) -> Dinov3HfAdapterMask2FormerForUniversalSegmentation:
    torch.manual_seed(0)
    model = Dinov3HfAdapterMask2FormerForUniversalSegmentation(tiny_config()).eval()
    for param in model.vit.parameters():
        param.data.normal_(0, 0.1)
    return load_official_head(model, official_state)


def test_official_layout_loads_strictly_and_exports_bit_for_bit(model, official_state, tmp_path):
    exported = ours_to_official_head(model)
    assert list(exported) and set(exported) == set(official_state)
    for key, tensor in official_state.items():
        assert torch.equal(exported[key], tensor), key
    saved = torch.load(save_official_head(model, tmp_path / "head.pth"), weights_only=True)
    assert set(saved) == set(official_state) and all(torch.equal(saved[k], v) for k, v in official_state.items())
    # the self-attention in_proj rows are q, k, v; the cross-attention keeps its packed in_proj
    layer = model.model.transformer_module.decoder.layers[1]
    pr = "segmentation_model.1.predictor."
    packed = official_state[pr + "transformer_self_attention_layers.1.self_attn.in_proj_weight"]
    projections = (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
    for part, proj in zip(packed.split(HIDDEN), projections):
        assert torch.equal(proj.weight, part)
    cross = "segmentation_model.1.predictor.transformer_cross_attention_layers.1.multihead_attn.in_proj_bias"
    assert torch.equal(layer.cross_attn.in_proj_bias, official_state[cross])
    pd = "segmentation_model.1.pixel_decoder."
    decoder = model.model.pixel_level_module.decoder
    encoder_layer, official_layer = decoder.encoder.layers[0], pd + "encoder.encoder.layers.0."
    assert torch.equal(encoder_layer.self_attn_layer_norm.weight, official_state[official_layer + "norm1.weight"])
    assert torch.equal(encoder_layer.final_layer_norm.weight, official_state[official_layer + "norm2.weight"])
    assert torch.equal(decoder.input_projections[0][0].weight, official_state[pd + "input_convs.0.0.weight"])
    assert torch.equal(decoder.adapter_1[1].weight, official_state[pd + "lateral_convs.0.norm.weight"])
    assert torch.equal(model.class_predictor.bias, official_state["segmentation_model.1.predictor.class_embed.bias"])
    assert torch.equal(model.adapter.norm2.running_var, official_state["segmentation_model.0.norm2.running_var"])
    # the criterion's class weights, not in the file: 1 per class, no_object_weight for "no object"
    assert model.criterion.empty_weight.tolist() == pytest.approx([1.0] * LABELS + [0.1])


def test_backbone_keys_in_the_file_go_to_the_vit(official_state):
    vit = Dinov3HfViTModel(tiny_vit_config())
    for param in vit.parameters():
        param.data.normal_(0, 0.3)
    state = {**official_state, **{f"segmentation_model.0.backbone.{k}": v for k, v in vit.state_dict().items()}}
    fresh = load_official_head(Dinov3HfAdapterMask2FormerForUniversalSegmentation(tiny_config()), state)
    for key, tensor in vit.state_dict().items():
        assert torch.equal(fresh.vit.state_dict()[key], tensor), key
    partial = {k: v for k, v in state.items() if not k.startswith("segmentation_model.0.backbone.blocks.3.")}
    with pytest.raises(CheckpointError, match="missing keys.*blocks.3"):
        load_official_head(Dinov3HfAdapterMask2FormerForUniversalSegmentation(tiny_config()), partial)


def test_loading_onto_the_meta_device_materialises_every_tensor(model, official_state):
    """A model built on the meta device gets the file's tensors assigned, the ViT from the file's backbone keys and
    `criterion.empty_weight` synthesised."""
    state = {**official_state, **{f"segmentation_model.0.backbone.{k}": v for k, v in model.vit.state_dict().items()}}
    with torch.device("meta"):
        meta = Dinov3HfAdapterMask2FormerForUniversalSegmentation(tiny_config())
    load_official_head(meta, state)
    assert not [k for k, v in meta.state_dict().items() if v.is_meta]
    assert meta.criterion.empty_weight.tolist() == pytest.approx([1.0] * LABELS + [0.1])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(meta.eval()(x).class_queries_logits, model(x).class_queries_logits)


def test_release_layout_on_the_meta_device():
    """The 7B release: 479 head keys (187 adapter, 292 Mask2Former); parameter counts of the official modules."""
    shapes = official_head_shapes(official_head_config("dinov3_vit7b16_ms"))
    adapter = {k: s for k, s in shapes.items() if k.startswith("segmentation_model.0.")}
    assert (len(shapes), len(adapter)) == (479, 187)
    buffers = ("running_mean", "running_var", "num_batches_tracked")

    def count(prefix: str, want_buffers: bool = False) -> int:
        return sum(
            math.prod(s) for k, s in shapes.items() if k.startswith(prefix) and k.endswith(buffers) == want_buffers
        )

    assert count("segmentation_model.0.") == 227_084_736
    assert count("segmentation_model.1.pixel_decoder.") == 233_719_168
    assert count("segmentation_model.1.predictor.") == 466_616_471
    assert count("segmentation_model.0.", want_buffers=True) == 34_442
    expected = {
        "segmentation_model.0.level_embed": (3, 4096),
        "segmentation_model.0.spm.fc3.weight": (4096, 256, 1, 1),
        "segmentation_model.0.interactions.0.extractor.attn.sampling_offsets.weight": (128, 4096),
        "segmentation_model.0.interactions.3.extra_extractors.1.attn.value_proj.weight": (2048, 4096),
        "segmentation_model.0.interactions.2.extractor.ffn.dwconv.dwconv.weight": (1024, 1, 3, 3),
        "segmentation_model.0.up.weight": (4096, 4096, 2, 2),
        "segmentation_model.1.pixel_decoder.input_convs.0.0.weight": (2048, 4096, 1, 1),
        "segmentation_model.1.pixel_decoder.encoder.encoder.layers.5.self_attn.sampling_offsets.weight": (384, 2048),
        "segmentation_model.1.pixel_decoder.encoder.encoder.layers.5.linear1.weight": (4096, 2048),
        "segmentation_model.1.predictor.transformer_self_attention_layers.8.self_attn.in_proj_weight": (6144, 2048),
        "segmentation_model.1.predictor.class_embed.weight": (151, 2048),
        "segmentation_model.1.predictor.query_feat.weight": (100, 2048),
    }
    assert {k: shapes[k] for k in expected} == expected


def test_vit_layers_feed_strides_4_8_16_32(model):
    """With the SPM projections, extractor outputs, `up` and level embedding zeroed and BatchNorm at identity, the
    adapter's maps are the ViT's normed layers 0..3 bilinearly resized to strides 4, 8, 16, 32, / sqrt(1 + eps)."""
    adapter = Dinov3HfAdapterMask2FormerForUniversalSegmentation(tiny_config()).eval().adapter
    adapter.backbone.load_state_dict(model.vit.state_dict())
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if not name.startswith("backbone.") and not name.startswith("norm"):
                param.normal_(0, 0.1)
            if name.startswith(("spm.fc", "up.", "level_embed")) or ".output_proj." in name or ".ffn.fc2." in name:
                param.zero_()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = adapter(x).feature_maps
        layers = model.vit.get_intermediate_layers(x, n=[0, 1, 2, 3], reshape=True, norm=True)
    for stride, got, layer in zip((4, 8, 16, 32), maps, layers):
        expected = F.interpolate(layer, size=(64 // stride, 96 // stride), mode="bilinear", align_corners=False)
        torch.testing.assert_close(got, expected / math.sqrt(1 + 1e-5), atol=1e-5, rtol=1e-5)


def hand_adapter(adapter, x: torch.Tensor) -> list[torch.Tensor]:
    """The adapter's forward composed step by step from its parts (official `DINOv3_Adapter.forward` order)."""
    height, width = x.shape[-2:]
    h, w = height // 16, width // 16
    c1 = adapter.spm.fc1(adapter.spm.stem(x))
    s2 = adapter.spm.conv2(adapter.spm.stem(x))
    s3 = adapter.spm.conv3(s2)
    s4 = adapter.spm.conv4(s3)
    pairs = ((adapter.spm.fc2, s2), (adapter.spm.fc3, s3), (adapter.spm.fc4, s4))
    tokens = [fc(s).flatten(2).transpose(1, 2) for fc, s in pairs]
    c = torch.cat([t + adapter.level_embed[k] for k, t in enumerate(tokens)], dim=1)
    feats = adapter.backbone.get_intermediate_layers(x, n=[0, 1, 2, 3], norm=True)
    refs = reference_points([(height // 8, width // 8), (h, w), (height // 32, width // 32)], x.device)
    chain = [(adapter.interactions[k].extractor, feats[k]) for k in range(4)]
    chain += [(extra, feats[3]) for extra in adapter.interactions[3].extra_extractors]
    for ext, feat in chain:
        c = c + ext.attn(ext.query_norm(c), refs, ext.feat_norm(feat), [(h, w)])
        c = c + ext.ffn.fc2(F.gelu(ext.ffn.dwconv(ext.ffn.fc1(ext.ffn_norm(c)), h, w)))
    n2, n3 = 4 * h * w, h * w
    c2 = c[:, :n2].transpose(1, 2).reshape(1, D, 2 * h, 2 * w)
    c3 = c[:, n2 : n2 + n3].transpose(1, 2).reshape(1, D, h, w)
    c4 = c[:, n2 + n3 :].transpose(1, 2).reshape(1, D, h // 2, w // 2)
    c1 = adapter.up(c2) + c1
    outs = []
    for k, (m, norm) in enumerate(zip((c1, c2, c3, c4), (adapter.norm1, adapter.norm2, adapter.norm3, adapter.norm4))):
        vit_map = feats[k].transpose(1, 2).reshape(1, D, h, w)
        outs.append(norm(m + F.interpolate(vit_map, size=m.shape[-2:], mode="bilinear", align_corners=False)))
    return outs


def test_adapter_forward_matches_its_steps_composed_by_hand(model):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = model.adapter(x).feature_maps
        expected = hand_adapter(model.adapter, x)
    assert [tuple(g.shape[-2:]) for g in got] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_dwconv_runs_one_depthwise_conv_per_token_grid():
    torch.manual_seed(0)
    dw = DWConv(3)
    h, w = 4, 6
    grids = [(2 * h, 2 * w), (h, w), (h // 2, w // 2)]
    parts = [torch.randn(2, gh * gw, 3) for gh, gw in grids]
    got = dw(torch.cat(parts, dim=1), h, w)
    expected = []
    for part, (gh, gw) in zip(parts, grids):
        plane = part.transpose(1, 2).reshape(2, 3, gh, gw)
        out = F.conv2d(plane, dw.dwconv.weight, dw.dwconv.bias, padding=1, groups=3)
        expected.append(out.flatten(2).transpose(1, 2))
    torch.testing.assert_close(got, torch.cat(expected, dim=1))


def test_reference_points_are_cell_centres():
    points = reference_points([(2, 4), (1, 2)], torch.device("cpu"))
    expected = [[(j + 0.5) / 4, (i + 0.5) / 2] for i in range(2) for j in range(4)] + [[0.25, 0.5], [0.75, 0.5]]
    assert points.shape == (1, 10, 1, 2)
    torch.testing.assert_close(points[0, :, 0], torch.tensor(expected))


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (96, 128)])
def test_output_shapes_batch_independence_and_determinism(model, size):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = model(x)
        again = model(x)
        single = model(x[1:])
    assert out.class_queries_logits.shape == (2, QUERIES, LABELS + 1)
    assert out.masks_queries_logits.shape == (2, QUERIES, size[0] // 4, size[1] // 4)
    assert torch.equal(out.masks_queries_logits, again.masks_queries_logits)
    torch.testing.assert_close(single.class_queries_logits[0], out.class_queries_logits[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(single.masks_queries_logits[0], out.masks_queries_logits[1], atol=1e-4, rtol=1e-4)


def hand_scores(model, x: torch.Tensor, size, dtype=None) -> torch.Tensor:
    """sum_q softmax(class)[q, c] (no-object dropped after the softmax) * sigmoid(mask logits resized to `size`)."""
    with torch.no_grad():
        out = model(x)
    probs = out.class_queries_logits.softmax(-1)[..., :LABELS]
    masks = F.interpolate(out.masks_queries_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    if dtype is not None:
        probs, masks = probs.to(dtype), masks.to(dtype)
    total = 0
    for q in range(QUERIES):
        total = total + probs[:, q, :, None, None] * masks[:, q, None]
    return total


def test_slide_inference_matches_a_hand_loop(model):
    """96 x 160, crop 64, stride (32, 40): rows start at 0, 32; columns at 0, 40, 80 and, flush with the right
    border, 96 instead of 120 (8 overlapping windows)."""
    torch.manual_seed(2)
    x = torch.randn(1, 3, 96, 160)
    total = torch.zeros(1, LABELS, 96, 160)
    count = torch.zeros(96, 160)
    for y in (0, 32):
        for xs in (0, 40, 80, 96):
            window = x[..., y : y + 64, xs : xs + 64]
            total[..., y : y + 64, xs : xs + 64] += hand_scores(model, window, (64, 64), torch.float32)
            count[y : y + 64, xs : xs + 64] += 1
    got = model.slide_inference(x, crop_size=64, stride=(32, 40), dtype=torch.float32)
    torch.testing.assert_close(got, total / count, atol=1e-5, rtol=1e-5)
    assert count.min() == 1 and count.max() == 6
    # bf16 products (Meta's slide mode) stay close to fp32
    torch.testing.assert_close(model.slide_inference(x, 64, (32, 40)), got, atol=2e-2, rtol=0)
    # a crop larger than both sides becomes the shorter side, square: 64 x 64 windows at columns 0 and 32 of 64 x 96
    small = x[..., :64, :96]
    expected = torch.zeros(1, LABELS, 64, 96)
    weights = torch.zeros(64, 96)
    for xs in (0, 32):
        expected[..., xs : xs + 64] += hand_scores(model, small[..., xs : xs + 64], (64, 64), torch.float32)
        weights[:, xs : xs + 64] += 1
    got = model.slide_inference(small, crop_size=128, stride=32, dtype=torch.float32)
    torch.testing.assert_close(got, expected / weights, atol=1e-5, rtol=1e-5)


def test_whole_mode_and_post_processing(model):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 96, 64)
    resized = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    got = model.make_inference(x, rescale_to=(50, 70), mode="whole", whole_size=(64, 64))
    torch.testing.assert_close(got, hand_scores(model, resized, (50, 70)), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        out = model(x)
    maps = model.post_process_semantic_segmentation(out, target_sizes=[(50, 70), (96, 64)])
    assert [m.shape for m in maps] == [(50, 70), (96, 64)]
    assert torch.equal(maps[1], hand_scores(model, x[1:], (96, 64))[0].argmax(0))
    slide = model.make_inference(x[:1], rescale_to=(48, 32), mode="slide", crop_size=64, stride=32)
    assert slide.shape == (1, LABELS, 48, 32)
    with pytest.raises(ValueError, match="'slide' or 'whole'"):
        model.make_inference(x, rescale_to=(8, 8), mode="tiles")


def test_auto_class_and_save_pretrained_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModelForUniversalSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is Dinov3HfAdapterMask2FormerForUniversalSegmentation
    assert loaded.config.backbone_config.interaction_indexes == [0, 1, 2, 3]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).masks_queries_logits, model(x).masks_queries_logits)


def test_clear_errors(model):
    with pytest.raises(ValueError, match=r"multiples of 32; got 144x160\. Pad or resize the image, e\.g\. to 160x160"):
        model(torch.randn(1, 3, 144, 160))
    too_deep = r"interaction_indexes=\[9, 19, 29, 39\].*num_hidden_layers=4.*interaction_indexes=\[0, 1, 2, 3\]"
    with pytest.raises(ValueError, match=too_deep):
        Dinov3HfAdapterMask2FormerConfig(backbone_config=tiny_vit_config())
    with pytest.raises(CheckpointError, match="linear classifier"):
        load_official_head(model, {"weight": torch.zeros(1000, 8192), "bias": torch.zeros(1000)})
    with pytest.raises(CheckpointError, match="Plain-DETR detector"):
        load_official_head(model, {"transformer.decoder.layers.0.norm1.weight": torch.zeros(4)})
    state = random_official_state()
    del state["segmentation_model.0.up.bias"]
    state["segmentation_model.1.predictor.query_feat.weight"] = torch.zeros(QUERIES + 1, HIDDEN)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): segmentation_model\.0\.up\.bias(.|\n)*query_feat"):
        load_official_head(model, state)


def head_fields(config: Dinov3HfAdapterMask2FormerConfig) -> dict:
    """The config without the ViT's file metadata (where it was read from, its dtype and class name)."""
    fields = config.to_diff_dict()
    for key in ("_name_or_path", "architectures", "dtype"):
        fields["backbone_config"]["vit_config"].pop(key, None)
    return fields


def test_cli_exports_the_official_file_and_converts_it_back_on_a_smaller_vit(model, official_state, tmp_path, capsys):
    """The head file alone, on a 4-block ViT: every size comes from the file (the tiny sizes differ from the
    release's in each field) and the adapter reads the official four even intervals [0, 1, 2, 3]; a too-small
    backbone for explicit indexes is named with the rule's indexes."""
    model.save_pretrained(tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "head.pth"), "--head", "dinov3_vit7b16_ms",
                 "--to", "official"]) == 0
    saved = torch.load(tmp_path / "head.pth", weights_only=True)
    assert set(saved) == set(official_state) and all(torch.equal(saved[k], v) for k, v in official_state.items())
    model.vit.save_pretrained(tmp_path / "vit")
    assert main(["convert", str(tmp_path / "head.pth"), str(tmp_path / "out"), "--head", "dinov3_vit7b16_ms",
                 "--backbone", str(tmp_path / "vit")]) == 0
    assert "ViT blocks [0, 1, 2, 3] (the official four even intervals)" in capsys.readouterr().err
    converted = AutoModelForUniversalSegmentation.from_pretrained(tmp_path / "out").eval()
    converted_config, original_config = (AutoConfig.from_pretrained(tmp_path / name) for name in ("out", "ours"))
    assert head_fields(converted_config) == head_fields(original_config)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = converted(x), model(x)
    assert torch.equal(ours.class_queries_logits, theirs.class_queries_logits)
    assert torch.equal(ours.masks_queries_logits, theirs.masks_queries_logits)
    # explicit indexes: used as given, and named when the backbone is too small for them
    assert main(["convert", str(tmp_path / "head.pth"), str(tmp_path / "out2"), "--head", "dinov3_vit7b16_ms",
                 "--backbone", str(tmp_path / "vit"), "--interaction-indexes", "0", "0", "2", "3"]) == 0
    assert "ViT blocks [0, 0, 2, 3] (--interaction-indexes)" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "head.pth"), str(tmp_path / "out3"), "--head", "dinov3_vit7b16_ms",
                 "--backbone", str(tmp_path / "vit"), "--interaction-indexes", "9", "19", "29", "39"]) == 1
    err = capsys.readouterr().err
    assert "interaction_indexes=[9, 19, 29, 39] must be 4 block indices" in err and "[0, 1, 2, 3]" in err
    assert main(["convert", str(tmp_path / "head.pth"), str(tmp_path / "out4"), "--head", "dinov3_vit7b16_lc",
                 "--backbone", str(tmp_path / "vit"), "--interaction-indexes", "0", "1", "2", "3"]) == 1
    assert "--interaction-indexes applies to --head dinov3_vit7b16_ms" in capsys.readouterr().err
    with pytest.raises(ValueError, match="interaction_indexes"):
        build_official_head_model("dinov3_vit7b16_ms", official_state, model.vit, interaction_indexes=[9, 19, 29, 39])


def test_sizes_read_from_the_file_give_the_release_config_and_the_official_layer_rule():
    """On the release's key shapes (meta tensors) the inferred config is `official_head_config`'s; the adapter's
    default blocks follow the official FOUR_EVEN_INTERVALS, with ViT-L pinned to the paper's [4, 11, 17, 23]."""
    release = official_head_config("dinov3_vit7b16_ms")
    state = {k: torch.empty(s, device="meta") for k, s in official_head_shapes(release).items()}
    inferred = official_segmentor_config_from_state(state, release.backbone_config.vit_config)
    assert inferred.to_diff_dict() == release.to_diff_dict()
    assert [four_even_intervals(depth) for depth in (12, 24, 32, 40)] == [
        [2, 5, 8, 11], [4, 11, 17, 23], [7, 15, 23, 31], [9, 19, 29, 39]
    ]
    narrow = Dinov3HfViTConfig(hidden_size=128, num_hidden_layers=40, num_attention_heads=4)
    with pytest.raises(CheckpointError, match=r"ViT of width 4096 .*hidden_size=128"):
        official_segmentor_config_from_state(state, narrow)
    with pytest.raises(CheckpointError, match="not the ADE20K Mask2Former segmentor"):
        official_segmentor_config_from_state({"weight": torch.zeros(2)}, narrow)