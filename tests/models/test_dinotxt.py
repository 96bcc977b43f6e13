"""An official-layout dino.txt checkpoint (keys written out here from the official `dinov3/eval/text/` module
names) loads strictly; the image embedding is [CLS ; mean patch] of the vision head output and the text embedding is
read at EOT."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from transformers import AutoModel, AutoModelForZeroShotImageClassification

from dinov3_hf import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import main
from dinov3_hf.convert import CheckpointError
from dinov3_hf.convert.dinotxt import load_official_dinotxt, ours_to_official

PRESET = "dinov3_vitl16_dinotxt_tet1280d20h24l"
# the preset fixes 20 text heads; the sizes below are read from the file
TEXT, TEXT_LAYERS, VOCAB, CONTEXT, HEAD_BLOCKS = 40, 2, 49408, 77, 2


def official_head_state(backbone_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the official key names and shapes of the vision-head-and-text-encoder file."""
    gen = torch.Generator().manual_seed(seed)
    d, ffn = backbone_dim, -(-int(4 * backbone_dim * 2 / 3) // 64) * 64
    shapes = {"logit_scale": (1,)}
    for i in range(HEAD_BLOCKS):
        p = f"visual_model.head.blocks.{i}."
        shapes.update({
            p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "attn.qkv.weight": (3 * d, d),
            p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,), p + "ls1.gamma": (d,),
            p + "norm2.weight": (d,), p + "norm2.bias": (d,), p + "mlp.w1.weight": (ffn, d), p + "mlp.w1.bias": (ffn,),
            p + "mlp.w2.weight": (ffn, d), p + "mlp.w2.bias": (ffn,), p + "mlp.w3.weight": (d, ffn),
            p + "mlp.w3.bias": (d,), p + "ls2.gamma": (d,),
        })
    shapes.update({"visual_model.head.ln_final.weight": (d,), "visual_model.head.ln_final.bias": (d,)})
    t = "text_model.backbone."
    shapes.update({t + "token_embedding.weight": (VOCAB, TEXT), t + "positional_embedding": (CONTEXT, TEXT)})
    for i in range(TEXT_LAYERS):
        p = f"{t}blocks.{i}."
        shapes.update({
            p + "attention_norm.weight": (TEXT,), p + "attention_norm.bias": (TEXT,),
            p + "attention.qkv.weight": (3 * TEXT, TEXT), p + "attention.proj.weight": (TEXT, TEXT),
            p + "attention.proj.bias": (TEXT,), p + "ffn_norm.weight": (TEXT,), p + "ffn_norm.bias": (TEXT,),
            p + "feed_forward.fc1.weight": (4 * TEXT, TEXT), p + "feed_forward.fc1.bias": (4 * TEXT,),
            p + "feed_forward.fc2.weight": (TEXT, 4 * TEXT), p + "feed_forward.fc2.bias": (TEXT,),
        })
    shapes.update({t + "ln_final.weight": (TEXT,), t + "ln_final.bias": (TEXT,)})
    shapes["text_model.head.linear_projection.weight"] = (2 * d, TEXT)
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        if key == "logit_scale":
            state[key] = torch.tensor([2.5])
        elif "norm" in key and key.endswith("weight") or key.endswith("ln_final.weight"):
            state[key] = 1 + 0.1 * noise
        elif key.endswith("gamma"):
            state[key] = 0.5 + 0.1 * noise
        else:
            state[key] = 0.1 * noise
    return state


@pytest.fixture(scope="module")
def backbone() -> Dinov3HfViTModel:
    config = Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=1, rope_rescale=None)  # 384-d, one block
    return randomize_(Dinov3HfViTModel(config), seed=1).eval()


@pytest.fixture(scope="module")
def official(backbone) -> dict[str, torch.Tensor]:
    return official_head_state(backbone.config.hidden_size)


@pytest.fixture(scope="module")
def model(official, backbone) -> Dinov3HfDinoTxtModel:
    return load_official_dinotxt(official, backbone, arch=PRESET)


def test_official_layout_loads_strictly(official, backbone, model):
    config = model.config
    assert (config.text_hidden_size, config.text_num_hidden_layers, config.text_num_attention_heads) == (40, 2, 20)
    assert config.vision_head_layers == 2 and config.embed_dim == 768
    assert model.logit_scale.item() == pytest.approx(2.5)
    torch.testing.assert_close(
        model.text_projection.weight, official["text_model.head.linear_projection.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        model.text_model.blocks[1].mlp.fc1.weight, official["text_model.backbone.blocks.1.feed_forward.fc1.weight"]
    )
    assert ours_to_official(model).keys() == official.keys()
    assert all(torch.equal(v, official[k]) for k, v in ours_to_official(model).items())
    assert all(not p.requires_grad for p in model.backbone.parameters())

    with pytest.raises(CheckpointError, match=r"missing keys \(1\): text_model.backbone.ln_final.bias"):
        load_official_dinotxt({k: v for k, v in official.items() if k != "text_model.backbone.ln_final.bias"}, backbone,
                              arch=PRESET)
    extra = dict(official, **{"visual_model.head.blocks.0.attn.qkv.bias": torch.zeros(3 * 384)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): visual_model.head.blocks.0.attn.qkv.bias"):
        load_official_dinotxt(extra, backbone, arch=PRESET)
    bad = dict(official, **{"visual_model.head.ln_final.weight": torch.ones(385)})
    with pytest.raises(CheckpointError, match=r"misshaped keys .* \(385,\), model \(384,\)"):
        load_official_dinotxt(bad, backbone, arch=PRESET)


def test_image_embedding_is_cls_and_mean_patch_of_the_head_output(model):
    captured = {}
    model.vision_head.register_forward_hook(lambda module, args, out: captured.update(head=out))
    pixels = torch.randn(2, 3, 48, 32)
    embeds = model.get_image_features(pixels)
    head = captured["head"]  # [B, 1 + 4 registers + 3*2 patches, 384]
    assert head.shape == (2, 1 + 4 + 6, 384)
    torch.testing.assert_close(embeds, torch.cat([head[:, 0], head[:, 5:].mean(dim=1)], dim=-1))
    # the head sees the backbone's final-normed tokens; its blocks run without RoPE
    with torch.no_grad():
        tokens = model.backbone(pixels).last_hidden_state
        x = tokens
        for block in model.vision_head.blocks:
            h = block.norm1(x)
            q, k, v = block.attn.qkv(h).view(2, 11, 3, 6, 64).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 11, 384)
            x = x + block.ls1.gamma * block.attn.proj(att)
            h = block.norm2(x)
            x = x + block.ls2.gamma * block.mlp.w3(F.silu(block.mlp.w1(h)) * block.mlp.w2(h))
        torch.testing.assert_close(model.vision_head.ln_final(x), head)


def test_text_embedding_is_pooled_at_eot(model):
    ids = torch.tensor([[49406, 320, 1929, 539, 320, 2368, 49407, 0, 0], [49406, 1929, 49407, 0, 0, 0, 0, 0, 0]])
    captured = {}
    model.text_model.ln_final.register_forward_hook(lambda module, args, out: captured.update(hidden=out))
    embeds = model.get_text_features(ids)
    hidden = captured["hidden"]
    torch.testing.assert_close(embeds, model.text_projection(torch.stack([hidden[0, 6], hidden[1, 2]])))
    # causal: tokens after EOT do not matter, tokens before it do
    changed_after = ids.clone()
    changed_after[:, -1] = 555
    torch.testing.assert_close(model.get_text_features(changed_after), embeds)
    torch.testing.assert_close(model.get_text_features(ids[:, :7]), embeds)
    changed_before = ids.clone()
    changed_before[0, 2] = 555
    assert not torch.allclose(model.get_text_features(changed_before)[0], embeds[0])


def test_scores_and_auto_classes(model, tmp_path):
    ids = torch.tensor([[49406, 320, 49407], [49406, 1929, 49407], [49406, 2368, 49407]])
    pixels = torch.randn(2, 3, 32, 32)
    out = model(input_ids=ids, pixel_values=pixels)
    cos = F.normalize(model.get_image_features(pixels), dim=-1) @ F.normalize(model.get_text_features(ids), dim=-1).t()
    torch.testing.assert_close(out.logits_per_image, math.exp(2.5) * cos)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.t())
    model.save_pretrained(tmp_path)
    for auto in (AutoModel, AutoModelForZeroShotImageClassification):
        loaded = auto.from_pretrained(tmp_path)
        assert isinstance(loaded, Dinov3HfDinoTxtModel) and not loaded.training
        torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels).logits_per_image, out.logits_per_image)
    with pytest.raises(ValueError, match="pass both input_ids and pixel_values"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match=r"length <= 77 .* truncation=True"):
        model.get_text_features(torch.zeros(1, 78, dtype=torch.long))


def test_new_model_defaults():
    config = Dinov3HfDinoTxtConfig.from_preset(PRESET)
    assert (config.vision_head_ffn_hidden_size, config.embed_dim, config.text_context_length) == (2752, 2048, 77)
    tiny = Dinov3HfDinoTxtConfig(
        backbone_config=Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2,
                                                      num_hidden_layers=1),
        text_hidden_size=16, text_num_hidden_layers=1, text_num_attention_heads=2,
    )
    model = Dinov3HfDinoTxtModel(tiny)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.vision_head.blocks[0].ls1.gamma.eq(1e-5).all()
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    with pytest.raises(ValueError, match="not divisible"):
        Dinov3HfDinoTxtConfig(text_hidden_size=30, text_num_attention_heads=4)


def test_cli_converts_the_official_files(official, backbone, model, tmp_path):
    head_file, backbone_file = tmp_path / "dinotxt_head.pth", tmp_path / "backbone.pth"
    torch.save(official, head_file)
    torch.save(backbone.state_dict(), backbone_file)
    out = tmp_path / "converted"
    args = ["convert", str(head_file), str(out), "--arch", PRESET, "--backbone", str(backbone_file),
            "--backbone-arch", "vits16"]
    assert main(args) == 0
    loaded = AutoModel.from_pretrained(out)
    pixels, ids = torch.randn(1, 3, 32, 32), torch.tensor([[49406, 320, 49407]])
    torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels).logits_per_image,
                               model(input_ids=ids, pixel_values=pixels).logits_per_image)
    assert (out / "bpe_simple_vocab_16e6.txt.gz").is_file() and (out / "processor_config.json").is_file()
    assert main(["convert", str(head_file), str(tmp_path / "x"), "--arch", PRESET]) == 1  # no --backbone
