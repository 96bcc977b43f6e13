#!/usr/bin/env python
"""Release-size run of the ADE20K segmentor (`dinov3_vit7b16_ms`: ViT-7B/16 + ViT-Adapter + Mask2Former), random
weights, and a small-size check that CUDA agrees with the CPU.

1. Small model (D=64, 4 blocks): max |diff| of class / mask logits and of `slide_inference` between CPU fp32 and the
   device in fp32 (TF32 off), and in bf16 autocast (Meta's hub setting, `dinov3/hub/segmentors.py`).
2. Release config: per input size, wall time of one forward (after one warm-up) in fp32 and under bf16 autocast,
   peak accelerator memory, whether the outputs are finite; then `make_inference` (slide, 896 px windows every
   596 px) on a 896 x 1344 input. Random weights: this checks that the release configuration runs and what it costs.

    python bench/bench_adapter_mask2former.py --device cuda --sizes 896
"""

from __future__ import annotations

import argparse
import time

import torch

from dinov3_hf import Dinov3HfViTConfig
from dinov3_hf.models.heads import Dinov3HfAdapterMask2FormerConfig, Dinov3HfAdapterMask2FormerForUniversalSegmentation

from random_weights import materialise_random


def build(config: Dinov3HfAdapterMask2FormerConfig, device: str) -> Dinov3HfAdapterMask2FormerForUniversalSegmentation:
    """`config` materialised on `device` with random weights and BatchNorm statistics (0, 1)."""
    model = materialise_random(Dinov3HfAdapterMask2FormerForUniversalSegmentation, config, device)
    with torch.no_grad():
        model.criterion.empty_weight[-1] = config.no_object_weight
    return model


def small_check(device: str) -> None:
    vit = Dinov3HfViTConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, ffn_type="swiglu", ffn_ratio=3.0,
        swiglu_align_to=64, qkv_bias=False, untie_global_and_local_cls_norm=True,
    )
    config = Dinov3HfAdapterMask2FormerConfig(
        backbone_config=vit, interaction_indexes=[0, 1, 2, 3], hidden_dim=64, dim_feedforward=128,
        num_attention_heads=4, encoder_layers=2, decoder_layers=4, num_queries=6, num_labels=5,
    )
    cpu = build(config, "cpu")
    dev = build(config, "cpu").to(device)
    dev.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 3, 96, 128)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        ref = cpu(x)
        got = dev(x.to(device))
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            half = dev(x.to(device))
        slide_ref = cpu.slide_inference(x[:1, :, :, :96], crop_size=64, stride=(32, 16), dtype=torch.float32)
        slide = dev.slide_inference(x[:1, :, :, :96].to(device), crop_size=64, stride=(32, 16), dtype=torch.float32)
    for name, a, b in (
        ("fp32 class logits", ref.class_queries_logits, got.class_queries_logits),
        ("fp32 mask logits", ref.masks_queries_logits, got.masks_queries_logits),
        ("bf16 autocast class logits", ref.class_queries_logits, half.class_queries_logits),
        ("bf16 autocast mask logits", ref.masks_queries_logits, half.masks_queries_logits),
        ("fp32 slide scores", slide_ref, slide),
    ):
        print(f"small model, {device} vs cpu, {name}: max |diff| {(a - b.float().cpu()).abs().max().item():.3g}")


def timed(fn, device: str) -> tuple[float, object]:
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[896])
    parser.add_argument("--skip-release", action="store_true")
    args = parser.parse_args()
    device, cuda = args.device, args.device.startswith("cuda")
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if cuda else 'cpu'}")
    small_check(device)
    if args.skip_release:
        return
    start = time.perf_counter()
    model = build(Dinov3HfAdapterMask2FormerConfig(), device)
    params = sum(p.numel() for p in model.parameters())
    print(f"built the release segmentor ({params / 1e9:.2f} B parameters) on {device} in {time.perf_counter() - start:.1f} s")
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, device=device)
        for label, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
            def forward():
                with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                    return model(x)
            seconds, out = timed(forward, device)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            finite = all(torch.isfinite(t).all().item() for t in (out.class_queries_logits, out.masks_queries_logits))
            print(
                f"{size}x{size} {label}: forward {seconds:.3f} s, peak memory {peak:.1f} GiB, logits "
                f"{tuple(out.class_queries_logits.shape)}, masks {tuple(out.masks_queries_logits.shape)}, finite {finite}"
            )
    x = torch.randn(1, 3, 896, 1344, device=device)

    def slide():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            return model.make_inference(x, rescale_to=(896, 1344))

    seconds, scores = timed(slide, device)
    print(f"make_inference slide 896x1344 (2 windows), bf16 autocast: {seconds:.3f} s, scores {tuple(scores.shape)}")


if __name__ == "__main__":
    main()
