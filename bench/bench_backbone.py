#!/usr/bin/env python
"""Inference throughput of the DINOv3 ViT backbone: dinov3_hf vs transformers' DINOv3ViTModel vs timm.

All three models carry the same (random, non-trivial) weights: ours is built from a preset, its state dict
(official Meta key names) is exported with `dinov3_hf.convert.export_model(..., to="hf")` for transformers and
mapped with timm's own `timm.models.eva.checkpoint_filter_fn` for timm. Before timing, each case checks that
the three models agree numerically in fp32 (CLS token max abs diff < --atol).

On CPU two more columns run ours outside PyTorch: `ours ort` is ours exported with `dinov3_hf.export.export_onnx` and
run by ONNX Runtime (float32, checked against --atol like the others), `ours int8` the same file quantized with
`dinov3_hf.export.quantize.quantize_dynamic_int8` (int8 weights; its CLS cosine to ours is printed, not checked).
Both sessions get as many intra-op threads as torch has.

Timing: per repetition every model runs `iters` forward calls back to back (iters calibrated so that a
repetition lasts at least --min-time seconds), and the models are interleaved within each repetition (the
order rotates from one repetition to the next). The table reports the median images/s over --repeats.

    python bench/bench_backbone.py                      # CPU, fp32, ViT-S/B at 224 (batch 8) and 512 (batch 1)
    python bench/bench_backbone.py --quick              # smoke run, about a minute
    python bench/bench_backbone.py --device cuda        # bf16 autocast, ViT-S/B/L at 224 (batch 64), ViT-L at 1024
    python bench/bench_backbone.py --cases vitb16@224x8,vitl16@518x2
    python bench/bench_backbone.py --models ours,hf,timm  # CPU without the onnxruntime columns

A case is `preset@resolution x batch`, e.g. `vits16@224x8` (square images).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import torch

CPU_CASES = "vits16@224x8,vitb16@224x8,vits16@512x1,vitb16@512x1"
CUDA_CASES = "vits16@224x64,vitb16@224x64,vitl16@224x64,vitl16@1024x4"
QUICK_CASES = "vits16@224x2,vits16@128x1"

TIMM_NAMES = {
    "vits16": "vit_small_patch16_dinov3_qkvb",
    "vits16plus": "vit_small_plus_patch16_dinov3_qkvb",
    "vitb16": "vit_base_patch16_dinov3_qkvb",
    "vitl16": "vit_large_patch16_dinov3_qkvb",
    "vith16plus": "vit_huge_plus_patch16_dinov3_qkvb",
}

MODEL_LABELS = {"ours": "dinov3_hf", "hf": "transformers", "timm": "timm", "ort": "ours ort", "int8": "ours int8"}
ANCHORS = ("hf", "timm")
OURS = ("ours", "ort", "int8")  # ours in PyTorch eager, ours in ONNX Runtime float32, ours in ONNX Runtime int8
ORT_KEYS = ("ort", "int8")


@dataclass
class Case:
    preset: str
    resolution: int
    batch: int

    @property
    def name(self) -> str:
        return f"{self.preset}@{self.resolution}x{self.batch}"

    @classmethod
    def parse(cls, spec: str) -> "Case":
        try:
            preset, rest = spec.strip().split("@")
            res, batch = rest.lower().split("x")
            return cls(preset, int(res), int(batch))
        except ValueError:
            raise SystemExit(f"Bad case {spec!r}: expected preset@RESOLUTIONxBATCH, e.g. vits16@224x8") from None


@dataclass
class Result:
    case: Case
    gflops_per_image: float
    iters: int
    images_per_s: dict[str, float] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)
    max_diff_fp32: dict[str, float] = field(default_factory=dict)
    max_diff_timed: dict[str, float] = field(default_factory=dict)
    int8_cls_cosine: float | None = None


# ---------------------------------------------------------------------------------------------------------------
# machine / FLOPs
# ---------------------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(device: torch.device) -> list[str]:
    import timm
    import transformers

    lines = [
        f"machine : {platform.node()} | {platform.platform()}",
        f"cpu     : {cpu_name()} | {os.cpu_count()} logical cores visible",
        f"torch   : {torch.__version__} | num_threads={torch.get_num_threads()} "
        f"interop_threads={torch.get_num_interop_threads()} (defaults, not changed)",
        f"load    : 1/5/15-min load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())} "
        f"(before the run: clearly above 0 means other processes compete for these cores)",
        f"libs    : transformers {transformers.__version__} | timm {timm.__version__} | "
        f"python {platform.python_version()}" + ort_version(),
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(
            f"gpu     : {torch.cuda.get_device_name(device)} | {props.total_memory / 2**30:.0f} GiB | "
            f"CUDA {torch.version.cuda} | cuDNN {torch.backends.cudnn.version()}"
        )
    return lines


def ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ""
    return f" | onnxruntime {onnxruntime.__version__} (intra-op threads = torch's)"


def vit_flops_per_image(config, resolution: int) -> float:
    """Analytic forward FLOPs (2 per multiply-accumulate) of one square image; matmuls only.

    patch embed: N * (C p^2) * D MACs. Per block, with T = 1 + registers + N tokens:
    qkv 3 T D^2, scores q k^T T^2 D, attention-weighted values T^2 D, proj T D^2,
    FFN 2 T D F (MLP) or 3 T D F (SwiGLU). Norms, softmax, GELU, RoPE and residuals are left out.
    """
    p, d, f = config.patch_size, config.hidden_size, config.ffn_hidden_size
    n = (resolution // p) ** 2
    t = n + 1 + config.num_register_tokens
    patch = n * config.num_channels * p * p * d
    ffn_mats = 3 if config.ffn_type == "swiglu" else 2
    block = 3 * t * d * d + t * t * d + t * t * d + t * d * d + ffn_mats * t * d * f
    return 2.0 * (patch + config.num_hidden_layers * block)


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Make the default init non-trivial so the numerical check means something.

    The default init has zero biases, unit LayerNorms and LayerScale 1e-5 (blocks almost the identity).
    Here biases get N(0, 0.02) (the masked key bias too: every model must ignore it), LayerNorm weights 1 + N(0, 0.1)
    and LayerScale gammas U(0.05, 0.3).
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(".gamma"):
            p.copy_(torch.empty(p.shape).uniform_(0.05, 0.3, generator=gen))
        elif name.endswith("bias"):
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))


def build_models(case: Case, which: list[str], seed: int, hf_attn: str | None):
    """Ours, transformers and timm with identical weights, on CPU, fp32, eval mode."""
    from dinov3_hf.models.vit import Dinov3HfViTConfig, Dinov3HfViTModel

    config = Dinov3HfViTConfig.from_preset(case.preset, image_size=case.resolution)
    torch.manual_seed(seed)
    ours = Dinov3HfViTModel(config).eval()
    randomize_(ours, seed)
    models = {"ours": ours}

    if "hf" in which:
        from transformers import DINOv3ViTModel
        from transformers.utils import logging as hf_logging

        from dinov3_hf.convert import export_model

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stderr(open(os.devnull, "w")):
                export_model(ours, folder, to="hf")
                kwargs = {"attn_implementation": hf_attn} if hf_attn else {}
                models["hf"] = DINOv3ViTModel.from_pretrained(folder, **kwargs).eval()
        finally:
            hf_logging.set_verbosity(verbosity)

    if "timm" in which:
        import timm
        from timm.models.eva import checkpoint_filter_fn

        if case.preset not in TIMM_NAMES:
            raise SystemExit(f"No timm model for preset {case.preset!r}; known: {', '.join(TIMM_NAMES)}")
        tm = timm.create_model(
            TIMM_NAMES[case.preset], pretrained=False, num_classes=0, global_pool="token", img_size=case.resolution
        )
        state = checkpoint_filter_fn(dict(ours.state_dict()), tm)
        missing, unexpected = tm.load_state_dict(state, strict=True)
        assert not missing and not unexpected, (missing, unexpected)
        models["timm"] = tm.eval()

    for m in models.values():
        m.requires_grad_(False)
    if any(k in which for k in ORT_KEYS):
        models.update(ort_sessions(ours, case, [k for k in ORT_KEYS if k in which]))
    return config, models


def ort_sessions(ours: torch.nn.Module, case: Case, which: list[str]) -> dict:
    """ONNX Runtime sessions of ours: "ort" float32 (export_onnx), "int8" (quantize_dynamic_int8 of that file)."""
    import onnxruntime as ort

    from dinov3_hf.export.onnx import export_onnx
    from dinov3_hf.export.quantize import quantize_dynamic_int8

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    sessions = {}
    with tempfile.TemporaryDirectory() as folder:
        size = (case.resolution, case.resolution + 2 * ours.config.patch_size)
        float_path = export_onnx(ours, os.path.join(folder, "model.onnx"), example_size=size)
        paths = {"ort": float_path}
        if "int8" in which:
            paths["int8"] = quantize_dynamic_int8(float_path, os.path.join(folder, "model.int8.onnx"))
        for key in which:
            sessions[key] = ort.InferenceSession(str(paths[key]), options, providers=["CPUExecutionProvider"])
    return sessions


def ort_outputs(session, x: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, map(torch.from_numpy, session.run(None, {"pixel_values": x.cpu().numpy()}))))


def cls_token(key: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final-normed CLS token; the same call as the one timed."""
    if key == "timm":
        return model.forward_features(x)[:, 0]
    if key == "hf":
        return model(pixel_values=x).pooler_output
    if key in ORT_KEYS:
        return ort_outputs(model, x)["pooler_output"]
    return model(x).pooler_output


def forward_fn(key: str, model):
    if key == "timm":
        return model.forward_features
    if key == "hf":
        return lambda x: model(pixel_values=x)
    if key in ORT_KEYS:
        return lambda x: model.run(None, {"pixel_values": x.numpy()})
    return model


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, x, iters: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn(x)
    synchronize(device)
    return time.perf_counter() - start


def precision_context(precision: str, device: torch.device):
    if precision == "autocast-bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def no_tf32(device: torch.device):
    """TF32 matmuls and convolutions off on CUDA (nothing to do on CPU)."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_case(case: Case, args, device: torch.device) -> Result:
    which = ["ours"] + [m for m in (*ANCHORS, *ORT_KEYS) if m in args.models]
    config, models = build_models(case, which, args.seed, args.hf_attn)
    result = Result(case, vit_flops_per_image(config, case.resolution) / 1e9, iters=0)
    for key, m in models.items():
        if key not in ORT_KEYS:
            m.to(device)

    # 1) fp32 agreement on one image of the case's resolution (TF32 off so that fp32 means fp32)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x_check = torch.randn(1, 3, case.resolution, case.resolution, generator=gen).to(device)
    with torch.inference_mode(), no_tf32(device):
        ref = cls_token("ours", models["ours"], x_check).float()
        for key in which[1:]:
            out = cls_token(key, models[key], x_check).float()
            result.max_diff_fp32[key] = (out - ref).abs().max().item()
            if key == "int8":
                result.int8_cls_cosine = torch.nn.functional.cosine_similarity(out, ref).min().item()
    bad = {k: v for k, v in result.max_diff_fp32.items() if not v < args.atol and k != "int8"}
    if bad:
        raise SystemExit(f"[{case.name}] models disagree in fp32 (CLS max abs diff {bad}, atol {args.atol})")

    # 2) the timed precision
    if args.precision == "bf16":
        for key, m in models.items():
            if key not in ORT_KEYS:
                m.to(torch.bfloat16)
    in_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    x = torch.randn(case.batch, 3, case.resolution, case.resolution, generator=gen).to(device, in_dtype)
    fns = {k: forward_fn(k, m) for k, m in models.items()}
    if args.compile:
        fns = {k: torch.compile(fn, fullgraph=k == "ours") for k, fn in fns.items()}  # ours: one graph, no break

    with torch.inference_mode(), precision_context(args.precision, device):
        if args.precision != "fp32":
            ref = cls_token("ours", models["ours"], x_check.to(in_dtype)).float()
            for key in which[1:]:
                out = cls_token(key, models[key], x_check.to(in_dtype)).float()
                result.max_diff_timed[key] = (out - ref).abs().max().item()
        for _ in range(args.warmup):
            for fn in fns.values():
                fn(x)
        # calibrate iters per repetition on the fastest model, shared by all models of the case
        single = min(timed(fn, x, 1, device) for fn in fns.values())
        iters = max(1, math.ceil(args.min_time / max(single, 1e-6)))
        result.iters = iters
        runs = {k: [] for k in fns}
        keys = list(fns)
        for rep in range(args.repeats):
            shift = rep % len(keys)
            for key in keys[shift:] + keys[:shift]:
                elapsed = timed(fns[key], x, iters, device)
                runs[key].append(case.batch * iters / elapsed)
    result.runs = runs
    result.images_per_s = {k: statistics.median(v) for k, v in runs.items()}

    del models, fns
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """(max - min) / median, as a rough measure of run-to-run noise."""
    if len(values) < 2:
        return "-"
    return f"{100 * (max(values) - min(values)) / statistics.median(values):.0f}%"


def format_table(results: list[Result], args, device: torch.device) -> str:
    keys = ["ours"] + [m for m in (*ANCHORS, *ORT_KEYS) if m in args.models]
    pairs = [(o, a) for o in OURS for a in ANCHORS if o in keys and a in keys]
    names = {**MODEL_LABELS, "ours": "ours"}
    head = ["case", "GFLOP/img", "iters"] + [f"{MODEL_LABELS[k]} img/s" for k in keys]
    head += [f"{names[o]}/{MODEL_LABELS[a]} (best)" for o, a in pairs]
    if device.type == "cuda":
        head += [f"MFU {MODEL_LABELS[k]}" for k in keys]
    else:
        head += ["ours TFLOP/s"]
    head += ["spread (" + "/".join(MODEL_LABELS[k] for k in keys) + ")"]
    rows = []
    for r in results:
        ips = r.images_per_s
        row = [r.case.name, f"{r.gflops_per_image:.1f}", str(r.iters)]
        row += [f"{ips[k]:.2f}" if ips[k] < 100 else f"{ips[k]:.0f}" for k in keys]
        best = {k: max(r.runs[k]) for k in keys}
        row += [f"{ips[o] / ips[a]:.3f} ({best[o] / best[a]:.3f})" for o, a in pairs]
        if device.type == "cuda":
            row += [f"{100 * ips[k] * r.gflops_per_image / (args.peak_tflops * 1e3):.1f}%" for k in keys]
        else:
            row += [f"{ips['ours'] * r.gflops_per_image / 1e3:.3f}"]
        row += ["/".join(spread(r.runs[k]) for k in keys)]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N)")
    parser.add_argument("--cases", default=None,
                        help=f"comma list of preset@RESxBATCH (cpu default {CPU_CASES}; cuda default {CUDA_CASES})")
    parser.add_argument("--models", default=None,
                        help="comma list out of ours,hf,timm,ort,int8 (ours always runs; ort and int8: CPU, fp32 "
                             "only, without --compile; need onnxruntime, onnx and onnxscript). Default: all five "
                             "on cpu in fp32 without --compile, else ours,hf,timm")
    parser.add_argument("--precision", choices=["fp32", "autocast-bf16", "bf16"], default=None,
                        help="fp32; autocast-bf16 (fp32 weights under torch.autocast); bf16 (weights and input cast "
                             "to bf16). Default: fp32 on cpu, autocast-bf16 on cuda")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per model (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per model (default 2 cpu, 5 cuda)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds one repetition should last at least; sets forward calls per repetition "
                             "(default 0.3 cpu, 0.5 cuda)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="peak dense bf16 TFLOP/s for MFU on cuda (default 989 = H100 SXM; H200 is also 989, "
                             "H100 PCIe 756, A100 312)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs diff allowed on the fp32 CLS token")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each model's forward (ours with fullgraph=True)")
    parser.add_argument("--hf-attn", default=None, help="attn_implementation for transformers (default: its own, sdpa)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: 1 repeat, 1 warmup, cases {QUICK_CASES}")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    is_cuda = device.type == "cuda"
    args.precision = args.precision or ("autocast-bf16" if is_cuda else "fp32")
    ort_runs = not is_cuda and args.precision == "fp32" and not args.compile
    args.models = [m.strip() for m in (args.models or ("ours,hf,timm,ort,int8" if ort_runs else "ours,hf,timm"))
                   .split(",") if m.strip()]
    if any(k in args.models for k in ORT_KEYS):
        if not ort_runs:
            raise SystemExit("--models ort and int8 run on the CPU in fp32 without --compile; leave them out of "
                             "--models for --device cuda, --precision bf16/autocast-bf16 or --compile.")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise SystemExit("--models ort/int8 need onnxruntime: pip install 'dinov3-hf[onnx]', or pass "
                             "--models ours,hf,timm.") from None
    if args.quick:
        args.repeats, args.warmup = 1, 1 if args.warmup is None else args.warmup
        args.min_time = 0.0 if args.min_time is None else args.min_time
        args.cases = args.cases or QUICK_CASES
    args.warmup = args.warmup if args.warmup is not None else (5 if is_cuda else 2)
    args.min_time = args.min_time if args.min_time is not None else (0.5 if is_cuda else 0.3)
    cases = [Case.parse(s) for s in (args.cases or (CUDA_CASES if is_cuda else CPU_CASES)).split(",") if s.strip()]
    if is_cuda:
        torch.backends.cudnn.benchmark = True
    warnings.filterwarnings("ignore", category=UserWarning)

    print("\n".join(machine_lines(device)))
    print(
        f"setup   : device={device} precision={args.precision} inference_mode eval compile={args.compile} "
        f"repeats={args.repeats} warmup={args.warmup} min_time={args.min_time}s seed={args.seed}"
    )
    if is_cuda:
        print(f"MFU     : analytic matmul FLOPs / time / peak, peak = {args.peak_tflops:g} TFLOP/s dense bf16 "
              "(--peak-tflops)")
    print("models  : dinov3_hf Dinov3HfViTModel | transformers DINOv3ViTModel (export_model to='hf') | "
          "timm <preset>_qkvb .forward_features (checkpoint_filter_fn); same weights")
    print(flush=True)

    results = []
    for case in cases:
        t0 = time.perf_counter()
        r = run_case(case, args, device)
        results.append(r)
        diffs = " ".join(f"{MODEL_LABELS[k]}={v:.1e}" for k, v in r.max_diff_fp32.items())
        timed_diffs = " ".join(f"{MODEL_LABELS[k]}={v:.1e}" for k, v in r.max_diff_timed.items())
        ips = " ".join(f"{MODEL_LABELS[k]}={v:.2f}" for k, v in r.images_per_s.items())
        print(f"[{case.name}] fp32 CLS max|diff| vs ours: {diffs}"
              + (f" (int8 CLS cosine {r.int8_cls_cosine:.5f})" if r.int8_cls_cosine is not None else "")
              + (f" | {args.precision}: {timed_diffs}" if timed_diffs else "")
              + f" | img/s {ips} | {time.perf_counter() - t0:.0f}s", flush=True)

    print()
    print(format_table(results, args, device))
    print("\nimg/s: median over repeats; ratio > 1 means ours is faster, (best) = ratio of the fastest runs, which is "
          "less sensitive to other load; spread = (max - min) / median of a model's runs.")
    print(f"load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_lines(device),
                    "args": {k: v for k, v in vars(args).items()},
                    "results": [
                        {
                            "case": r.case.name, "gflops_per_image": r.gflops_per_image, "iters": r.iters,
                            "images_per_s": r.images_per_s, "runs": r.runs,
                            "max_diff_fp32": r.max_diff_fp32, "max_diff_timed": r.max_diff_timed,
                            "int8_cls_cosine": r.int8_cls_cosine,
                        }
                        for r in results
                    ],
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    sys.exit(main())
