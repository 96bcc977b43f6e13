"""The DINOv3 ViT against transformers' DINOv3ViTModel, and its forward API."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import randomize_
from transformers import AutoBackbone, AutoConfig, AutoModel, DINOv3ViTModel

from dinov3_hf import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.convert import export_model
from dinov3_hf.models.vit.configuration import VIT_PRESETS
from dinov3_hf.models.vit.layers.block import SelfAttentionBlock
from dinov3_hf.models.vit.layers.rope import RopePositionEmbedding, rope_periods


def tiny_model(**overrides) -> Dinov3HfViTModel:
    config = Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=3, hidden_size=64, num_attention_heads=2, **overrides)
    return randomize_(Dinov3HfViTModel(config)).eval()


# -- parity with transformers, every preset, depth cut to 2 -------------------------------------------------------

SIZES = [(224, 224), (256, 384), (512, 512)]


@pytest.mark.parametrize("preset", list(VIT_PRESETS))
def test_matches_transformers(preset, tmp_path):
    config = Dinov3HfViTConfig.from_preset(preset, num_hidden_layers=2)
    # std ~ 1/sqrt(width) keeps activations O(1), as in trained models, so fp32 rounding stays far below 1e-5
    ours = randomize_(Dinov3HfViTModel(config), std=1.0 / math.sqrt(config.hidden_size)).eval()
    export_model(ours, tmp_path, to="hf")
    theirs = DINOv3ViTModel.from_pretrained(tmp_path).eval()
    big = config.hidden_size >= 1280
    for height, width in SIZES:
        x = torch.randn(1 if big else 2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
        with torch.inference_mode():
            a, b = ours(x), theirs(x)
        torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.patch_tokens, b.last_hidden_state[:, 5:], atol=1e-5, rtol=0)
        torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)
    del ours, theirs


def test_hidden_states_match_transformers(tmp_path):
    ours = tiny_model()
    export_model(ours, tmp_path, to="hf")
    theirs = DINOv3ViTModel.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        a = ours(x, output_hidden_states=True)
        b = theirs(x, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) == 4
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(ha, hb, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.prenorm_hidden_state, a.hidden_states[-1])


def test_output_layout():
    model = tiny_model()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 48, 80))
    assert out.patch_tokens.shape == (2, 3 * 5, 64)
    assert out.last_hidden_state.shape == (2, 1 + 4 + 15, 64)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])
    torch.testing.assert_close(out.register_tokens, out.last_hidden_state[:, 1:5])
    torch.testing.assert_close(out.patch_tokens, out.last_hidden_state[:, 5:])
    with torch.inference_mode():
        torch.testing.assert_close(out.last_hidden_state, model.norm(out.prenorm_hidden_state))
    assert isinstance(model(torch.randn(1, 3, 32, 32), return_dict=False), tuple)


def test_non_multiple_sizes_are_floored():
    model = tiny_model()
    x = torch.randn(1, 3, 70, 50)
    with torch.inference_mode():
        torch.testing.assert_close(model(x).last_hidden_state, model(x[:, :, :64, :48]).last_hidden_state)


# -- RoPE, intermediate layers, crop lists, masks -------------------------------------------------------------------


def test_rope_periods_formula():
    for head_dim in (64, 128):
        periods = rope_periods(head_dim, base=100.0)
        expected = torch.tensor([100 ** (2 * k / (head_dim / 2)) for k in range(head_dim // 4)], dtype=torch.float32)
        torch.testing.assert_close(periods, expected, rtol=1e-6, atol=0)
    assert rope_periods(64, base=100.0)[-1].item() == pytest.approx(74.989, abs=1e-3)
    mm = rope_periods(64, base=None, min_period=0.5, max_period=50.0)
    torch.testing.assert_close(mm, torch.tensor([50.0 * 100 ** (k / 15 - 1) for k in range(16)]), rtol=1e-5, atol=0)
    model = tiny_model()
    torch.testing.assert_close(model.rope_embed.periods, rope_periods(32, base=100.0))


def test_rope_angles_hand_computed():
    rope = RopePositionEmbedding(head_dim=8, base=100.0).eval()
    sin, cos = rope(2, 3)
    # token (i=1, j=2): coords ((1.5/2)*2-1, (2.5/3)*2-1) = (0.5, 2/3); periods [1, 10]
    hw = 1 * 3 + 2
    angles = [2 * math.pi * c / p for c in (0.5, 2 / 3) for p in (1.0, 10.0)]
    expected = torch.tensor(angles * 2)
    torch.testing.assert_close(sin[hw], expected.sin(), atol=1e-6, rtol=0)
    torch.testing.assert_close(cos[hw], expected.cos(), atol=1e-6, rtol=0)


def test_rope_augmentation_only_in_training():
    rope = RopePositionEmbedding(head_dim=8, base=100.0, rescale=2.0)
    rope.eval()
    assert torch.equal(rope(4, 4)[0], rope(4, 4)[0])
    rope.train()
    assert rope.augments
    assert not torch.equal(rope(4, 4)[0], rope(4, 4)[0])
    plain = RopePositionEmbedding(head_dim=8, base=100.0).train()
    assert not plain.augments


def test_rope_rescale_range():
    rope = RopePositionEmbedding(head_dim=8, base=1.0, rescale=2.0, shift=None, jitter=None).train()
    base = rope.coords(4, 4)
    torch.manual_seed(0)
    ratios = [(rope._augment(base) / base).flatten() for _ in range(200)]
    assert all(r.max() - r.min() < 1e-5 for r in ratios)  # one shared factor for both axes
    values = torch.stack([r[0] for r in ratios])
    assert values.min() >= 0.5 - 1e-6 and values.max() <= 2.0 + 1e-6
    assert values.log().mean().abs() < 0.15  # log-uniform, centred on 1


def test_get_intermediate_layers_semantics():
    model = tiny_model()
    x = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        full = model(x, output_hidden_states=True)
        raw = full.hidden_states[1:]
        last2 = model.get_intermediate_layers(x, n=2)
        assert len(last2) == 2
        torch.testing.assert_close(last2[0], model.norm(raw[1])[:, 5:])
        torch.testing.assert_close(last2[1], full.patch_tokens)
        by_index = model.get_intermediate_layers(x, n=[0, 2], norm=False)
        torch.testing.assert_close(by_index[0], raw[0][:, 5:])
        torch.testing.assert_close(by_index[1], raw[2][:, 5:])
        negative = model.get_intermediate_layers(x, n=[-1], norm=False)
        torch.testing.assert_close(negative[0], raw[2][:, 5:])
        (maps,) = model.get_intermediate_layers(x, n=1, reshape=True)
        assert maps.shape == (2, 64, 3, 4)
        torch.testing.assert_close(maps[:, :, 1, 2], full.patch_tokens[:, 1 * 4 + 2])
        ((patches, cls, regs),) = model.get_intermediate_layers(x, n=[1], return_class_token=True, return_extra_tokens=True)
        normed = model.norm(raw[1])  # still inside inference_mode
        torch.testing.assert_close(cls, normed[:, 0])
        torch.testing.assert_close(regs, normed[:, 1:5])
        torch.testing.assert_close(patches, normed[:, 5:])
        ((patches, regs),) = model.get_intermediate_layers(x, n=1, return_extra_tokens=True)
        assert regs.shape == (2, 4, 64)
    with pytest.raises(ValueError, match="out of range"):
        model.get_intermediate_layers(x, n=[3])
    with pytest.raises(ValueError, match="out of range"):
        model.get_intermediate_layers(x, n=4)


def test_list_of_crops_equals_separate_forwards():
    model = tiny_model()
    globals_, locals_ = torch.randn(2, 3, 64, 64), torch.randn(4, 3, 32, 48)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :5] = True
    with torch.inference_mode():
        out_g, out_l = model([globals_, locals_], bool_masked_pos=[mask, None])
        sep_g, sep_l = model(globals_, bool_masked_pos=mask), model(locals_)
    torch.testing.assert_close(out_g.last_hidden_state, sep_g.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_l.last_hidden_state, sep_l.last_hidden_state, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one mask"):
        model([globals_, locals_], bool_masked_pos=[mask])


def test_masks_replace_tokens_with_mask_token():
    model = tiny_model()
    x = torch.randn(2, 3, 32, 48)
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 0] = True
    tokens, _, _ = model.prepare_tokens(x, mask)
    plain, _, _ = model.prepare_tokens(x)
    flat = mask.flatten(1)
    patches = tokens[:, 5:]
    torch.testing.assert_close(patches[flat], model.mask_token.expand(2, -1))
    torch.testing.assert_close(patches[~flat], plain[:, 5:][~flat])
    torch.testing.assert_close(tokens[:, :5], plain[:, :5])
    with pytest.raises(ValueError, match="bool_masked_pos has shape"):
        model.prepare_tokens(x, torch.zeros(2, 5, dtype=torch.bool))


def test_local_cls_norm_applies_to_local_crops_in_training_only():
    model = tiny_model(untie_global_and_local_cls_norm=True, drop_path_rate=0.0, rope_rescale=None)
    x = torch.randn(1, 3, 32, 32)
    model.train()
    out_g, out_l = model([x, x])
    torch.testing.assert_close(out_g.pooler_output, model.norm(out_g.prenorm_hidden_state)[:, 0])
    torch.testing.assert_close(out_l.pooler_output, model.local_cls_norm(out_l.prenorm_hidden_state)[:, 0])
    torch.testing.assert_close(out_l.patch_tokens, model.norm(out_l.prenorm_hidden_state)[:, 5:])
    model.eval()
    _, out_l = model([x, x])
    torch.testing.assert_close(out_l.pooler_output, model.norm(out_l.prenorm_hidden_state)[:, 0])


def test_drop_path_trains_a_subset_and_is_off_in_eval():
    model = tiny_model(drop_path_rate=0.5, rope_rescale=None)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.inference_mode():
        ref = model(x).last_hidden_state
    model.train()
    torch.manual_seed(0)
    out = model(x).last_hidden_state
    assert out.shape == ref.shape and not torch.allclose(out, ref)
    out.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("blocks"))


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_drop_path_adds_the_branch_of_a_sample_subset_scaled_by_batch_over_subset(rate):
    """Official rule (`dinov3/layers/block.py`): the branch runs on max(int(B * (1 - p)), 1) distinct samples of each
    crop and is added to those samples times B / subset; the other samples pass unchanged."""
    block = randomize_(SelfAttentionBlock(8, 2, "swiglu", 16, drop_path_rate=rate)).train()
    xs = [torch.randn(5, 3, 8), torch.randn(3, 2, 8)]
    seen = []

    def branch(crops):
        seen.append([c.detach().clone() for c in crops])
        return block._ffn_branch(crops)

    torch.manual_seed(0)
    out = block._residual(xs, branch)
    for x, got, rows in zip(xs, out, seen[0]):
        batch = x.shape[0]
        subset = max(int(batch * (1 - rate)), 1)
        kept = [int((x == row).all(dim=(1, 2)).nonzero()) for row in rows]  # which samples the branch saw
        assert len(kept) == len(set(kept)) == subset
        expected = x.clone()
        with torch.no_grad():
            for i in kept:  # each sample's branch output on its own, times B / subset
                expected[i] += batch / subset * block.ls2(block.mlp(block.norm2(x[i : i + 1])))[0]
        torch.testing.assert_close(got.detach(), expected, atol=1e-6, rtol=1e-5)
        unchanged = [i for i in range(batch) if i not in kept]
        assert torch.equal(got[unchanged], x[unchanged])


def test_gradient_checkpointing_gives_same_gradients():
    model = tiny_model(rope_rescale=None)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    model(x).pooler_output.square().sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(x).pooler_output.square().sum().backward()
    for name, grad in ref.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-6, rtol=1e-5)


# -- structure, presets, init ---------------------------------------------------------------------------------------


def test_preset_structure_and_parameter_counts():
    expected = {"vits16": 21_600_000, "vitb16": 85_670_000, "vitl16": 303_150_000, "vit7b16": 6_716_043_264}
    for preset, count in expected.items():
        with torch.device("meta"):
            model = Dinov3HfViTModel(Dinov3HfViTConfig.from_preset(preset))
        n = sum(p.numel() for p in model.parameters())
        if preset == "vit7b16":
            assert n == count  # exact, local_cls_norm included, as torch.hub counts it
        else:
            assert abs(n - count) / count < 2e-3, (preset, n)
    assert Dinov3HfViTConfig.from_preset("vits16plus").ffn_hidden_size == 1536
    assert Dinov3HfViTConfig.from_preset("vith16plus").ffn_hidden_size == 5120
    assert Dinov3HfViTConfig.from_preset("vit7b16").ffn_hidden_size == 8192
    assert Dinov3HfViTConfig.from_preset("vitl16_sat").image_mean == (0.430, 0.411, 0.296)


def test_key_bias_is_masked():
    model = tiny_model()
    qkv = model.blocks[0].attn.qkv
    assert qkv.bias_mask.tolist() == [1.0] * 64 + [0.0] * 64 + [1.0] * 64
    x = torch.randn(3, 64)
    with torch.no_grad():
        before = qkv(x)
        qkv.bias[64:128] += 5.0
        torch.testing.assert_close(qkv(x), before)
    assert not hasattr(Dinov3HfViTModel(Dinov3HfViTConfig.from_preset("vit7b16", num_hidden_layers=1, hidden_size=256,
                                                                         num_attention_heads=2)).blocks[0].attn.qkv, "bias_mask")


def test_save_and_from_pretrained_roundtrip(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, Dinov3HfViTModel)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert AutoConfig.from_pretrained(tmp_path).model_type == "dinov3_hf_vit"


def test_from_pretrained_initialises_missing_buffers(tmp_path):
    """v5 loads on the meta device: buffers absent from a checkpoint must be re-initialised, not left as garbage."""
    from safetensors.torch import load_file, save_file

    model = tiny_model()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state = {k: v for k, v in state.items() if not k.endswith(("bias_mask", "periods"))}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = Dinov3HfViTModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.rope_embed.periods, model.rope_embed.periods)
    torch.testing.assert_close(loaded.blocks[1].attn.qkv.bias_mask, model.blocks[1].attn.qkv.bias_mask)


def test_fresh_init_follows_official_scheme():
    torch.manual_seed(0)
    model = Dinov3HfViTModel(Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=1))
    assert torch.all(model.blocks[0].ls1.gamma == 1e-5)
    assert torch.all(model.mask_token == 0)
    bound = math.sqrt(1 / (3 * 16 * 16))
    assert model.patch_embed.proj.weight.abs().max() <= bound
    assert 0.015 < model.blocks[0].mlp.fc1.weight.std() < 0.025
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)


def test_bad_inputs_have_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\].*\(1, 4, 32, 32\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        model(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match="Unknown ViT preset"):
        Dinov3HfViTConfig.from_preset("vitz16")
    with pytest.raises(ValueError, match="not divisible"):
        Dinov3HfViTConfig(hidden_size=100, num_attention_heads=3)


def test_auto_backbone_feature_formats():
    config = Dinov3HfViTConfig.from_preset("vits16", num_hidden_layers=4, hidden_size=64, num_attention_heads=2,
                                           out_indices=[1, 2, 4])
    backbone = AutoBackbone.from_config(config)
    assert isinstance(backbone, Dinov3HfViTBackbone)
    randomize_(backbone).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        maps = backbone(x).feature_maps
        ref = backbone.get_intermediate_layers(x, n=[0, 1, 3], reshape=True)
    assert [m.shape for m in maps] == [(2, 64, 3, 4)] * 3
    for a, b in zip(maps, ref):
        torch.testing.assert_close(a, b)
    assert backbone.channels == [64, 64, 64]
    backbone.config.reshape_hidden_states = False
    with torch.inference_mode():
        tokens = backbone(x).feature_maps
        full = backbone(x, output_hidden_states=True).hidden_states
        normed = backbone.norm(full[4])
    assert tokens[-1].shape == (2, 1 + 12, 64)
    torch.testing.assert_close(tokens[-1], torch.cat([normed[:, :1], normed[:, 5:]], dim=1))


def test_ffn_gives_the_same_values_with_and_without_autograd():
    from dinov3_hf.models.vit.layers.ffn import Mlp, SwiGLUFFN

    for ffn in (Mlp(32, 64), SwiGLUFFN(32, 48)):
        randomize_(ffn)
        x = torch.randn(3, 7, 32)
        with torch.no_grad():
            fast = ffn(x)
        torch.testing.assert_close(fast, ffn(x).detach(), atol=0, rtol=0)
