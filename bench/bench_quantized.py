#!/usr/bin/env python
"""Accuracy cost of int8 dynamic quantization on the shipped default model (or --model), on CPU.

Two int8 paths against the float32 PyTorch model:
- ort int8: `dinov3_hf.export.quantize.quantize_dynamic_int8` (ONNX Runtime, the package's int8 path);
- torch int8: `torch.ao.quantization.quantize_dynamic` on the nn.Linear layers (for comparison only).

Measured:
0. the speed of both int8 paths (and of float32 in PyTorch and ONNX Runtime) on --speed-case, a preset at random
   weights (the speed does not depend on them): median images/s over --repeats interleaved runs;
1. the cosine between the int8 and float32 tokens (CLS, and every patch token) on real photos from scikit-image
   (astronaut, chelsea, coffee, rocket), at the model's own image size and at 4x that size;
2. the kNN accuracy (k=20, cosine, weighted votes; as training/eval_knn.py) of the CLS features on held-out
   Fashion-MNIST: the bank is --bank training images after the ones pretraining used (offset 50,000), the queries the
   first --queries test images.

    python bench/bench_quantized.py                       # about 5 minutes on 2 cores
    python bench/bench_quantized.py --speed-case none      # accuracy only, about 2 minutes
    python bench/bench_quantized.py --json bench/results/quantized_knn.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def ort_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_forward(session):
    """pixel_values -> {output name: tensor}, like the PyTorch model's output fields."""
    names = [o.name for o in session.get_outputs()]

    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = session.run(None, {"pixel_values": pixel_values.numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(names, outputs)}

    return forward


def torch_forward(model):
    def forward(pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = model(pixel_values)
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}

    return forward


def cls_features(forward, images, transform, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([forward(transform(images[i : i + batch_size]))["pooler_output"].float()
                      for i in range(0, len(images), batch_size)])


def speed(spec: str, repeats: int) -> dict[str, float]:
    """Median images/s of float32 / int8 forwards, PyTorch and ONNX Runtime, of a randomly initialised preset."""
    from torch.ao.quantization import quantize_dynamic

    from dinov3_hf.export.onnx import export_onnx
    from dinov3_hf.export.quantize import quantize_dynamic_int8
    from dinov3_hf.models.vit import Dinov3HfViTConfig, Dinov3HfViTModel

    preset, rest = spec.split("@")
    resolution, batch = map(int, rest.lower().split("x"))
    torch.manual_seed(0)
    model = Dinov3HfViTModel(Dinov3HfViTConfig.from_preset(preset, image_size=resolution)).eval()
    with tempfile.TemporaryDirectory() as folder:
        size = (resolution, resolution + 2 * model.config.patch_size)
        float_path = export_onnx(model, os.path.join(folder, "model.onnx"), example_size=size)
        int8_path = quantize_dynamic_int8(float_path, os.path.join(folder, "model.int8.onnx"))
        forwards = {"torch float32": torch_forward(model), "ort float32": ort_forward(ort_session(float_path)),
                    "torch int8": torch_forward(quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)),
                    "ort int8": ort_forward(ort_session(int8_path))}
    x = torch.randn(batch, 3, resolution, resolution)
    runs: dict[str, list[float]] = {name: [] for name in forwards}
    for forward in forwards.values():
        forward(x)
    for rep in range(repeats):
        names = list(forwards)[rep % len(forwards):] + list(forwards)[: rep % len(forwards)]
        for name in names:
            start = time.perf_counter()
            forwards[name](x)
            runs[name].append(batch / (time.perf_counter() - start))
    print(f"\nspeed, {spec} (random weights), images/s, median [min-max] of {repeats} interleaved runs:")
    for name, values in runs.items():
        print(f"{name:<14}{statistics.median(values):>8.2f}  [{min(values):.2f}-{max(values):.2f}]")
    return {name: statistics.median(values) for name, values in runs.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="backbone folder (default: the shipped default model)")
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--speed-case", default="vits16@224x8",
                        help="preset@RESOLUTIONxBATCH timed for the speed comparison, or none")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per path for the speed comparison")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's advice to pre-process the graph

    import onnxruntime
    from skimage import data
    from torch.ao.quantization import quantize_dynamic
    from transformers import AutoModel

    from dinov3_hf.data import load_fashion_mnist
    from dinov3_hf.export.quantize import quantize_dynamic_int8
    from dinov3_hf.metrics import knn_accuracy
    from dinov3_hf.pretrained_models import default_model_path
    from dinov3_hf.processing import Dinov3HfImageProcessor

    print(f"machine : {platform.node()} | {os.cpu_count()} logical cores | load average "
          f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"libs    : torch {torch.__version__} (threads {torch.get_num_threads()}) | onnxruntime "
          f"{onnxruntime.__version__} | engine {torch.backends.quantized.engine}")
    speeds = None if args.speed_case.lower() == "none" else speed(args.speed_case, args.repeats)
    model = AutoModel.from_pretrained(args.model or default_model_path()).eval()
    config = model.config
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        stride = config.patch_size
        int8_path = quantize_dynamic_int8(model, os.path.join(folder, "model.int8.onnx"),
                                          example_size=(config.image_size, config.image_size + 2 * stride))
        print(f"export + quantize: {time.perf_counter() - start:.0f}s, int8 file "
              f"{os.path.getsize(int8_path) / 2**20:.2f} MiB")
        forwards = {
            "float32": torch_forward(model),
            "ort int8": ort_forward(ort_session(int8_path)),
            "torch int8": torch_forward(quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)),
        }

        # 1) token cosine on real photos
        first_patch = 1 + config.num_register_tokens
        photos = [getattr(data, name)() for name in PHOTOS]
        cosines = {}
        for size in (config.image_size, 4 * config.image_size):
            processor = Dinov3HfImageProcessor.for_model_config(config, size={"height": size, "width": size})
            pixel_values = processor(photos, return_tensors="pt")["pixel_values"]
            reference = forwards["float32"](pixel_values)["last_hidden_state"]
            for name in ("ort int8", "torch int8"):
                tokens = forwards[name](pixel_values)["last_hidden_state"]
                cls = F.cosine_similarity(tokens[:, 0], reference[:, 0], dim=-1)
                patch = F.cosine_similarity(tokens[:, first_patch:], reference[:, first_patch:], dim=-1)
                cosines[f"{name} @{size}"] = {"cls_min": cls.min().item(), "cls_mean": cls.mean().item(),
                                              "patch_min": patch.min().item(), "patch_mean": patch.mean().item()}

        # 2) kNN of the CLS features
        size = config.image_size
        processor = Dinov3HfImageProcessor.for_model_config(config, size={"height": size, "width": size})
        bank = load_fashion_mnist("train", limit=args.bank, offset=50000)
        queries = load_fashion_mnist("test", limit=args.queries)
        bank_y, query_y = torch.tensor(bank["label"]), torch.tensor(queries["label"])

        def transform(images):
            return processor(list(images), return_tensors="pt")["pixel_values"]

        bank_images, query_images = list(bank["image"]), list(queries["image"])
        knn = {}
        for name, forward in forwards.items():
            bank_x = cls_features(forward, bank_images, transform)
            query_x = cls_features(forward, query_images, transform)
            knn[name] = knn_accuracy(bank_x, bank_y, query_x, query_y, k=args.k)

    print(f"\ntoken cosine against float32 on {', '.join(PHOTOS)} (skimage.data):")
    print(f"{'path @ size':<20}{'CLS min':>10}{'CLS mean':>10}{'patch min':>11}{'patch mean':>12}")
    for name, c in cosines.items():
        print(f"{name:<20}{c['cls_min']:>10.5f}{c['cls_mean']:>10.5f}{c['patch_min']:>11.5f}{c['patch_mean']:>12.5f}")
    print(f"\nFashion-MNIST kNN (k={args.k}), {len(bank)} bank / {len(queries)} held-out queries, CLS features:")
    for name, accuracy in knn.items():
        delta = 100 * (accuracy - knn["float32"])
        print(f"{name:<12}{accuracy:>8.4f}" + ("" if name == "float32" else f"   {delta:+.2f} points"))
    print(f"load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results = {"bank": len(bank), "queries": len(queries), "k": args.k, "cosine": cosines, "knn": knn,
               "speed_case": args.speed_case, "images_per_s": speeds,
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "threads": torch.get_num_threads()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
