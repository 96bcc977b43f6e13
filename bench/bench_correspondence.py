"""Dense correspondences on real photos with known geometry: DINOv3 patch features against raw-pixel patches.

Pairs (fixed before any measurement; the seeds only draw the warps):
- scikit-image photos (astronaut, coffee, chelsea, rocket), each with two views B of the same size as A made by
  `skimage.transform.warp` with a known homography H (A pixel -> B pixel, pixel centres at integers): "zoom", a
  crop zoomed by 1.4 around a random point, and "homography", a rotation of up to 20 degrees, a scale of 0.8 to
  1.25, a perspective term and a shift, all drawn from a seeded generator; pixels from outside A are black;
- the Graffiti pair of the Oxford affine data set (graf1 -> graf3 with its ground-truth homography H1to3p), when
  Debian's opencv-doc is installed (/usr/share/doc/opencv-doc/examples/data).

Methods: each backbone at its own stride and input size, and raw-pixel patches at the same stride and input size
with the same matcher (`dinov3_hf.dense.RawPixelPatches`: a patch's processed pixels, i.e. normalised with the
model's mean and std, as a unit vector; and the same minus the patch's mean, normalised cross-correlation).

Measures, for each method and pair, with the error of a match the distance between its keypoint in B and H applied to
its keypoint in A, in pixels of B, and PCK@alpha the fraction of errors below alpha x the diagonal of B:
- mutual: the mutual nearest-neighbour matches (`match_features` defaults): their number and PCK;
- the same matches with B's keypoints refined on B's features upsampled 4x ("argmax", "soft-argmax" on bilinear
  features; "soft-argmax, bilateral" on features upsampled by `upsample_features(method="bilateral")` guided by B);
- dense NN: every patch of A whose centre H maps inside B, matched one way to its nearest neighbour (no mutual check):
  PCK over all these queries, which does not reward a method for returning few matches.

    python bench/bench_correspondence.py            # about 5 minutes on 2 shared CPU cores
    python bench/bench_correspondence.py --quick    # one photo, one view
    python bench/bench_correspondence.py --model runs/photos_cpu/teacher_backbone   # a backbone you trained
    python bench/bench_correspondence.py --model runs/photos_cpu/teacher_backbone --blocks 0 1   # and its early blocks

Results go to bench/results/correspondence.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data
from skimage.transform import ProjectiveTransform, warp
from transformers import AutoImageProcessor

from dinov3_hf import Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.dense import RawPixelPatches, grid_to_pixels, match_features, patch_feature_grid
from dinov3_hf.dense.correspondence import PixelPatchOutput
from dinov3_hf.dense.upsample import upsample_features
from dinov3_hf.metrics import pck
from dinov3_hf.pretrained_models import default_model_path
from dinov3_hf.processing import Dinov3HfImageProcessor

REPO = Path(__file__).parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
GRAFFITI = Path("/usr/share/doc/opencv-doc/examples/data")
ALPHAS = (0.01, 0.02, 0.05, 0.10)
REFINE_FACTOR = 4
VARIANTS = ("mutual", "mutual + argmax", "mutual + soft-argmax", "mutual + soft-argmax, bilateral", "dense NN")


# -- pairs -------------------------------------------------------------------------------------------------------------


def _about_centre(matrix: np.ndarray, centre: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x -> matrix (x - centre) + centre + shift, as a 3 x 3 homography (matrix is 3 x 3 on centred coordinates)."""
    to_centre, back = np.eye(3), np.eye(3)
    to_centre[:2, 2] = -centre
    back[:2, 2] = centre + shift
    return back @ matrix @ to_centre


def zoom_homography(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Zoom by 1.4 about a point drawn within the central half of the image (a crop of A scaled up)."""
    centre = np.array([width, height]) * rng.uniform(0.25, 0.75, size=2)
    matrix = np.diag([1.4, 1.4, 1.0])
    return _about_centre(matrix, centre, np.array([width, height]) / 2 - centre)


def random_homography(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Rotation U(-20, 20) degrees and scale U(0.8, 1.25) about the centre, perspective terms U(-0.25, 0.25) / side
    (at most a 25 % change of the projective scale at the border) and a shift U(-0.05, 0.05) x side."""
    angle, scale = math.radians(rng.uniform(-20, 20)), rng.uniform(0.8, 1.25)
    matrix = np.eye(3)
    matrix[:2, :2] = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix[2, :2] = rng.uniform(-0.25, 0.25, size=2) / np.array([width, height])
    centre = np.array([width, height]) / 2 - 0.5
    return _about_centre(matrix, centre, rng.uniform(-0.05, 0.05, size=2) * np.array([width, height]))


def photo_pairs(quick: bool) -> list[dict]:
    pairs = []
    for index, name in enumerate(PHOTOS[:1] if quick else PHOTOS):
        image_a = getattr(data, name)()[..., :3]
        height, width = image_a.shape[:2]
        rng = np.random.default_rng(index)
        views = {"zoom": zoom_homography(rng, height, width), "homography": random_homography(rng, height, width)}
        for view, homography in list(views.items())[: 1 if quick else 2]:
            warped = warp(image_a, ProjectiveTransform(matrix=homography).inverse, order=1, cval=0.0)
            image_b = (warped * 255).round().astype(np.uint8)
            pairs.append({"name": f"{name} {view}", "a": image_a, "b": image_b, "homography": homography})
    return pairs


def graffiti_pair() -> dict | None:
    paths = [GRAFFITI / name for name in ("graf1.png", "graf3.png", "H1to3p.xml")]
    if not all(path.is_file() for path in paths):
        return None
    values = ET.parse(paths[2]).getroot().find("H13/data").text.split()
    homography = np.array([float(v) for v in values]).reshape(3, 3)
    images = [np.asarray(Image.open(path).convert("RGB")) for path in paths[:2]]
    return {"name": "graffiti 1 -> 3", "a": images[0], "b": images[1], "homography": homography}


# -- methods -----------------------------------------------------------------------------------------------------------


def methods() -> list[dict]:
    """(name, model, processor, shorter side): each backbone and the raw-pixel baseline at the same stride and size."""
    shipped = default_model_path()
    trained = Dinov3HfViTModel.from_pretrained(shipped).eval()
    shipped_processor = AutoImageProcessor.from_pretrained(shipped)
    torch.manual_seed(0)
    random_small = Dinov3HfViTModel(Dinov3HfViTConfig.from_pretrained(shipped)).eval()
    torch.manual_seed(0)
    vits16_config = Dinov3HfViTConfig.from_preset("vits16")
    vits16 = Dinov3HfViTModel(vits16_config).eval()
    vits16_processor = Dinov3HfImageProcessor.for_model_config(vits16_config)
    return [
        {"name": "fmnist_vit (shipped, trained on Fashion-MNIST)", "model": trained, "processor": shipped_processor,
         "size": 224},
        {"name": "fmnist_vit architecture, random init", "model": random_small, "processor": shipped_processor,
         "size": 224},
        {"name": "raw pixels, 4 px patches", "model": RawPixelPatches(4, subtract_mean=False),
         "processor": shipped_processor, "size": 224},
        {"name": "raw pixels minus patch mean, 4 px patches", "model": RawPixelPatches(4),
         "processor": shipped_processor, "size": 224},
        {"name": "ViT-S/16 preset, random init", "model": vits16, "processor": vits16_processor, "size": 448},
        {"name": "raw pixels, 16 px patches", "model": RawPixelPatches(16, subtract_mean=False),
         "processor": vits16_processor, "size": 448},
        {"name": "raw pixels minus patch mean, 16 px patches", "model": RawPixelPatches(16),
         "processor": vits16_processor, "size": 448},
    ]


class BlockFeatures(torch.nn.Module):
    """A ViT's patch tokens after block `block` (0-based), through the final LayerNorm, with the backbone interface
    that `patch_feature_grid` takes (`config.output_stride`, `patch_tokens`)."""

    def __init__(self, backbone: Dinov3HfViTModel, block: int):
        super().__init__()
        self.backbone, self.block, self.config = backbone, block, backbone.config

    def forward(self, pixel_values: torch.Tensor) -> PixelPatchOutput:
        (tokens,) = self.backbone.get_intermediate_layers(pixel_values, n=[self.block], norm=True)
        return PixelPatchOutput(patch_tokens=tokens)


def model_methods(path: Path, size: int, blocks: list[int]) -> list[dict]:
    """A saved backbone folder (e.g. a run's teacher_backbone/) at its last block and at each of `blocks`, its
    architecture at random init and raw-pixel patches at its patch size, all with the folder's processor at `size`
    pixels (shorter side)."""
    processor = AutoImageProcessor.from_pretrained(path)
    config = Dinov3HfViTConfig.from_pretrained(path)
    torch.manual_seed(0)
    random_init = Dinov3HfViTModel(config).eval()
    trained = Dinov3HfViTModel.from_pretrained(path).eval()
    return [
        {"name": f"{path.name} ({path})", "model": trained, "processor": processor, "size": size},
        *({"name": f"{path.name}, block {block}", "model": BlockFeatures(trained, block), "processor": processor,
           "size": size} for block in blocks),
        {"name": "same architecture, random init", "model": random_init, "processor": processor, "size": size},
        {"name": f"raw pixels, {config.patch_size} px patches",
         "model": RawPixelPatches(config.patch_size, subtract_mean=False), "processor": processor, "size": size},
    ]


# -- evaluation --------------------------------------------------------------------------------------------------------


def _grid(method: dict, image: np.ndarray) -> torch.Tensor:
    kwargs = {"size": {"shortest_edge": method["size"]}, "do_center_crop": False, "return_tensors": "pt"}
    return patch_feature_grid(method["model"], method["processor"](Image.fromarray(image), **kwargs)["pixel_values"])


def _pck(pred: torch.Tensor, true: torch.Tensor, size_b: tuple[int, int]) -> dict[str, float | None]:
    if len(pred) == 0:
        return {str(alpha): None for alpha in ALPHAS}
    return {str(alpha): pck(pred, true, alpha, image_size=size_b) for alpha in ALPHAS}


@torch.no_grad()
def evaluate(method: dict, pair: dict) -> dict:
    grid_a, grid_b = _grid(method, pair["a"]), _grid(method, pair["b"])
    size_a, size_b = pair["a"].shape[:2], pair["b"].shape[:2]
    transform = ProjectiveTransform(matrix=pair["homography"])

    def truth(points_a: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(transform(points_a.double().numpy())).float()

    fine = (REFINE_FACTOR * grid_b.shape[0], REFINE_FACTOR * grid_b.shape[1])
    bilateral = upsample_features(grid_b, image=pair["b"], size=fine, method="bilateral")
    settings = {
        "mutual": {},
        "mutual + argmax": {"refine": "argmax", "refine_factor": REFINE_FACTOR},
        "mutual + soft-argmax": {"refine": "soft-argmax", "refine_factor": REFINE_FACTOR},
        "mutual + soft-argmax, bilateral": {"refine": "soft-argmax", "fine_feats_b": bilateral},
        "dense NN": {"mutual": False},
    }
    result = {}
    for variant, kwargs in settings.items():
        matches = match_features(grid_a, grid_b, **kwargs)
        points_a = grid_to_pixels(matches["keypoints0"], grid_a.shape[:2], size_a)
        points_b = grid_to_pixels(matches["keypoints1"], grid_b.shape[:2], size_b)
        true_b = truth(points_a)
        if variant == "dense NN":  # only the queries whose true position lies inside B
            inside = (true_b >= -0.5).all(dim=1) & (true_b[:, 0] < size_b[1] - 0.5) & (true_b[:, 1] < size_b[0] - 0.5)
            points_b, true_b = points_b[inside], true_b[inside]
        result[variant] = {"n": len(points_b), "pck": _pck(points_b, true_b, size_b)}
    result["grid_a"], result["grid_b"] = list(grid_a.shape[:2]), list(grid_b.shape[:2])
    return result


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(results: dict, pairs: list[str]) -> dict:
    """Per method and variant: mean over pairs of the per-pair PCK, and the mean number of matches / queries."""
    summary = {}
    for method, per_pair in results.items():
        summary[method] = {
            variant: {
                "n": _mean([per_pair[p][variant]["n"] for p in pairs]),
                "pck": {str(a): _mean([per_pair[p][variant]["pck"][str(a)] for p in pairs]) for a in ALPHAS},
            }
            for variant in VARIANTS
        }
    return summary


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def write_markdown(path: Path, payload: dict) -> None:
    alphas = " | ".join(f"PCK@{a}" for a in ALPHAS)
    lines = [
        "# Dense correspondences: DINOv3 patch features vs raw-pixel patches",
        "",
        f"`python bench/bench_correspondence.py` ({payload['machine']}). Protocol: the docstring of "
        "bench/bench_correspondence.py. PCK@alpha: fraction of matches whose keypoint in B is less than alpha x B's "
        "diagonal from the ground-truth homography's image of its keypoint in A; means over the "
        f"{len(payload['pairs'])} pairs ({', '.join(payload['pairs'])}); n: mean matches (mutual) or queries "
        "(dense NN) per pair. Refinement: B's features upsampled 4x.",
        "",
    ]
    for variant in VARIANTS:
        header = f"| method | grid (shorter side) | n | {alphas} |"
        lines += [f"## {variant}", "", header, "|---|---|---|" + "---|" * len(ALPHAS)]
        for method, row in payload["summary"].items():
            cells = " | ".join(_fmt(row[variant]["pck"][str(a)]) for a in ALPHAS)
            lines.append(f"| {method} | {payload['grids'][method]} | {row[variant]['n']:.0f} | {cells} |")
        lines.append("")
    lines += ["## Per pair: mutual matches, PCK@0.05 (n)", ""]
    lines += ["| method | " + " | ".join(payload["pairs"]) + " |", "|---|" + "---|" * len(payload["pairs"])]
    for method, per_pair in payload["results"].items():
        cells = " | ".join(
            f"{_fmt(per_pair[p]['mutual']['pck']['0.05'])} ({per_pair[p]['mutual']['n']})" for p in payload["pairs"]
        )
        lines.append(f"| {method} | {cells} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one photo, one view")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--model", type=Path, default=None,
                        help="a saved ViT backbone folder: evaluate it, its architecture at random init and raw pixels "
                        "instead of the default methods; results go to correspondence_model.{json,md}")
    parser.add_argument("--size", type=int, default=224, help="shorter side in pixels for --model")
    parser.add_argument("--blocks", type=int, nargs="*", default=[],
                        help="with --model: also match its patch tokens after these blocks (0-based, final norm)")
    args = parser.parse_args()
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model} is not a saved backbone folder (no config.json); pass e.g. a run's "
                     "teacher_backbone/ folder.")

    pairs = photo_pairs(args.quick)
    graffiti = None if args.quick else graffiti_pair()
    if graffiti is not None:
        pairs.append(graffiti)
    elif not args.quick:
        print(f"Graffiti pair not found under {GRAFFITI} (apt-get install opencv-doc); skipped.")
    start = time.perf_counter()
    results, grids = {}, {}
    for method in methods() if args.model is None else model_methods(args.model, args.size, args.blocks):
        results[method["name"]] = {}
        for pair in pairs:
            results[method["name"]][pair["name"]] = evaluate(method, pair)
        shorter = min(results[method["name"]][pairs[0]["name"]]["grid_a"])
        grids[method["name"]] = f"{shorter} tokens ({method['size']} px)"
        mutual = summarise(results, [p["name"] for p in pairs])[method["name"]]["mutual"]["pck"]["0.05"]
        print(f"{method['name']}: mutual PCK@0.05 {_fmt(mutual)} ({time.perf_counter() - start:.0f} s)", flush=True)
    names = [p["name"] for p in pairs]
    payload = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end",
        "alphas": list(ALPHAS),
        "pairs": names,
        "grids": grids,
        "summary": summarise(results, names),
        "results": results,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "correspondence" + ("_model" if args.model is not None else "") + ("_quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    write_markdown(args.out / f"{stem}.md", payload)
    print(f"Wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
