#!/usr/bin/env python
"""Release-size run of the Plain-DETR COCO detector (`dinov3_vit7b16_de`): the ViT-7B/16 with its 129M-parameter head,
random weights, one forward per image size, then `post_process_object_detection`.

Reports per size: wall time of one forward (after one warm-up), peak accelerator memory, output shapes, whether all
outputs are finite and how many detections post-processing returns. Random weights: this checks that the release
configuration runs and what it costs, not what it detects.

    python bench/bench_plain_detr.py --device cuda --sizes 1056 1536       # fp32 (the official detector dtype)
    python bench/bench_plain_detr.py --device cpu --preset vits16 --sizes 480
"""

from __future__ import annotations

import argparse
import time

import torch

from dinov3_hf import Dinov3HfViTConfig
from dinov3_hf.models.heads.plain_detr import Dinov3HfForPlainDetrDetection, Dinov3HfPlainDetrConfig
from dinov3_hf.processing import post_process_object_detection

from random_weights import materialise_random


def build(preset: str, device: str) -> Dinov3HfForPlainDetrDetection:
    """The release config on `preset`, materialised on `device` with random weights."""
    config = Dinov3HfPlainDetrConfig(backbone_config=Dinov3HfViTConfig.from_preset(preset))
    return materialise_random(Dinov3HfForPlainDetrDetection, config, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="vit7b16")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1056])
    args = parser.parse_args()
    start = time.perf_counter()
    model = build(args.preset, args.device)
    print(f"built {args.preset} detector on {args.device} in {time.perf_counter() - start:.1f} s")
    cuda = args.device.startswith("cuda")
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, device=args.device)
        with torch.no_grad():
            model(x)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = model(x)
            if cuda:
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        finite = all(torch.isfinite(t).all().item() for t in (out.logits, out.pred_boxes, out.enc_logits))
        found = post_process_object_detection(out.logits, out.pred_boxes, out.image_sizes, top_k=model.config.topk)
        print(
            f"{size}x{size}: {seconds:.3f} s, peak {peak:.1f} GiB, logits {tuple(out.logits.shape)}, "
            f"proposals {out.enc_logits.shape[1]}, finite {finite}, detections {len(found[0]['scores'])}"
        )


if __name__ == "__main__":
    main()
