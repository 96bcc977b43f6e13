"""SSL training throughput: images/s of one DINOv3 pretraining step (DINO + iBOT + KoLeo, EMA teacher).

One step = teacher forward on 2 global crops, student forward on 2 global (masked) + 8 local crops, heads, losses,
backward, per-module clipping, AdamW step and EMA update, on synthetic crops (data loading excluded).

    python bench/bench_ssl_step.py                     # CPU fp32, ViT-S/16 and ViT-B/16, batch 4
    python bench/bench_ssl_step.py --device cuda       # one GPU, bf16 autocast, batch 64
    python bench/bench_ssl_step.py --presets vits16 --batch 2 --steps 3 --quick
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from dinov3_hf.ssl.config import PretrainConfig
from dinov3_hf.ssl.masking import sample_masks
from dinov3_hf.ssl.meta_arch import SSLMetaArch
from dinov3_hf.ssl.param_groups import build_param_groups
from dinov3_hf.ssl.teachers import ema_update


def make_batch(batch: int, global_size: int, local_size: int, n_local: int, patch: int, device) -> dict:
    grid = global_size // patch
    return {
        "global_crops": torch.randn(2 * batch, 3, global_size, global_size, device=device),
        "local_crops": torch.randn(n_local * batch, 3, local_size, local_size, device=device),
        "masks": sample_masks(2 * batch, (grid, grid)).to(device),
    }


def bench(preset: str, args) -> dict:
    device = torch.device(args.device)
    recipe = PretrainConfig(backbone={"preset": preset, "drop_path_rate": 0.1}, global_size=224, local_size=96,
                            n_local_crops=8)
    model = SSLMetaArch(recipe).to(device).train()
    optimizer = torch.optim.AdamW(build_param_groups(dict(model.student.items())), lr=1e-4)
    batch = make_batch(args.batch, 224, 96, 8, 16, device)
    use_autocast = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            loss = model(**batch)["loss"]
        loss.backward()
        for module in model.student.values():
            torch.nn.utils.clip_grad_norm_(module.parameters(), recipe.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(model.teacher, model.student, 0.994)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"preset": preset, "batch": args.batch, "s_per_step": median, "images_per_s": args.batch / median,
            "params_m": sum(p.numel() for p in model.student.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", default="vits16,vitb16")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 4 on CPU, 64 on GPU)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 warmup + 2 timed steps")
    args = parser.parse_args()
    if args.batch is None:
        args.batch = 64 if args.device.startswith("cuda") else 4
    if args.quick:
        args.warmup, args.steps = 1, 2
    hardware = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"device {args.device} ({hardware}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"precision {'bf16 autocast' if args.device.startswith('cuda') else 'fp32'}; crops 2x224 + 8x96 per image; "
          f"heads 65536 prototypes (DINO and iBOT); median of {args.steps} steps after {args.warmup} warmup")
    print("| preset | student params (M) | batch | s/step | images/s |")
    print("|---|---|---|---|---|")
    for preset in args.presets.split(","):
        r = bench(preset, args)
        print(f"| {r['preset']} | {r['params_m']:.1f} | {r['batch']} | {r['s_per_step']:.3f} | {r['images_per_s']:.2f} |")


if __name__ == "__main__":
    main()
