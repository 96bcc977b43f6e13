"""ViT checkpoint interop: official .pth, transformers folders and Hub cache, our format; strict checks and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_
from safetensors.torch import load_file
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from dinov3_hf import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.convert import CheckpointError, convert_checkpoint, detect_format, export_model, load_model, load_pth
from dinov3_hf.models.vit.configuration import VIT_PRESETS

# The official key set, written from the released checkpoints' key dump (module names of the official
# `dinov3/models/vision_transformer.py`), independently of our module tree.
OFFICIAL_ARCH = {  # D, heads, ffn, ffn hidden, qkv bias, local_cls_norm
    "vits16": (384, 6, "mlp", 1536, True, False),
    "vits16plus": (384, 6, "swiglu", 1536, True, False),
    "vitb16": (768, 12, "mlp", 3072, True, False),
    "vitl16": (1024, 16, "mlp", 4096, True, False),
    "vitl16_sat": (1024, 16, "mlp", 4096, True, True),
    "vitl16plus": (1024, 16, "swiglu", 4096, True, False),
    "vith16plus": (1280, 20, "swiglu", 5120, True, False),
    "vit7b16": (4096, 32, "swiglu", 8192, False, True),
    "vit7b16_sat": (4096, 32, "swiglu", 8192, False, True),
}


def official_state_dict(arch: str, depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    dim, heads, ffn, hidden, qkv_bias, local_norm = OFFICIAL_ARCH[arch]
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen) * 0.02  # noqa: E731
    head_dim = dim // heads
    sd = {
        "cls_token": rand(1, 1, dim),
        "storage_tokens": rand(1, 4, dim),
        "mask_token": rand(1, dim),
        "patch_embed.proj.weight": rand(dim, 3, 16, 16),
        "patch_embed.proj.bias": rand(dim),
        "rope_embed.periods": 100.0 ** (2 * torch.arange(head_dim // 4) / (head_dim // 2)),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + rand(dim), b + "norm1.bias": rand(dim), b + "attn.qkv.weight": rand(3 * dim, dim)}
        if qkv_bias:
            sd |= {b + "attn.qkv.bias": rand(3 * dim), b + "attn.qkv.bias_mask": torch.tensor([1.0, 0, 1]).repeat_interleave(dim)}
        sd |= {b + "attn.proj.weight": rand(dim, dim), b + "attn.proj.bias": rand(dim), b + "ls1.gamma": rand(dim)}
        sd |= {b + "norm2.weight": 1 + rand(dim), b + "norm2.bias": rand(dim)}
        if ffn == "mlp":
            sd |= {b + "mlp.fc1.weight": rand(hidden, dim), b + "mlp.fc1.bias": rand(hidden)}
            sd |= {b + "mlp.fc2.weight": rand(dim, hidden), b + "mlp.fc2.bias": rand(dim)}
        else:
            for name, shape in (("w1", (hidden, dim)), ("w2", (hidden, dim)), ("w3", (dim, hidden))):
                sd |= {b + f"mlp.{name}.weight": rand(*shape), b + f"mlp.{name}.bias": rand(shape[0])}
        sd[b + "ls2.gamma"] = rand(dim)
    sd |= {"norm.weight": 1 + rand(dim), "norm.bias": rand(dim)}
    if local_norm:
        sd |= {"local_cls_norm.weight": 1 + rand(dim), "local_cls_norm.bias": rand(dim)}
    return sd


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# -- official and transformers round trips for every preset --------------------------------------------------------


@pytest.mark.parametrize("arch", list(OFFICIAL_ARCH))
def test_official_roundtrip_every_preset(arch, tmp_path):
    depth = 1 if arch.startswith("vit7b") else 2
    sd = official_state_dict(arch, depth)
    src = tmp_path / "official.pth"
    torch.save(sd, src)
    model = load_model(src, arch=arch)
    assert model.config.num_hidden_layers == depth
    assert_same_tensors(model.state_dict(), sd)
    # the official meaning of the FFN keys (`dinov3/layers/ffn_layers.py`): w3(silu(w1 x) * w2 x), fc2(gelu(fc1 x))
    def linear(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(t, sd[f"blocks.0.mlp.{name}.weight"], sd[f"blocks.0.mlp.{name}.bias"])

    t = torch.randn(3, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    if OFFICIAL_ARCH[arch][2] == "swiglu":
        expected = linear(F.silu(linear(t, "w1")) * linear(t, "w2"), "w3")
    else:
        expected = linear(F.gelu(linear(t, "fc1")), "fc2")
    with torch.inference_mode():
        torch.testing.assert_close(model.blocks[0].mlp(t), expected, atol=1e-6, rtol=1e-5)
    out = convert_checkpoint(src, tmp_path / "back.pth", arch=arch, to="official")
    assert_same_tensors(torch.load(out, weights_only=True), sd)
    del model, sd


@pytest.mark.parametrize("arch", list(OFFICIAL_ARCH))
def test_transformers_roundtrip_every_preset(arch, tmp_path):
    """official -> ours -> transformers -> ours keeps every tensor, and each converted model computes what
    transformers' DINOv3ViTModel computes on the converted weights: a key map that is wrong the same way in both
    directions (e.g. SwiGLU gate w1 and up w2 swapped) still round-trips, but changes the outputs."""
    depth = 1 if arch.startswith("vit7b") else 2
    src = tmp_path / "official.pth"
    torch.save(official_state_dict(arch, depth), src)
    ours_dir = convert_checkpoint(src, tmp_path / "ours", arch=arch)
    hf_dir = convert_checkpoint(ours_dir, tmp_path / "hf", to="hf")
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = DINOv3ViTModel.from_pretrained(hf_dir).eval()(x).last_hidden_state
        for converted in (src, hf_dir):  # official weights as they are; transformers' weights read back into ours
            got = load_model(converted, arch=arch)(x).last_hidden_state
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=lambda m: f"{converted.name}: {m}")
    hf_sd = load_file(hf_dir / "model.safetensors")
    assert not any(k.endswith(("bias_mask", "periods")) or "local_cls_norm" in k or "k_proj.bias" in k for k in hf_sd)
    back = convert_checkpoint(hf_dir, tmp_path / "hf_again", to="hf")
    assert_same_tensors(load_file(back / "model.safetensors"), hf_sd)
    assert json.loads((hf_dir / "config.json").read_text())["model_type"] == "dinov3_vit"
    assert detect_format(hf_dir) == "hf" and detect_format(ours_dir) == "dinov3_hf" and detect_format(src) == "official"


def test_transformers_checkpoint_loads_with_same_outputs(tmp_path):
    config = DINOv3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                             num_register_tokens=4, layerscale_value=0.5)
    theirs = randomize_(DINOv3ViTModel(config)).eval()
    theirs.save_pretrained(tmp_path / "hf")
    ours = Dinov3HfViTModel.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, Dinov3HfViTModel) and not ours.training
    x = torch.randn(2, 3, 64, 48)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).last_hidden_state, theirs(x).last_hidden_state, atol=1e-5, rtol=0)
    backbone = Dinov3HfViTBackbone.from_pretrained(tmp_path / "hf")
    assert isinstance(backbone, Dinov3HfViTBackbone)


def test_our_format_roundtrip_and_streamed_shards(tmp_path):
    sd = official_state_dict("vits16", 2)
    torch.save(sd, tmp_path / "a.pth")
    model = load_model(tmp_path / "a.pth", arch="vits16")
    from dinov3_hf.convert import read_checkpoint, write_checkpoint

    family, config, thunks = read_checkpoint(tmp_path / "a.pth", arch="vits16")
    folder = write_checkpoint(family, config, thunks, tmp_path / "sharded", max_shard_bytes=2_000_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = Dinov3HfViTModel.from_pretrained(folder)
    assert_same_tensors(loaded.state_dict(), model.state_dict())
    export_model(model, tmp_path / "exported")
    assert_same_tensors(Dinov3HfViTModel.from_pretrained(tmp_path / "exported").state_dict(), sd)


def test_periods_dtype_is_kept(tmp_path):
    sd = official_state_dict("vits16", 1)
    sd["rope_embed.periods"] = sd["rope_embed.periods"].to(torch.bfloat16)
    torch.save(sd, tmp_path / "bf16.pth")
    model = load_model(tmp_path / "bf16.pth", arch="vits16")
    assert model.config.rope_dtype == "bfloat16" and model.rope_embed.periods.dtype == torch.bfloat16
    out = convert_checkpoint(tmp_path / "bf16.pth", tmp_path / "back.pth", arch="vits16", to="official")
    assert_same_tensors(torch.load(out, weights_only=True), sd)


# -- Hub cache -------------------------------------------------------------------------------------------------------

REPO = "facebook/dinov3-vits16-pretrain-lvd1689m"


def build_hub_cache(root, model: DINOv3ViTModel) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    model.save_pretrained(snapshot)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(tmp_path):
    config = DINOv3ViTConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=6,
                             num_register_tokens=4, layerscale_value=0.5)
    theirs = randomize_(DINOv3ViTModel(config), std=0.05).eval()
    build_hub_cache(tmp_path / "hub", theirs)
    return tmp_path / "hub", theirs


def test_from_pretrained_hub_id_offline(hub_cache):
    cache, theirs = hub_cache
    ours = Dinov3HfViTModel.from_pretrained(REPO, cache_dir=cache)
    assert isinstance(ours, Dinov3HfViTModel)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x).last_hidden_state, theirs(x).last_hidden_state, atol=1e-5, rtol=0)


def test_from_pretrained_hub_id_in_fresh_process(hub_cache, tmp_path):
    cache, theirs = hub_cache
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.save({"x": x, "y": theirs(x).pooler_output}, tmp_path / "io.pt")
    script = (
        "import torch, dinov3_hf\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
        f"m = dinov3_hf.Dinov3HfViTModel.from_pretrained({REPO!r})\n"
        "assert type(m).__name__ == 'Dinov3HfViTModel'\n"
        "with torch.inference_mode(): y = m(io['x']).pooler_output\n"
        "print((y - io['y']).abs().max().item())\n"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) <= 1e-5


# -- clear errors --------------------------------------------------------------------------------------------------


def test_checkpoint_key_errors_list_the_keys(tmp_path):
    sd = official_state_dict("vits16", 2)
    del sd["blocks.1.ls2.gamma"]
    sd["blocks.0.extra.weight"] = torch.zeros(3)
    sd["norm.bias"] = torch.zeros(5)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pth", arch="vits16")
    msg = str(err.value)
    assert "missing keys (1): blocks.1.ls2.gamma" in msg
    assert "unexpected keys (1): blocks.0.extra.weight" in msg
    assert "norm.bias: checkpoint (5,), model (384,)" in msg


def test_checkpoint_arch_mismatch_errors(tmp_path):
    torch.save(official_state_dict("vitl16_sat", 1), tmp_path / "sat.pth")
    with pytest.raises(CheckpointError, match="untie_global_and_local_cls_norm.*_sat presets"):
        load_model(tmp_path / "sat.pth", arch="vitl16")
    torch.save(official_state_dict("vits16", 1), tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 384, preset 768"):
        load_model(tmp_path / "s.pth", arch="vitb16")
    with pytest.raises(CheckpointError, match="pass the preset with --arch"):
        load_model(tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="Unknown architecture"):
        load_model(tmp_path / "s.pth", arch="vitq")
    too_deep = official_state_dict("vits16", 1)
    too_deep |= {k.replace("blocks.0.", "blocks.12."): v for k, v in too_deep.items() if k.startswith("blocks.0.")}
    torch.save(too_deep, tmp_path / "deep.pth")
    with pytest.raises(CheckpointError, match="13 blocks but preset 'vits16' has 12"):
        load_model(tmp_path / "deep.pth", arch="vits16")


class Payload:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_pickle_code_execution_is_refused(tmp_path, capsys):
    torch.save({"cls_token": torch.zeros(1), "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="Refusing to load .*pickle code execution"):
        load_pth(tmp_path / "evil.pth")
    assert "would run" not in capsys.readouterr().out


def test_unknown_formats_are_named(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"0")
    with pytest.raises(CheckpointError, match="Unknown checkpoint format for file"):
        detect_format(tmp_path / "weights.npz")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        detect_format(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        detect_format(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="Could not find 'nobody/nothing'"):
        load_model("nobody/nothing")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_pth(tmp_path / "list.pth")


def test_training_snapshot_prefixes_are_stripped(tmp_path):
    sd = official_state_dict("vits16", 1)
    wrapped = {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, "dino_head.mlp.0.weight": torch.zeros(2, 2)}}
    torch.save(wrapped, tmp_path / "teacher_checkpoint.pth")
    assert sorted(load_pth(tmp_path / "teacher_checkpoint.pth")) == sorted(sd)


def test_every_preset_has_an_official_key_spec():
    assert set(OFFICIAL_ARCH) == set(VIT_PRESETS)
    for arch, (dim, heads, ffn, hidden, qkv_bias, local) in OFFICIAL_ARCH.items():
        config = Dinov3HfViTConfig.from_preset(arch)
        assert (config.hidden_size, config.num_attention_heads, config.ffn_type, config.ffn_hidden_size) == (dim, heads, ffn, hidden)
        assert (config.qkv_bias, config.untie_global_and_local_cls_norm) == (qkv_bias, local)


@pytest.mark.parametrize("target", ["dinov3_hf", "hf"])
def test_conversion_holds_at_most_one_copy(tmp_path, target):
    """Streaming conversion: peak memory grows by about one checkpoint (the mapped source), never two copies."""
    sd = official_state_dict("vitl16", 6)
    size = sum(t.numel() * t.element_size() for t in sd.values())
    torch.save(sd, tmp_path / "big.pth")
    del sd
    script = (
        "import resource, dinov3_hf\n"
        "from dinov3_hf.convert import read_checkpoint, write_checkpoint\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"family, config, thunks = read_checkpoint({str(tmp_path / 'big.pth')!r}, arch='vitl16')\n"
        f"write_checkpoint(family, config, thunks, {str(tmp_path / 'out')!r}, to={target!r}, max_shard_bytes=30_000_000)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    grown = int(result.stdout.strip().splitlines()[-1])
    assert grown < 1.4 * size, f"peak memory grew by {grown / size:.2f}x the checkpoint size"


def test_from_pretrained_transformers_layout_applies_config_kwargs(tmp_path):
    config = DINOv3ViTConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                             num_register_tokens=4)
    DINOv3ViTModel(config).save_pretrained(tmp_path)
    backbone = Dinov3HfViTBackbone.from_pretrained(tmp_path, out_indices=[1, 3], dtype=torch.bfloat16)
    assert backbone.out_indices == [1, 3] and backbone.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="Unexpected argument 'colour'"):
        Dinov3HfViTModel.from_pretrained(tmp_path, colour="red")
