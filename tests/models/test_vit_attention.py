"""ViT attention: transformers' attention implementations and returned probabilities (against transformers'
DINOv3ViTModel), hook-safe modules, strict forward keyword arguments, and the `dinov3-hf attention` picture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import randomize_
from PIL import Image
from skimage import data
from transformers import AutoImageProcessor, AutoModel, DINOv3ViTModel

from dinov3_hf import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import main
from dinov3_hf.convert import export_model
from dinov3_hf.models.convnext import Dinov3HfConvNextConfig, Dinov3HfConvNextModel
from dinov3_hf.models.vit.layers.block import SelfAttentionBlock
from dinov3_hf.pretrained_models import default_model_path

IMPLEMENTATIONS = ["sdpa", "eager", "flex_attention"]


def tiny_config(**overrides) -> Dinov3HfViTConfig:
    return Dinov3HfViTConfig.from_preset(
        "vits16", **{"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, **overrides}
    )


# -- attention probabilities and outputs against transformers, for every implementation ------------------------------


@pytest.fixture(scope="module")
def ours_and_theirs(tmp_path_factory) -> tuple[Dinov3HfViTModel, DINOv3ViTModel]:
    config = tiny_config()
    ours = randomize_(Dinov3HfViTModel(config), std=1.0 / math.sqrt(config.hidden_size)).eval()
    folder = tmp_path_factory.mktemp("hf_tiny_vit")
    export_model(ours, folder, to="hf")
    return ours, DINOv3ViTModel.from_pretrained(folder, attn_implementation="eager").eval()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [(224, 224), (256, 384)])
def test_attentions_match_transformers(ours_and_theirs, implementation, size):
    ours, theirs = ours_and_theirs
    ours.set_attn_implementation(implementation)
    assert ours.config._attn_implementation == implementation
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.inference_mode():
        plain = ours(x)  # the implementation itself
        a = ours(x, output_attentions=True, output_hidden_states=True)  # probabilities from eager attention
        b = theirs(x, output_attentions=True, output_hidden_states=True)
    tokens = 5 + size[0] * size[1] // 256
    assert plain.attentions is None
    assert len(a.attentions) == len(b.attentions) == 2
    for pa, pb in zip(a.attentions, b.attentions):
        assert pa.shape == (2, 2, tokens, tokens)
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=0)
    for output in (plain, a):
        torch.testing.assert_close(output.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(ha, hb, atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_causal_attention_masks_later_tokens_in_every_implementation(implementation):
    """The dino.txt text blocks: SDPA masks from `is_causal`, the others get an additive mask; all agree, and the
    probabilities are lower triangular."""
    config = tiny_config(num_hidden_layers=1)
    config._attn_implementation = implementation
    block = randomize_(SelfAttentionBlock(64, 2, "mlp", 128, layerscale_init=None, causal=True, config=config)).eval()
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(0))
    reference = SelfAttentionBlock(64, 2, "mlp", 128, layerscale_init=None, causal=True)  # no config: SDPA
    reference.load_state_dict(block.state_dict())
    with torch.inference_mode():
        (out,) = block([x], [None])
        (ref,) = reference.eval()([x], [None])
        _, (probs,) = block.attn([block.norm1(x)], [None], output_attentions=True)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert torch.equal(probs, probs.tril())
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 7))


def test_backbone_returns_attentions_and_follows_the_config_flags():
    model = randomize_(Dinov3HfViTModel(tiny_config())).eval()
    plain = Dinov3HfViTBackbone(tiny_config(out_indices=[1, 2])).eval()
    # transformers sets eager attention for a config created with output_attentions=True
    flagged = Dinov3HfViTBackbone(tiny_config(out_indices=[1, 2], output_hidden_states=True, output_attentions=True))
    x = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x, output_hidden_states=True, output_attentions=True)
        outputs = {}
        for name, backbone in (("plain", plain), ("flagged", flagged)):
            backbone.load_state_dict(model.state_dict())
            outputs[name] = backbone.eval()(x)
        overridden = flagged(x, output_hidden_states=False, output_attentions=False)
        asked = plain(x, output_hidden_states=True, output_attentions=True)
    assert outputs["plain"].hidden_states is None and outputs["plain"].attentions is None
    assert overridden.hidden_states is None and overridden.attentions is None
    for output in (outputs["flagged"], asked):
        assert len(output.hidden_states) == 3 and len(output.attentions) == 2
        for got, want in zip(output.hidden_states + output.attentions, expected.hidden_states + expected.attentions):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_forwards_reject_unknown_keyword_arguments():
    config = tiny_config(num_hidden_layers=1)
    x = torch.randn(1, 3, 32, 32)
    for model in (Dinov3HfViTModel(config), Dinov3HfViTBackbone(config)):
        with pytest.raises(TypeError, match=r"forward\(\) got an unexpected keyword argument 'colour'"):
            model(x, colour="red")
    with pytest.raises(TypeError, match="'colour'"):  # the list-of-crops input checks too
        Dinov3HfViTModel(config)([x, x], colour="red")
    Dinov3HfViTModel(config)(x, output_attentions=False, num_items_in_batch=1)  # transformers' own kwargs pass
    with pytest.raises(ValueError, match="not returned for a list of crop batches"):
        Dinov3HfViTModel(config)([x, x], output_attentions=True)


# -- hooks see the same values with and without autograd ---------------------------------------------------------------


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in a (nested) module input or output, by reference: a later in-place write shows in them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


@pytest.mark.parametrize("ffn_type", ["mlp", "swiglu"])
def test_hooks_see_the_same_values_with_and_without_autograd(ffn_type):
    """Forward hooks on every submodule hold references to their inputs and outputs; after the forward, they equal
    those of an autograd forward, under no_grad and inference_mode alike (no module writes into a tensor that
    another module returned)."""
    model = randomize_(Dinov3HfViTModel(tiny_config(ffn_type=ffn_type, layerscale_init=0.1))).eval()
    assert model.blocks[0].ls1.gamma.abs().min() > 0.1  # LayerScale active, far from 1
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    captured: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        return lambda module, args, output: captured.setdefault(name, []).extend(_tensors(args) + _tensors(output))

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    runs = []
    for context in (torch.enable_grad, torch.no_grad, torch.inference_mode):
        captured = {}
        with context():
            final = model(x).last_hidden_state
        runs.append((final, captured))
    for handle in handles:
        handle.remove()
    (final, reference), *others = runs
    assert {"blocks.0.attn.proj", "blocks.0.ls1", "blocks.1.mlp", "blocks.1.ls2"} <= set(reference)
    for other_final, other in others:
        assert torch.equal(other_final, final)
        assert other.keys() == reference.keys()
        for name in reference:
            assert all(torch.equal(a, b) for a, b in zip(other[name], reference[name], strict=True)), name


# -- `dinov3-hf attention` on a photo --------------------------------------------------------------------------------


def test_cli_draws_the_last_layer_cls_attention_of_every_head(tmp_path):
    """With --cmap gray and --alpha 1 each head's PNG is round(255 * t), t the min-max scaled CLS -> patch
    probabilities of the last block, one patch cell per grid position at the photo's size."""
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)  # 512 x 512
    out = tmp_path / "out"
    assert main(["attention", str(photo), "--out", str(out), "--size", "64", "--cmap", "gray", "--alpha", "1"]) == 0

    model = AutoModel.from_pretrained(default_model_path(), attn_implementation="eager").eval()  # the shipped default
    processor = AutoImageProcessor.from_pretrained(default_model_path())
    pixel_values = processor(
        Image.open(photo), size={"shortest_edge": 64}, do_center_crop=False, return_tensors="pt"
    )["pixel_values"]
    patch, heads = model.config.patch_size, model.config.num_attention_heads
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    with torch.inference_mode():
        last = model(pixel_values, output_attentions=True).attentions[-1][0]
    maps = last[:, 0, 1 + model.config.num_register_tokens :].reshape(heads, *grid).double().numpy()

    assert sorted(p.name for p in out.iterdir()) == [f"astronaut_attention_head{i}.png" for i in range(heads)]
    rows = ((np.arange(grid[0]) + 0.5) * 512 / grid[0]).astype(int)  # a pixel at the centre of each patch cell
    cols = ((np.arange(grid[1]) + 0.5) * 512 / grid[1]).astype(int)
    for head, heatmap in enumerate(maps):
        drawn = np.asarray(Image.open(out / f"astronaut_attention_head{head}.png"))
        assert drawn.shape == (512, 512, 3)
        expected = np.round(255 * (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min()))
        for channel in range(3):
            np.testing.assert_allclose(drawn[np.ix_(rows, cols, [channel])][..., 0], expected, atol=1)


def test_cli_refuses_a_model_without_attention(tmp_path, capsys):
    folder = tmp_path / "convnext"
    config = Dinov3HfConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 48])
    Dinov3HfConvNextModel(config).save_pretrained(folder)
    photo = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(photo)
    assert main(["attention", str(photo), "--model", str(folder), "--out", str(tmp_path / "out")]) == 1
    assert "`attention` needs a ViT backbone, but the model is a Dinov3HfConvNextModel" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
