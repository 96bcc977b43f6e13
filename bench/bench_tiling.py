#!/usr/bin/env python
"""Tiled against full-image inference of a ViT-S/16 on a real photo: feature agreement and peak memory.

Model: the `vits16` preset with random, non-trivial weights (`bench_backbone.randomize_`: LayerScale 0.05 to 0.3, so
that tokens depend on their context). Image: scikit-image's retina photo (1411 x 1411), resized bicubically to each
size and normalised by the image processor.

Every run is a fresh child process with one thread (`torch.set_num_threads(1)`), so that its peak memory is its own:
after building the model and the input the child resets the kernel's peak-RSS counter (`/proc/self/clear_refs`),
caps its address space at the current size + `--budget-gib` (`resource.setrlimit(RLIMIT_AS)`), runs one forward and
reports the peak RSS above that baseline (VmHWM - VmRSS at the reset). An allocation beyond the budget fails in the
child and is reported as "over budget". Each run states its attention implementation: "eager" materialises the
T x T score matrix (heads x T^2 x 4 bytes: 103 GB at 4096 x 4096, T = 65,541); "sdpa" is torch's
scaled_dot_product_attention, whose CPU kernel is a memory-efficient (flash-style) one, so a full forward with it
is limited by time (quadratic in T) rather than memory.

Agreement: per patch, the cosine between a method's patch features and the full SDPA forward's at the same size
(mean and min over patches) and the max abs difference; the methods are tiling (`dinov3_hf.dense.tiling`), eager
attention (the numerical floor), and the baseline that fits without tiling: the full forward at half the size with
its features upsampled bilinearly to the grid.

    nice -n 10 python bench/bench_tiling.py                                    # about 20 minutes on one core
    nice -n 10 python bench/bench_tiling.py --sizes 256,512 --out /tmp/tiling   # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 2**30


def status_kib(field: str) -> int:
    """A `Vm*` field of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(spec: dict) -> dict:
    """One run in this (fresh) process: build, reset the peak counter, cap the memory, forward, report."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from skimage import data

    sys.path.insert(0, str(HERE))
    from bench_backbone import randomize_

    from dinov3_hf.dense.tiling import tiled_patch_features
    from dinov3_hf.models.vit import Dinov3HfViTConfig, Dinov3HfViTModel
    from dinov3_hf.processing import Dinov3HfImageProcessor

    torch.set_num_threads(1)
    size = spec["size"]
    config = Dinov3HfViTConfig.from_preset("vits16")
    torch.manual_seed(0)
    model = Dinov3HfViTModel(config).eval()
    randomize_(model, seed=0)
    model.set_attn_implementation(spec["attention"])
    result = {**spec, "attention_used": model.config._attn_implementation}
    photo = Image.fromarray(data.retina()).resize((size, size), Image.Resampling.BICUBIC)
    processor = Dinov3HfImageProcessor.for_model_config(config, max_tokens=None)
    pixel_values = processor(photo, size={"height": size, "width": size}, return_tensors="pt").pixel_values

    with open("/proc/self/clear_refs", "w") as f:  # peak RSS := current RSS
        f.write("5")
    baseline_kib = status_kib("VmRSS")
    limit = status_kib("VmSize") * 1024 + int(spec["budget_gib"] * GIB)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # the soft limit, raised again to save the features
    start = time.perf_counter()
    result["baseline_rss_mib"] = baseline_kib / 1024
    try:
        with torch.inference_mode():
            if spec["tile"]:
                out = tiled_patch_features(model, pixel_values, spec["tile"], spec["overlap"])
                result["windows"] = len(out.boxes)
            else:
                out = model(pixel_values=pixel_values)
        tokens = out.patch_tokens[0].float().contiguous()
    except (RuntimeError, MemoryError) as err:
        result.update(status="over budget", error=str(err).splitlines()[0][:160])
        tokens = None
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mib"] = (status_kib("VmHWM") - baseline_kib) / 1024
    if tokens is not None:
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        save_file({"patch_tokens": tokens}, spec["features"])
        result["status"] = "ok"
    return result


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**spec, "status": f"child failed (exit {proc.returncode})", "error": proc.stderr.strip()[-300:]}
    return json.loads(lines[-1])


def compare(features: str, reference: str, grid: int) -> dict:
    """Per-patch cosine (mean, min) and max abs difference of `features` against `reference`; features on a smaller
    grid are first upsampled bilinearly to `grid` x `grid`."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    ours, ref = load_file(features)["patch_tokens"], load_file(reference)["patch_tokens"]
    if ours.shape[0] != ref.shape[0]:
        side = int(ours.shape[0] ** 0.5)
        fmap = ours.T.reshape(1, -1, side, side)
        ours = F.interpolate(fmap, size=(grid, grid), mode="bilinear", align_corners=False)[0].flatten(1).T
    cosine = F.cosine_similarity(ours, ref, dim=-1)
    return {
        "cos_mean": cosine.mean().item(),
        "cos_min": cosine.min().item(),
        "max_abs": (ours - ref).abs().max().item(),
    }


def machine_lines(budget_gib: float) -> list[str]:
    import torch
    import transformers

    sys.path.insert(0, str(HERE))
    from bench_backbone import cpu_name

    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) / 2**20
    return [
        f"machine : {platform.platform()} | {cpu_name()} | {os.cpu_count()} logical cores | {total:.0f} GiB RAM",
        f"torch   : {torch.__version__} | transformers {transformers.__version__} | python {platform.python_version()}",
        "runs    : one fresh process per run, 1 thread, float32, batch 1; run under `nice -n 10`",
        f"budget  : {budget_gib:g} GiB of address space above the loaded model and input (RLIMIT_AS)",
        f"load    : 1/5/15-min load average before the runs {' / '.join(f'{v:.2f}' for v in os.getloadavg())} "
        "(other processes share these cores: times are indicative, memory is not affected)",
    ]


def plan(sizes: list[int], tile: int, overlap: int, small_tile: int, full_sdpa_max: int = 2048) -> list[dict]:
    """The runs: full SDPA and full eager at every size; tiled (SDPA) at every size, plus tiled eager at the largest,
    and a second, smaller tile at the sizes up to 1024. The full SDPA forward is skipped above `full_sdpa_max` (its
    time is quadratic: some 45 minutes on one core at 4096 x 4096 when it fits)."""
    runs = []
    for size in sizes:
        if size <= full_sdpa_max:
            runs.append(dict(size=size, attention="sdpa", tile=0, overlap=0))
        runs.append(dict(size=size, attention="eager", tile=0, overlap=0))
        runs.append(dict(size=size, attention="sdpa", tile=tile, overlap=overlap))
        if size <= 1024:
            runs.append(dict(size=size, attention="sdpa", tile=small_tile, overlap=small_tile // 4))
        if size == max(sizes):
            runs.append(dict(size=size, attention="eager", tile=tile, overlap=overlap))
    return runs


def label(run: dict) -> str:
    return f"tiled {run['tile']}/{run['overlap']}" if run["tile"] else "full"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,2048,4096", help="square input sides, multiples of 16")
    parser.add_argument("--tile", type=int, default=512, help="window side (default 512)")
    parser.add_argument("--overlap", type=int, default=128, help="window overlap (default 128)")
    parser.add_argument("--small-tile", type=int, default=256, help="second window side, sizes <= 1024 (default 256)")
    parser.add_argument("--budget-gib", type=float, default=2.0, help="memory budget per run in GiB (default 2)")
    parser.add_argument("--full-sdpa-max", type=int, default=2048,
                        help="largest size of the full SDPA forward (default 2048; slow above)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder of tiling_cpu.md / .json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    header = machine_lines(args.budget_gib)
    print("\n".join(header), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(plan(sizes, args.tile, args.overlap, args.small_tile, args.full_sdpa_max)):
            spec = {**run, "budget_gib": args.budget_gib, "features": f"{tmp}/{i}.safetensors"}
            result = run_child(spec)
            results.append(result)
            print(
                f"{run['size']:>5} {label(run):>14} {run['attention']:>5}: {result['status']}, "
                f"peak {result.get('peak_rss_mib', float('nan')):.0f} MiB, {result.get('seconds', 0):.1f} s",
                flush=True,
            )
        by_key = {(r["size"], r["attention"], r["tile"]): r for r in results}
        for r in results:
            reference = by_key.get((r["size"], "sdpa", 0))
            if r["status"] != "ok" or reference is None or reference["status"] != "ok":
                continue
            grid = r["size"] // 16
            if r is not reference:
                r.update(compare(r["features"], reference["features"], grid))
            half = by_key.get((r["size"] // 2, "sdpa", 0))
            if r is reference and half is not None and half["status"] == "ok":
                r["half_size_bilinear"] = compare(half["features"], reference["features"], grid)

    table = format_table(results, args.budget_gib)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "nice -n 10 python bench/bench_tiling.py " + " ".join(sys.argv[1:])
    (args.out / "tiling_cpu.md").write_text(
        "# Tiled vs full-image inference, ViT-S/16 (random weights), CPU\n\n"
        f"`{command.strip()}`\n\n```\n" + "\n".join(header) + "\n```\n\n" + table + "\n"
    )
    for r in results:
        r.pop("features", None)
    (args.out / "tiling_cpu.json").write_text(json.dumps({"machine": header, "runs": results}, indent=2) + "\n")


def format_table(results: list[dict], budget_gib: float) -> str:
    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    lines = [
        f"| input | method | attention | windows | peak RSS above baseline, MiB | fits {budget_gib:g} GiB | time, s | "
        "patch cosine vs full SDPA, mean / min | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fits = "yes" if r["status"] == "ok" else "no" if r["status"] == "over budget" else r["status"]
        agreement = "reference" if not r["tile"] and r["attention"] == "sdpa" and r["status"] == "ok" else ""
        if "cos_mean" in r:
            agreement = f"{r['cos_mean']:.5f} / {r['cos_min']:.5f}"
        lines.append(
            f"| {r['size']}² | {label(r)} | {r['attention']} | {r.get('windows', 1)} | "
            f"{num(r.get('peak_rss_mib'), '.0f')} | {fits} | {num(r.get('seconds'), '.1f')} | {agreement} | "
            f"{num(r.get('max_abs'), '.4f')} |"
        )
        half = r.get("half_size_bilinear")
        if half:
            lines.append(
                f"| {r['size']}² | full at {r['size'] // 2}², features upsampled bilinearly | sdpa | 1 | | | | "
                f"{half['cos_mean']:.5f} / {half['cos_min']:.5f} | {half['max_abs']:.4f} |"
            )
    failed = [r for r in results if r["status"] != "ok"]
    notes = [f"- {r['size']}² {label(r)} {r['attention']}: {r.get('error', '')}" for r in failed]
    return "\n".join(lines + ([""] + notes if notes else []))


if __name__ == "__main__":
    main()
