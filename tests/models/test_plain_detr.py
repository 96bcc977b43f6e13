"""The Plain-DETR COCO detector (`dinov3_vit7b16_de`): the key layout (written out in plain_detr_helpers.py from the
official module tree) loads strictly and exports bit-exactly; forward shapes and determinism; hand computations of
delta2bbox, the detection sine encoding, the BoxRPE bias, the encoder / decoder layers, the window layout and the
proposal anchors; post-processing, the Auto class and the object-detection pipeline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForObjectDetection, pipeline

from dinov3_hf.convert import (
    CheckpointError,
    load_official_head,
    official_head_config,
    official_head_shapes,
    save_official_head,
)
from dinov3_hf.convert.heads import build_official_head_model
from dinov3_hf.models.heads import Dinov3HfForImageClassification, Dinov3HfImageClassificationConfig
from dinov3_hf.models.heads.plain_detr import Dinov3HfForPlainDetrDetection
from dinov3_hf.models.heads.plain_detr.modeling import delta2bbox, minimum_side, sine_position_encoding, window_sizes
from dinov3_hf.processing import Dinov3HfDetectionImageProcessor, post_process_object_detection
from plain_detr_helpers import (
    CLASSES,
    FF,
    D,
    HEADS,
    HIDDEN,
    LAYERS,
    QUERIES,
    RPE,
    random_official_state,
    spec_shapes,
    tiny_config,
    tiny_detector,
    tiny_shapes,
)


@pytest.fixture(scope="module")
def model() -> Dinov3HfForPlainDetrDetection:
    return tiny_detector()


# -- layout ---------------------------------------------------------------------------------------------------------


def test_release_key_set_and_shapes_on_meta():
    config = official_head_config("dinov3_vit7b16_de")
    assert config.layers == [9, 19, 29, 39] and config.n_windows_sqrt == 3 and config.num_labels == 91
    expected = spec_shapes(768, 2048, 8, 512, 6, 6, 91, 3000, 2 * 4 * 4096)
    assert official_head_shapes(config) == expected
    assert len(expected) == 378  # 322 unique keys + 56 aliases
    with torch.device("meta"):
        detector = Dinov3HfForPlainDetrDetection(config)
    assert sum(p.numel() for k, p in detector.named_parameters() if not k.startswith("backbone.")) == 129_070_745


@pytest.mark.parametrize("aliases", [True, False])
def test_strict_load_and_bit_exact_export(model, tmp_path, aliases):
    state = random_official_state(aliases=aliases, seed=1)
    fresh = Dinov3HfForPlainDetrDetection(tiny_config())
    path = tmp_path / "head.pth"
    torch.save({"model": state, "optimizer": {}}, path)  # the container the hub reads (["model"])
    load_official_head(fresh, path)
    assert fresh.transformer.decoder.class_embed[1].weight is fresh.class_embed[1].weight  # tied
    out = save_official_head(fresh, tmp_path / "out.pth")
    written = torch.load(out, weights_only=True)["model"]
    assert set(written) == set(tiny_shapes(aliases=True))
    for key, tensor in state.items():
        assert torch.equal(written[key], tensor), key


def test_backbone_keys_routed_or_dropped(model, tmp_path):
    vit = {f"backbone.0._backbone.backbone.{k}": torch.randn_like(v) for k, v in model.backbone.state_dict().items()}
    state = {**random_official_state(), **vit}
    loaded = load_official_head(Dinov3HfForPlainDetrDetection(tiny_config()), state)
    for key, tensor in loaded.backbone.state_dict().items():
        assert torch.equal(tensor, vit[f"backbone.0._backbone.backbone.{key}"]), key
    from dinov3_hf.convert.detection_head import load_plain_detr_head

    fresh = Dinov3HfForPlainDetrDetection(tiny_config())
    before = {k: v.clone() for k, v in fresh.backbone.state_dict().items()}
    load_plain_detr_head(fresh, state, backbone="drop")
    assert all(torch.equal(before[k], v) for k, v in fresh.backbone.state_dict().items())
    bad = dict(state)
    bad.pop(next(iter(vit)))
    with pytest.raises(CheckpointError, match="backbone keys"):
        load_official_head(Dinov3HfForPlainDetrDetection(tiny_config()), bad)


def test_clear_errors_for_wrong_files():
    fresh = Dinov3HfForPlainDetrDetection(tiny_config())
    dpt = {"reassemble_blocks.projects.0.conv.weight": torch.zeros(1), "conv_depth.head.0.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="DPT depth head"):
        load_official_head(fresh, dpt)
    with pytest.raises(CheckpointError, match="linear classifier"):
        load_official_head(fresh, {"weight": torch.zeros(1000, 8192), "bias": torch.zeros(1000)})
    classifier = Dinov3HfForImageClassification(
        Dinov3HfImageClassificationConfig(backbone_config=tiny_config().backbone_config, num_labels=3)
    )
    with_vit = {**random_official_state(), "backbone.0._backbone.backbone.blocks.0.ls1.gamma": torch.zeros(D)}
    with pytest.raises(CheckpointError, match="looks like the Plain-DETR detector"):
        load_official_head(classifier, with_vit)  # a detector file given for another head is named too
    state = random_official_state()
    state["transformer.decoder.class_embed.0.bias"] += 1
    with pytest.raises(CheckpointError, match="aliases that differ"):
        load_official_head(fresh, state)
    state = random_official_state()
    del state["transformer.decoder.layers.1.cross_attn.cpb_mlp2.2.weight"]
    with pytest.raises(CheckpointError, match="cpb_mlp2.2.weight"):
        load_official_head(fresh, state)


def test_build_from_file_infers_the_head_config(model, tmp_path):
    path = tmp_path / "head.pth"
    torch.save({"model": random_official_state(seed=2)}, path)
    built = build_official_head_model("dinov3_vit7b16_de", path, model.backbone)
    c = built.config
    assert (c.hidden_dim, c.nheads, c.dim_feedforward, c.dec_layers, c.num_labels) == (HIDDEN, HEADS, FF, 2, CLASSES)
    assert (c.num_queries_one2one, c.decoder_rpe_hidden_dim, c.layers) == (QUERIES, RPE, [0, 1, 2, 3])


# -- geometry, by hand ----------------------------------------------------------------------------------------------


def test_delta2bbox_by_hand():
    proposals = torch.tensor([[[100.0, 50.0, 20.0, 10.0]]])
    deltas = torch.tensor([[[0.5, -1.0, math.log(2.0), 10.0]]])  # dh is clamped to |ln(16 / 1000)|
    max_shape = (torch.tensor([[2000.0]]), torch.tensor([[120.0]]))
    # centre (110, 40), size (40, 10 * 62.5): x 90..130 -> clamped to 120; y -272.5..352.5 -> 0..352.5
    assert torch.allclose(delta2bbox(proposals, deltas, max_shape), torch.tensor([[[90.0, 0.0, 120.0, 352.5]]]))
    max_shape = (torch.tensor([[300.0]]), torch.tensor([[120.0]]))  # y clamped to the valid height
    assert torch.allclose(delta2bbox(proposals, deltas, max_shape), torch.tensor([[[90.0, 0.0, 120.0, 300.0]]]))


def test_detection_sine_encoding_by_hand():
    mask = torch.tensor([[[False, False, True], [False, False, True]]])  # the last column is padding
    pos = sine_position_encoding(mask, 4)
    assert pos.shape == (1, 8, 2, 3)
    for i in range(2):
        for j in range(2):
            y = (i + 1 - 0.5) / (2 + 1e-6) * 2 * math.pi
            x = (j + 1 - 0.5) / (2 + 1e-6) * 2 * math.pi
            for k in range(4):
                t = 10000 ** (2 * (k // 2) / 4)
                f = math.sin if k % 2 == 0 else math.cos
                assert pos[0, k, i, j].item() == pytest.approx(f(y / t), abs=1e-5)
                assert pos[0, 4 + k, i, j].item() == pytest.approx(f(x / t), abs=1e-5)


def test_box_rpe_bias_by_hand(model):
    attn = model.transformer.decoder.layers[0].cross_attn
    boxes = torch.tensor([[[30.0, 20.0, 24.0, 16.0], [5.0, 40.0, 60.0, 8.0]]])
    pad = torch.tensor([[False] * 5 + [True]])  # grid 2 x 3, last cell padded
    bias = attn.rpe_bias(boxes, (2, 3), pad)

    def mlp(seq, a, b):
        w0, b0, w2 = seq[0].weight, seq[0].bias, seq[2].weight
        return w2 @ torch.relu(w0 @ torch.tensor([a, b]) + b0)

    for q, (cx, cy, w, h) in enumerate(boxes[0].tolist()):
        x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        for i in range(2):
            for j in range(3):
                u, v = 16 * (j + 0.5), 16 * (i + 0.5)
                want = mlp(attn.cpb_mlp2, y1 - v, y2 - v) + mlp(attn.cpb_mlp1, x1 - u, x2 - u)
                want = want - 100.0 * (i * 3 + j == 5)
                assert torch.allclose(bias[0, :, q, i * 3 + j], want, atol=1e-5)


def test_window_layout_by_hand(model):
    x = torch.randn(1, 3, 112, 130, generator=torch.Generator().manual_seed(3))
    rows, cols = [48, 48, 16], [48, 48, 34]  # ceil(floor(112/3) / 16) * 16 = 48, remainder 16; 130: 48, 48, 34
    assert window_sizes(112, 3, 16) == rows and window_sizes(130, 3, 16) == cols

    def feats(t):
        maps = model.backbone.get_intermediate_layers(t, n=[0, 1, 2, 3], reshape=True, norm=True)
        return torch.cat(maps, 1)

    with torch.no_grad():
        windows = torch.cat(
            [
                torch.cat([feats(x[:, :, r0 : r0 + r, c0 : c0 + c]) for c0, c in zip((0, 48, 96), cols)], dim=3)
                for r0, r in zip((0, 48, 96), rows)
            ],
            dim=2,
        )
        assert windows.shape[-2:] == (3 + 3 + 1, 3 + 3 + 2)  # the 34-px window drops its last 2 px
        view = feats(F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True))
        view = F.interpolate(view, size=(7, 8), mode="bilinear", antialias=True)
        got, mask = model.window_features(x, torch.zeros(1, 112, 130, dtype=torch.bool))
    assert torch.equal(got, torch.cat((view, windows), dim=1)) and not mask.any()


def test_windows_below_one_patch_raise():
    assert minimum_side(3, 16) == 112
    with pytest.raises(ValueError, match=r"at least 16 px .* at least 112 px .* nearest valid size above 100 is 112"):
        window_sizes(100, 3, 16)
    detector = Dinov3HfForPlainDetrDetection(tiny_config())
    with pytest.raises(ValueError, match="every window needs at least 16 px"):
        detector(torch.zeros(1, 3, 96, 60))
    for side in range(112, 400):  # every side from the minimum on works
        assert min(window_sizes(side, 3, 16)) >= 16
    many_queries = Dinov3HfForPlainDetrDetection(tiny_config(num_queries_one2one=200)).eval()
    with pytest.raises(ValueError, match="gives 190 proposals but the detector keeps 200"):
        many_queries(torch.zeros(1, 3, 96, 96))  # 12 x 12 + 6 x 6 + 3 x 3 + 1 x 1 proposals


def test_proposal_anchors_by_hand(model):
    """96 x 96: level-0 grid 12 x 12 (valid extent 96 px); 50-px anchors fit, the 100-px and larger ones do not and
    become the constant max(H0, W0) * 8 = 96."""
    memory = torch.randn(1, 6, 6, HIDDEN)
    with torch.no_grad():
        _, anchors, (vh, vw) = model.transformer.proposals(memory, torch.zeros(1, 6, 6, dtype=torch.bool))
    assert anchors.shape == (1, 144 + 36 + 9 + 1, 4) and vh.item() == vw.item() == 96
    j, i = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="xy")
    level0 = torch.stack(((j + 0.5) * 8, (i + 0.5) * 8, torch.full_like(j, 50), torch.full_like(j, 50)), -1)
    assert torch.equal(anchors[0, :144], level0.reshape(-1, 4))
    assert (anchors[0, 144:] == 96).all()


def _attention(q, k, v, heads, bias=None):
    """softmax(q k^T / sqrt(d_head) + bias) v per head, written out; q, k, v [B, L, d] already projected."""
    b, lq, d = q.shape
    q, k, v = (x.reshape(b, x.shape[1], heads, d // heads).transpose(1, 2) for x in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads) + (0 if bias is None else bias)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, d)


def _packed_mha(mha, q, k, v, heads, key_padding=None):
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    bias = None if key_padding is None else torch.where(key_padding, -torch.inf, 0.0)[:, None, None, :]
    out = _attention(q @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv, heads, bias)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def test_encoder_and_decoder_layers_by_hand(model):
    """Post-norm encoder layer and pre-norm BoxRPE decoder layer, each written out from the official formulas."""
    gen = torch.Generator().manual_seed(7)
    src, pos = torch.randn(1, 6, HIDDEN, generator=gen), torch.randn(1, 6, HIDDEN, generator=gen)
    pad = torch.tensor([[False] * 5 + [True]])
    enc = model.transformer.encoder.layers[0]
    with torch.no_grad():
        s = enc.norm1(src + _packed_mha(enc.self_attn, src + pos, src + pos, src, HEADS, pad))
        want = enc.norm2(s + enc.linear2(torch.relu(enc.linear1(s))))
        assert torch.allclose(enc(src, pos, pad), want, atol=1e-5)

        dec = model.transformer.decoder.layers[1]
        tgt, qpos = torch.randn(1, 3, HIDDEN, generator=gen), torch.randn(1, 3, HIDDEN, generator=gen)
        boxes = torch.tensor([[[20.0, 10.0, 16.0, 12.0], [8.0, 30.0, 40.0, 20.0], [40.0, 24.0, 8.0, 8.0]]])
        t = dec.norm2(tgt)
        x = tgt + _packed_mha(dec.self_attn, t + qpos, t + qpos, t, HEADS)
        ca, t = dec.cross_attn, dec.norm1(x)
        bias = ca.rpe_bias(boxes, (2, 3), pad)
        x = x + ca.proj(_attention(ca.q(t + qpos), ca.k(src + pos), ca.v(src), HEADS, bias))
        want = x + dec.linear2(torch.relu(dec.linear1(dec.norm3(x))))
        assert torch.allclose(dec(tgt, qpos, boxes, src + pos, src, (2, 3), pad), want, atol=1e-5)


def test_queries_are_the_top_proposals_by_class_0(model):
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(8)))
    top = out.enc_logits[0, :, 0].topk(QUERIES).indices
    assert torch.equal(out.reference_boxes[0], out.enc_boxes[0, top])


# -- forward --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(96, 96), (112, 130), (144, 96)])
def test_forward_shapes_and_determinism(model, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.logits.shape == (2, QUERIES, CLASSES) and a.pred_boxes.shape == (2, QUERIES, 4)
    assert a.intermediate_logits.shape == (2, LAYERS, QUERIES, CLASSES)
    assert torch.equal(a.intermediate_boxes[:, -1], a.pred_boxes)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.pred_boxes, b.pred_boxes)
    assert a.image_sizes.tolist() == [list(size)] * 2
    boxes = a.pred_boxes
    assert (boxes[..., 2:] >= 0).all() and (boxes[..., :2] <= torch.tensor(size[::-1]) + 1e-3).all()


def test_padded_batch(model):
    x = torch.randn(2, 3, 144, 144)
    mask = torch.ones(2, 144, 144, dtype=torch.long)
    mask[1, 112:] = 0
    mask[1, :, 96:] = 0
    with torch.no_grad():
        out = model(x, pixel_mask=mask)
        _, grid_mask = model.window_features(x, ~mask.bool())
    assert out.image_sizes.tolist() == [[144, 144], [112, 96]]
    assert grid_mask[1].sum() == 9 * 9 - 7 * 6 and not grid_mask[0].any()
    # valid extent: unpadded rows of column 0 / columns of row 0 of the stride-8 level-0 mask, times 8
    with torch.no_grad():
        _, _, (vh, vw) = model.transformer.proposals(torch.randn(2, 9, 9, HIDDEN), grid_mask)
    assert vh.flatten().tolist() == [144, 112] and vw.flatten().tolist() == [144, 96]
    # the refined boxes of the padded image stay inside its valid extent (the stride-8 level-0 grid)
    assert (out.pred_boxes[1, :, 0] <= 96 + 1e-3).all() and (out.pred_boxes[1, :, 1] <= 112 + 1e-3).all()


# -- post-processing, Auto class, pipeline --------------------------------------------------------------------------


def test_post_process_by_hand():
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 2, 1], logits[0, 0, 0] = 2.0, 1.0
    boxes = torch.tensor([[[10.0, 10.0, 40.0, 8.0], [0, 0, 1, 1], [50.0, 30.0, 20.0, 100.0]]])
    (res,) = post_process_object_detection(logits, boxes, [[60, 45]], threshold=0.5, target_sizes=[[120, 90]])
    assert res["labels"].tolist() == [1, 0]
    assert torch.allclose(res["scores"], torch.sigmoid(torch.tensor([2.0, 1.0])))
    # query 2: x 40..60 -> 40..45, y -20..80 -> 0..60; query 0: x -10..30 -> 0..30, y 6..14; then x 2, y 2
    assert torch.allclose(res["boxes"], torch.tensor([[80.0, 0.0, 90.0, 120.0], [0.0, 12.0, 60.0, 28.0]]))


def test_auto_class_round_trip_and_pipeline(model, tmp_path):
    model.save_pretrained(tmp_path / "det")
    loaded = AutoModelForObjectDetection.from_pretrained(tmp_path / "det")
    assert type(loaded) is Dinov3HfForPlainDetrDetection
    assert loaded.transformer.decoder.bbox_embed[0].layers[2].weight is loaded.bbox_embed[0].layers[2].weight
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    processor = Dinov3HfDetectionImageProcessor.for_model_config(model.config, size={"shortest_edge": 96}, top_k=5)
    image = Image.fromarray((torch.rand(150, 200, 3) * 255).byte().numpy())
    detector = pipeline("object-detection", model=loaded, image_processor=processor)
    found = detector(image, threshold=0.0)
    inputs = processor(image, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == (96, 144)
    with torch.no_grad():
        direct = processor.post_process_object_detection(loaded(**inputs), 0.0, [[150, 200]])[0]
    assert len(found) == 5 and [d["score"] for d in found] == pytest.approx(direct["scores"].tolist())
    assert found[0]["box"]["xmax"] <= 200 and found[0]["label"] == loaded.config.id2label[direct["labels"][0].item()]
