"""Write one model card per official DINOv3 variant from the package's presets.

    python model_cards/generate.py            # (re)write model_cards/<preset>.md
    python model_cards/generate.py --check    # exit 1 if a card is out of date

Parameter counts are computed from the presets on the meta device, so cards cannot drift from the code. Each card
starts with its Hub metadata (DINOv3 License, `library_name: dinov3-hf`, `pipeline_tag`, tags, `base_model`: Meta's
transformers-format repo where there is one), written with huggingface_hub's `ModelCardData`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dinov3_hf.convert import FAMILIES
from dinov3_hf.models.hub import card_data, render_card

HERE = Path(__file__).parent

# Facts about the official releases (official_dinov3.md §1.1, §1.4): checkpoint file name, Hub repo, notes.
RELEASES = {
    "vits16": ("dinov3_vits16_pretrain_lvd1689m-08c60483.pth", "facebook/dinov3-vits16-pretrain-lvd1689m", "Distilled from ViT-7B."),
    "vits16plus": ("dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth", "facebook/dinov3-vits16plus-pretrain-lvd1689m", "Distilled from ViT-7B; SwiGLU FFN."),
    "vitb16": ("dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth", "facebook/dinov3-vitb16-pretrain-lvd1689m", "Distilled from ViT-7B."),
    "vitl16": ("dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth", "facebook/dinov3-vitl16-pretrain-lvd1689m", "Distilled from ViT-7B."),
    "vitl16plus": ("dinov3_vitl16plus_pretrain_lvd1689m-46503df0.pth", None, "torch.hub entry only (not in the README weight table); SwiGLU FFN."),
    "vith16plus": ("dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth", "facebook/dinov3-vith16plus-pretrain-lvd1689m", "Distilled from ViT-7B; SwiGLU FFN."),
    "vit7b16": ("dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth", "facebook/dinov3-vit7b16-pretrain-lvd1689m", "The teacher: SSL pretraining, Gram anchoring, high-resolution adaptation. No qkv bias; checkpoint has `local_cls_norm` (training only)."),
    "vitl16_sat": ("dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth", "facebook/dinov3-vitl16-pretrain-sat493m", "Satellite imagery; distilled from the SAT ViT-7B. Checkpoint has `local_cls_norm` (training only)."),
    "vit7b16_sat": ("dinov3_vit7b16_pretrain_sat493m-a6675841.pth", "facebook/dinov3-vit7b16-pretrain-sat493m", "Satellite imagery teacher. No qkv bias; checkpoint has `local_cls_norm`."),
    "convnext_tiny": ("dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth", "facebook/dinov3-convnext-tiny-pretrain-lvd1689m", "Distilled from ViT-7B."),
    "convnext_small": ("dinov3_convnext_small_pretrain_lvd1689m-296db49d.pth", "facebook/dinov3-convnext-small-pretrain-lvd1689m", "Distilled from ViT-7B."),
    "convnext_base": ("dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth", "facebook/dinov3-convnext-base-pretrain-lvd1689m", "Distilled from ViT-7B."),
    "convnext_large": ("dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth", "facebook/dinov3-convnext-large-pretrain-lvd1689m", "Distilled from ViT-7B."),
}

DATA = {
    "lvd1689m": "LVD-1689M: 1.689 billion curated web images (Meta, not released).",
    "sat493m": "SAT-493M: 493 million 512x512 Maxar satellite RGB images (Meta, not released).",
}


def architecture_lines(preset: str, config) -> list[str]:
    if config.model_type == "dinov3_hf_vit":
        return [
            f"- Vision Transformer, patch {config.patch_size}, width {config.hidden_size}, {config.num_hidden_layers} blocks, "
            f"{config.num_attention_heads} heads (head dim {config.head_dim})",
            f"- FFN: {'SwiGLU' if config.ffn_type == 'swiglu' else 'MLP (GELU)'}, hidden {config.ffn_hidden_size}; "
            f"qkv bias: {'yes (key bias masked to zero)' if config.qkv_bias else 'none'}; LayerScale; LayerNorm eps {config.layer_norm_eps}",
            f"- Tokens: CLS + {config.num_register_tokens} registers + patches; no absolute position embedding; "
            f"axial RoPE (base {config.rope_base:g}, coordinates normalised '{config.rope_normalize_coords}')",
        ]
    return [
        f"- ConvNeXt, depths {list(config.depths)}, widths {list(config.hidden_sizes)}; stride-32 output grid",
        f"- LayerNorm eps {config.layer_norm_eps}; layer scale; pooled output = LayerNorm of the global average pool",
    ]


def card(preset: str, family) -> str:
    config = family.config_class.from_preset(preset)
    with torch.device("meta"):
        params = sum(p.numel() for p in family.model_class(config).parameters())
    filename, hub_id, note = RELEASES[preset]
    mean, std = config.image_mean, config.image_std
    hf_lines = (
        [f'model = {family.model_class.__name__}.from_pretrained("{hub_id}")  # transformers layout, converted on load']
        if hub_id else ["# no transformers-format release on the Hub for this variant"]
    )
    data = card_data(
        pipeline_tag="image-feature-extraction", base_model=hub_id,
        tags=["vision-transformer" if config.model_type == "dinov3_hf_vit" else "convnext"],
    )
    lines = [
        f"{note}",
        "",
        "## Architecture",
        *architecture_lines(preset, config),
        f"- Parameters: {params:,} ({params / 1e6:.2f} M) in this package's model"
        + (", including `local_cls_norm`" if getattr(config, "untie_global_and_local_cls_norm", False) else ""),
        "",
        "## Training data",
        f"- {DATA[config.pretraining_data]}",
        f"- Input normalisation: mean {mean}, std {std}",
        "",
        "## Licence",
        "The weights are released by Meta under the DINOv3 License (access is gated). This package's code does not change",
        "the terms under which you may use the weights.",
        "",
        "## Intended use",
        "Frozen feature extraction for classification, retrieval, segmentation, depth and other dense tasks; fine-tuning;",
        "continued self-supervised training. Not for decisions about people without a task-specific evaluation.",
        "",
        "## Loading with dinov3_hf",
        "```python",
        "from transformers import AutoModel",
        "",
        f"from dinov3_hf import {family.model_class.__name__}  # importing dinov3_hf registers the Auto classes",
        "from dinov3_hf.convert import load_model",
        "",
        "# official Meta checkpoint (.pth state dict); the preset names the architecture",
        f'model = load_model("{filename}", arch="{preset}")',
        *hf_lines,
        "# a folder written by this package (save_pretrained or `dinov3-hf convert`)",
        'model = AutoModel.from_pretrained("path/to/folder")',
        "```",
        "From the command line:",
        "```bash",
        f"dinov3-hf convert {filename} {preset}-hf/ --arch {preset}            # -> this package's format",
        f"dinov3-hf convert {preset}-hf/ {preset}-transformers/ --to hf          # -> transformers' format",
        f"dinov3-hf convert {preset}-hf/ {preset}.pth --to official               # -> official format",
        "```",
    ]
    return str(render_card(data, f"DINOv3 {preset}", lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a card differs from what would be written")
    args = parser.parse_args()
    stale = []
    for family in FAMILIES:
        for preset in family.presets:
            path = HERE / f"{preset}.md"
            text = card(preset, family)
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(path.name)
            else:
                path.write_text(text)
    if stale:
        print(f"Out-of-date model cards: {', '.join(stale)}; run python model_cards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
