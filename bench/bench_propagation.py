#!/usr/bin/env python
"""Video label propagation (DINOv3's DAVIS-2017 protocol, `dinov3_hf.dense.propagation`) on real-photo videos with
exact masks (`dinov3_hf.data.moving_objects`), scored with DAVIS J, F and J&F (`dinov3_hf.metrics.video`).

Features compared, all with the same propagation (context 7, top-5, radius 12 patches, temperature 0.2 unless an
ablation says otherwise), against copying the first mask to every frame:
- pixels/4, pixels/16: the raw normalised pixels of each 4 x 4 or 16 x 16 patch, minus their mean
  (`dinov3_hf.dense.RawPixelPatches`: cosine similarity = normalised cross-correlation);
- fmnist_vit: the ViT shipped in the package (4-pixel patches; pretrained with this package's DINO + iBOT + KoLeo
  recipe on 28 x 28 Fashion-MNIST, model_cards/dinov3_hf_fmnist_vit.md);
- fmnist_vit random: the same architecture at random initialisation;
- vits16 random: the DINOv3 ViT-S/16 architecture at random initialisation.
No pretrained DINOv3 weights are available offline, so no row measures DINOv3 itself.

Frames are fed at their own size (the shorter side --height pixels), so 4-pixel patches give a grid of height / 4
tokens (60 at the default 240, the paper's token count) and 16-pixel patches one of height / 16.

    python bench/bench_propagation.py                  # about 20 minutes on a shared 2-core CPU
    python bench/bench_propagation.py --frames 8 --quick
    python bench/bench_propagation.py --quick --model runs/photos_cpu/teacher_backbone --methods model
    python bench/bench_propagation.py --height 960 --methods pixels/16 --quick --out bench/results/propagation_960.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

import dinov3_hf  # noqa: F401  (registers the Auto classes)
from dinov3_hf import Dinov3HfImageProcessor, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.data.moving_objects import Trajectory, moving_objects_video
from dinov3_hf.dense import RawPixelPatches, propagate_video
from dinov3_hf.metrics.video import video_j_and_f
from dinov3_hf.pretrained_models import default_model_path
from dinov3_hf.viz import label_palette, segmentation_overlay

RESULTS = Path(__file__).parent / "results"
# the second video: the horse passes in front of the quokka (occlusion) over another photo, with faster motion
CROSSING = {
    "quokka": Trajectory(start=(0.45, 0.2), end=(0.5, 0.8), height=(0.5, 0.56)),
    "horse": Trajectory(start=(0.62, 0.85), end=(0.6, 0.12), height=(0.42, 0.4)),
}


def sequences(frames: int, height: int):
    size = (height, height * 3 // 2)
    return [
        moving_objects_video(frames, size, background="coffee"),
        moving_objects_video(frames, size, background="chelsea", trajectories=CROSSING, fill="gravel"),
    ]


def backbones(seed: int = 0, model: Path | None = None):
    """The feature rows; `model` (a saved backbone folder, e.g. a run's teacher_backbone/) adds the row "model"."""
    path = default_model_path()
    shipped = AutoModel.from_pretrained(path).eval()
    shipped_processor = AutoImageProcessor.from_pretrained(path)
    torch.manual_seed(seed)
    random_small = Dinov3HfViTModel(shipped.config).eval()
    config = Dinov3HfViTConfig.from_preset("vits16")
    torch.manual_seed(seed)
    random_vits = Dinov3HfViTModel(config).eval()
    vits_processor = Dinov3HfImageProcessor.for_model_config(config)
    extra = {} if model is None else {
        "model": (AutoModel.from_pretrained(model).eval(), AutoImageProcessor.from_pretrained(model))}
    return {
        **extra,
        "pixels/4": (RawPixelPatches(4), shipped_processor),
        "fmnist_vit": (shipped, shipped_processor),
        "fmnist_vit random": (random_small, shipped_processor),
        "pixels/16": (RawPixelPatches(16), vits_processor),
        "vits16 random": (random_vits, vits_processor),
    }


def pooled(scores: list) -> dict:
    """DAVIS's dataset numbers: J and F averaged over all objects of all sequences, J&F their mean."""
    j = [v[0] for s in scores for v in s.per_object.values()]
    f = [v[1] for s in scores for v in s.per_object.values()]
    return {"J": float(np.mean(j)), "F": float(np.mean(f)), "J&F": float((np.mean(j) + np.mean(f)) / 2)}


def strip(sample, masks_by_method: dict, path: Path, frames=(0, -1)) -> None:
    """One row per method (ground truth first): the overlays of the chosen frames side by side, at half size."""
    palette = label_palette(3)
    palette[0] = 0
    rows = []
    for masks in [sample.masks, *masks_by_method.values()]:
        tiles = [
            np.asarray(segmentation_overlay(sample.frames[t], masks[t], 0.55, palette, ignore_index=0)) for t in frames
        ]
        rows.append(np.concatenate(tiles, axis=1))
    picture = Image.fromarray(np.concatenate(rows, axis=0))
    picture.resize((picture.width // 2, picture.height // 2), Image.Resampling.LANCZOS).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=240, help="frame height in pixels (width 1.5x)")
    parser.add_argument("--quick", action="store_true", help="leave out the ablations")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the feature rows, e.g. pixels/16")
    parser.add_argument("--out", type=Path, default=RESULTS / "propagation.json")
    parser.add_argument("--model", type=Path, default=None,
                        help="a saved backbone folder (e.g. a run's teacher_backbone/): adds the feature row \"model\"")
    args = parser.parse_args()
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model} is not a saved backbone folder (no config.json); pass e.g. a run's "
                     "teacher_backbone/ folder.")

    videos = sequences(args.frames, args.height)
    methods = backbones(model=args.model)
    if args.methods:
        unknown = set(args.methods.split(",")) - set(methods)
        if unknown:
            parser.error(f"unknown --methods {sorted(unknown)}; choose from {', '.join(methods)}")
        methods = {name: methods[name] for name in args.methods.split(",")}
    runs = [(name, {}) for name in methods]
    if not args.quick:  # the protocol's parts, on the shipped model
        runs += [
            ("fmnist_vit", {"radius": 1000.0}),
            ("fmnist_vit", {"context": 0}),
            ("fmnist_vit", {"topk": 1000}),
            ("fmnist_vit", {"soft_first_mask": True}),
        ]
    rows, overlays = [], {}
    copied = [video_j_and_f(np.repeat(v.masks[:1], len(v.masks), 0), v.masks) for v in videos]
    rows.append({"method": "copy first mask", "settings": {}, **pooled(copied),
                 "per_sequence": [s.jf_mean for s in copied], "seconds_per_frame": 0.0, "grid": None})
    for name, settings in runs:
        model, processor = methods[name]
        scores, seconds = [], 0.0
        for index, sample in enumerate(videos):
            start = time.perf_counter()
            result = propagate_video(model, processor, sample.frames, sample.masks[0], size=args.height,
                                     progress=False, **settings)
            seconds += time.perf_counter() - start
            scores.append(video_j_and_f(result.masks, sample.masks))
            if not settings:
                overlays.setdefault(index, {})[name] = result.masks.numpy()
        label = name if not settings else f"{name} {', '.join(f'{k}={v}' for k, v in settings.items())}"
        grid = list(result.probabilities.shape[-2:])
        rows.append({"method": label, "settings": settings, **pooled(scores),
                     "per_sequence": [s.jf_mean for s in scores],
                     "seconds_per_frame": seconds / sum(len(v.frames) - 1 for v in videos), "grid": grid})
        print(f"{label:40s} J {rows[-1]['J']:.3f}  F {rows[-1]['F']:.3f}  J&F {rows[-1]['J&F']:.3f}  "
              f"{rows[-1]['seconds_per_frame']:.2f} s/frame  grid {grid}", flush=True)

    machine = {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
    }
    report = {"videos": [v.name for v in videos], "frames": args.frames, "height": args.height, "machine": machine,
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for index, sample in enumerate(videos):
        chosen = {k: overlays[index][k] for k in ("pixels/4", "fmnist_vit", "vits16 random") if k in overlays[index]}
        if chosen:
            strip(sample, chosen, args.out.with_name(f"{args.out.stem}_video{index}.png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
