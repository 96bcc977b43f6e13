"""PEFT LoRA on the dinov3_hf ViT: adapters on the attention (qkv, proj) and FFN projections (fc1/fc2, or the
SwiGLU w1 gate / w2 / w3) train, save, load and merge, and the merged model reproduces the adapter model."""

from __future__ import annotations

import pytest
import torch

from dinov3_hf import Dinov3HfViTConfig
from dinov3_hf.models.heads import Dinov3HfForImageClassification, Dinov3HfImageClassificationConfig
from helpers import randomize_

import peft

# block projections of our ViT: blocks.N.attn.{qkv,proj}, blocks.N.mlp.{fc1,fc2} (MLP) or {w1,w2,w3} (SwiGLU)
LORA_TARGETS = r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|w1|w2|w3))"


def tiny_config(preset: str) -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset(
        preset, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, patch_size=8
    )


def base_model(preset: str) -> Dinov3HfForImageClassification:
    """A tiny classifier with random weights everywhere (LayerScale near 0.5, so the blocks matter); the same weights
    on every call."""
    config = Dinov3HfImageClassificationConfig(backbone_config=tiny_config(preset), num_labels=3)
    return randomize_(Dinov3HfForImageClassification(config), seed=0).eval()


def lora_model(preset: str):
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, modules_to_save=["classifier"])
    return peft.get_peft_model(base_model(preset), lora)


@pytest.mark.parametrize(
    ("preset", "ffn_names"), [("vits16", ("fc1", "fc2")), ("vits16plus", ("w1", "w2", "w3"))]
)
def test_lora_trains_saves_loads_and_merges(tmp_path, preset, ffn_names):
    model = lora_model(preset)
    wrapped = {name.rsplit(".", 1)[0] for name, _ in model.named_parameters() if "lora_A" in name}
    modules = ("attn.qkv", "attn.proj", *(f"mlp.{n}" for n in ffn_names))
    expected = {f"blocks.{i}.{m}" for i in range(2) for m in modules}
    assert {w.split("backbone.", 1)[1].rsplit(".lora_A", 1)[0] for w in wrapped} == expected  # the SwiGLU gate w1 too
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in name or "classifier" in name for name in trainable)

    # train a few steps: every LoRA matrix and the head change, the base weights do not
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(4, 3, 32, 32, generator=gen)
    labels = torch.tensor([0, 1, 2, 1])
    model.train()
    losses = []
    for _ in range(3):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == (name in trainable), name

    model.eval()
    with torch.no_grad():
        adapter_logits = model(pixel_values=pixel_values).logits
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    # load the adapter onto a fresh copy of the same base weights
    original = base_model(preset)
    with torch.no_grad():
        base_logits = original(pixel_values=pixel_values).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # the adapters matter, so the checks below mean something
    original = original.state_dict()
    loaded = peft.PeftModel.from_pretrained(base_model(preset), tmp_path / "adapter").eval()
    with torch.no_grad():
        loaded_logits = loaded(pixel_values=pixel_values).logits
    torch.testing.assert_close(loaded_logits, adapter_logits, rtol=0, atol=1e-6)

    merged = loaded.merge_and_unload()
    assert isinstance(merged, Dinov3HfForImageClassification)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        merged_logits = merged(pixel_values=pixel_values).logits
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=0, atol=1e-5)
    # the merge really changed the base weights (the adapters were not a no-op)
    block = merged.backbone.blocks[0]
    assert not torch.allclose(block.attn.qkv.weight, original["backbone.blocks.0.attn.qkv.weight"])
    # the masked key bias of the fused qkv survives merging
    assert torch.equal(block.attn.qkv.bias_mask, original["backbone.blocks.0.attn.qkv.bias_mask"])

