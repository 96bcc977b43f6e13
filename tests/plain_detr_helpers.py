"""Tiny Plain-DETR detectors and official detector state dicts written out from the official module tree
(`dinov3/eval/detection/models/detr.py`, `transformer.py`), shared by
tests/models/test_plain_detr.py and tests/convert/test_official_detector.py."""

from __future__ import annotations

import torch

from dinov3_hf import Dinov3HfViTConfig
from dinov3_hf.convert import load_official_head
from dinov3_hf.models.heads.plain_detr import Dinov3HfForPlainDetrDetection, Dinov3HfPlainDetrConfig

D, HIDDEN, HEADS, RPE, FF, LAYERS, CLASSES, QUERIES = 64, 64, 4, 32, 96, 2, 5, 12


def tiny_config(**overrides) -> Dinov3HfPlainDetrConfig:
    """ViT D=64, 4 blocks, 4 heads with the 7B's structural flags; a 2 + 2 layer detector of width 64."""
    vit = Dinov3HfViTConfig.from_preset("vit7b16", hidden_size=D, num_hidden_layers=4, num_attention_heads=4)
    fields = dict(
        hidden_dim=HIDDEN, nheads=HEADS, dim_feedforward=FF, num_encoder_layers=LAYERS, dec_layers=LAYERS,
        num_queries_one2one=QUERIES, num_queries_one2many=QUERIES, topk=30, decoder_rpe_hidden_dim=RPE,
        num_labels=CLASSES,
    )
    return Dinov3HfPlainDetrConfig(backbone_config=vit, **{**fields, **overrides})


def spec_shapes(d, ff, heads, rpe, n_enc, n_dec, classes, queries, in_channels, aliases=True) -> dict:
    """{key: shape} of `PlainDETRReParam.state_dict()` minus the backbone, from the official module tree."""
    s = {"transformer.level_embed": (1, d)}

    def linear(prefix, o, i, bias=True):
        s[prefix + ".weight"] = (o, i)
        if bias:
            s[prefix + ".bias"] = (o,)

    def norm(prefix, c):
        s[prefix + ".weight"], s[prefix + ".bias"] = (c,), (c,)

    def mha(prefix):
        s[prefix + ".in_proj_weight"], s[prefix + ".in_proj_bias"] = (3 * d, d), (3 * d,)
        linear(prefix + ".out_proj", d, d)

    for i in range(n_dec):
        p = f"transformer.decoder.layers.{i}"
        for mlp in ("cpb_mlp1", "cpb_mlp2"):
            linear(f"{p}.cross_attn.{mlp}.0", rpe, 2)
            linear(f"{p}.cross_attn.{mlp}.2", heads, rpe, bias=False)
        for name in ("q", "k", "v", "proj"):
            linear(f"{p}.cross_attn.{name}", d, d)
        mha(f"{p}.self_attn")
        for n in ("norm1", "norm2", "norm3"):
            norm(f"{p}.{n}", d)
        linear(f"{p}.linear1", ff, d)
        linear(f"{p}.linear2", d, ff)
    norm("transformer.decoder.final_layer_norm", d)
    for i in range(n_enc):
        p = f"transformer.encoder.layers.{i}"
        mha(f"{p}.self_attn")
        linear(f"{p}.linear1", 2048, d)  # the encoder FFN is always 2048
        linear(f"{p}.linear2", d, 2048)
        norm(f"{p}.norm1", d)
        norm(f"{p}.norm2", d)
    linear("transformer.enc_output", d, d)
    norm("transformer.enc_output_norm", d)
    linear("transformer.pos_trans", 2 * d, 2 * d)
    norm("transformer.pos_trans_norm", 2 * d)
    for key in ("0.0", "2.0", "3.0", "3.3"):
        s[f"transformer.enc_output_proj.{key}.weight"] = (d, d, 2, 2)
        s[f"transformer.enc_output_proj.{key}.bias"] = (d,)
    norm("transformer.enc_output_proj.3.1.ln", d)
    owners = ("", "transformer.decoder.") if aliases else ("",)
    for owner in owners:
        for i in range(n_dec + 1):
            linear(f"{owner}class_embed.{i}", classes, d)
            linear(f"{owner}bbox_embed.{i}.layers.0", d, d)
            linear(f"{owner}bbox_embed.{i}.layers.1", d, d)
            linear(f"{owner}bbox_embed.{i}.layers.2", 4, d)
    s["query_embed.weight"] = (queries, d)
    s["input_proj.0.0.weight"], s["input_proj.0.0.bias"] = (d, in_channels, 1, 1), (d,)
    norm("input_proj.0.1", d)
    return s


def tiny_shapes(aliases=True) -> dict:
    return spec_shapes(HIDDEN, FF, HEADS, RPE, LAYERS, LAYERS, CLASSES, 2 * QUERIES, 2 * 4 * D, aliases)


def random_official_state(aliases=True, seed=0) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout; aliases equal their top-level modules (the same objects upstream)."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.1 * torch.randn(shape, generator=gen) for k, shape in tiny_shapes(aliases=False).items()}
    if aliases:
        for key in list(state):
            if key.startswith(("class_embed.", "bbox_embed.")):
                state["transformer.decoder." + key] = state[key].clone()
    return state


def tiny_detector() -> Dinov3HfForPlainDetrDetection:
    """A tiny detector in eval mode: random ViT weights (norm scales near 1), a random official head loaded."""
    torch.manual_seed(0)
    m = Dinov3HfForPlainDetrDetection(tiny_config())
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.normal_(0, 0.05) if p.ndim > 1 else p.uniform_(0.5, 1.5)
    load_official_head(m, random_official_state())
    return m.eval()
