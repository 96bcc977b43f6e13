#!/usr/bin/env python
"""Patch features at pixel resolution on texture mosaics: bilinear interpolation against joint bilateral upsampling
guided by the image (dinov3_hf.dense.upsample_features), scored by linear probes; and foreground masks from the
first PCA component (dinov3_hf.dense.foreground_mask) against true masks.

Upsampling: texture mosaics (dinov3_hf.data.TextureMosaics) have exact pixel labels. The bilateral parameters are
chosen on validation mosaics (a second seed, training rows), never on the test set (another seed, and texture rows
never seen in training). Two softmax regressions (dinov3_hf.metrics.linear_probe.fit_linear_probe): the pixel probe
is fitted on random pixels of the upsampled training mosaics, per method; the patch probe on the patch features, its
logits then upsampled per method. Scores: mIoU and the DAVIS boundary F-score (dinov3_hf.metrics.boundary_f_score).

Foreground: IoU of the first-component mask with imgaug's quokka polygon and with horse-silhouette texture
composites, against a centre-box prior and Otsu's threshold.

Feature extractors: `pixels` (the raw RGB pixels of each 16 x 16 patch, 768-d: the no-model baseline), `shipped` (the
package's Fashion-MNIST ViT, patch 4, on the image downscaled 4x, so that each token covers 16 x 16 image pixels
like a ViT/16 on the full image) and `random` (the same architecture at random initialisation, seed 0).

    python bench/bench_upsampling.py --json bench/results/upsampling.json --markdown /tmp/tables.md   # ~10 minutes
    python bench/bench_upsampling.py --quick                                                          # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor

from dinov3_hf import Dinov3HfViTModel
from dinov3_hf.data import TextureMosaics
from dinov3_hf.dense import first_component_scores, foreground_mask, patch_feature_grid, upsample_features
from dinov3_hf.metrics import boundary_f_score, mean_iou
from dinov3_hf.metrics.linear_probe import fit_linear_probe
from dinov3_hf.pretrained_models import default_model_path

PATCH = 16  # mosaic pixels per token side, for every extractor


def image_tensor(image) -> torch.Tensor:
    """(3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def pixel_patches(image: torch.Tensor) -> torch.Tensor:
    """(3·16·16, h, w): the raw pixels of each 16 x 16 patch."""
    _, height, width = image.shape
    return F.unfold(image[None], PATCH, stride=PATCH).view(-1, height // PATCH, width // PATCH)


class VitFeatures:
    """(D, h, w) patch features of a ViT with patch size p, run on the image resized so that each token covers
    16 x 16 image pixels (area downsampling), normalised with the statistics of the shipped model's processor."""

    def __init__(self, model: Dinov3HfViTModel):
        processor = AutoImageProcessor.from_pretrained(default_model_path())
        self.model = model.eval()
        self.scale = PATCH // model.config.patch_size
        self.mean = torch.tensor(processor.image_mean)[:, None, None]
        self.std = torch.tensor(processor.image_std)[:, None, None]

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        x = F.interpolate(image[None], size=(height // self.scale, width // self.scale), mode="area")
        return patch_feature_grid(self.model, (x - self.mean) / self.std).permute(2, 0, 1)


def extractors(names: list[str]) -> dict:
    table = {}
    for name in names:
        if name == "pixels":
            table[name] = pixel_patches
        elif name == "shipped":
            table[name] = VitFeatures(Dinov3HfViTModel.from_pretrained(default_model_path()))
        elif name == "random":
            config = Dinov3HfViTModel.from_pretrained(default_model_path()).config
            torch.manual_seed(0)
            table[name] = VitFeatures(Dinov3HfViTModel(config))
        else:
            raise SystemExit(f"unknown feature extractor {name!r}; choose from pixels, shipped, random")
    return table


def upsampled(features, images, method: str, **params) -> list[torch.Tensor]:
    return [upsample_features(f[None], im, method=method, **params)[0] for f, im in zip(features, images)]


def scores(predictions, labels, n_classes) -> dict:
    references = [torch.from_numpy(label.astype(np.int64)) for label in labels]
    return {
        "miou": mean_iou(predictions, references, n_classes, ignore_index=None)["mean_iou"],
        "boundary_f": boundary_f_score(predictions, references, ignore_index=None),
    }


def pixel_probe_scores(train_maps, train_labels, test_maps, test_labels, n_classes, pixels_per_image, seed) -> dict:
    """Pixel protocol: the linear probe is fitted on `pixels_per_image` random pixels of each upsampled training map,
    and labels every pixel of the upsampled test maps."""
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for features, labels in zip(train_maps, train_labels):
        flat = features.flatten(1).T
        pick = torch.randperm(flat.shape[0], generator=generator)[:pixels_per_image]
        xs.append(flat[pick])
        ys.append(torch.from_numpy(labels.reshape(-1)[pick.numpy()].astype(np.int64)))
    logits = fit_linear_probe(torch.cat(xs), torch.cat(ys), n_classes)
    with torch.no_grad():
        predictions = [logits(f.flatten(1).T).argmax(-1).view(f.shape[1:]) for f in test_maps]
    return scores(predictions, test_labels, n_classes)


def fit_patch_probe(train_features, train_labels, n_classes):
    """Patch protocol, step 1: the linear probe fitted on the patch features, each labelled with the class of the
    patch's centre pixel."""
    x = torch.cat([f.flatten(1).T for f in train_features])
    centres = [lab[PATCH // 2 :: PATCH, PATCH // 2 :: PATCH] for lab in train_labels]
    y = torch.cat([torch.from_numpy(c.astype(np.int64)).reshape(-1) for c in centres])
    return fit_linear_probe(x, y, n_classes)


def patch_probe_scores(probe, test_features, test_images, test_labels, n_classes, method, **params) -> dict:
    """Patch protocol, step 2: the probe's patch logits upsampled to pixels (for a linear probe and these convex
    upsamplings, the same as the probe applied to the upsampled features), argmax per pixel."""
    with torch.no_grad():
        logits = [probe(f.flatten(1).T).T.reshape(n_classes, *f.shape[1:]) for f in test_features]
    predictions = [up.argmax(0) for up in upsampled(logits, test_images, method, **params)]
    return scores(predictions, test_labels, n_classes)


def mosaics(count: int, start: int, **kwargs):
    generator = TextureMosaics(**kwargs)
    pairs = [generator.pair(i) for i in range(start, start + count)]
    return [image_tensor(p[0]) for p in pairs], [p[1] for p in pairs], len(generator.classes)


# -- foreground masks from the first PCA component ----------------------------------------------------------------


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def centre_box(shape: tuple[int, int]) -> np.ndarray:
    """The prior "the object fills the middle": the central half of each side (a quarter of the area)."""
    mask = np.zeros(shape, dtype=bool)
    mask[shape[0] // 4 : 3 * shape[0] // 4, shape[1] // 4 : 3 * shape[1] // 4] = True
    return mask


def otsu_mask(image: torch.Tensor) -> np.ndarray:
    """Otsu's threshold on the grey level; the side holding most of the image border is background."""
    from skimage.filters import threshold_otsu

    grey = image.mean(0).numpy()
    mask = grey > threshold_otsu(grey)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return ~mask if border.mean() > 0.5 else mask


def foreground_samples(count: int, seed: int) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """(name, (3, H, W) image, true (H, W) mask): imgaug's quokka photo with its annotated polygon, resized to
    320 x 480, and `count` composites of scikit-image's horse silhouette (320 x 400) filled with one texture on a
    background of another (random windows of the default mosaic textures)."""
    from skimage.data import horse

    from dinov3_hf.data import load_quokka
    from dinov3_hf.data.textures import DEFAULT_CLASSES, texture

    quokka = load_quokka()
    image = image_tensor(quokka.image.resize((480, 320), Image.Resampling.BILINEAR))
    mask = np.asarray(Image.fromarray(quokka.mask).resize((480, 320), Image.Resampling.NEAREST))
    samples = [("quokka", image, mask)]
    shape = ~horse()[4:324]  # True on the horse
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in DEFAULT_CLASSES for b in DEFAULT_CLASSES if a != b]
    for index in rng.permutation(len(pairs))[:count]:
        inside, outside = pairs[index]
        layers = []
        for name in (inside, outside):
            source = texture(name, 1.0)
            oy = int(rng.integers(0, source.shape[0] - shape.shape[0] + 1))
            ox = int(rng.integers(0, source.shape[1] - shape.shape[1] + 1))
            layers.append(source[oy : oy + shape.shape[0], ox : ox + shape.shape[1]])
        composite = np.where(shape[..., None], layers[0], layers[1])
        samples.append((f"horse {inside} on {outside}", image_tensor(composite), shape))
    return samples


def foreground_scores(extractor_names: list[str], count: int, seed: int) -> list[dict]:
    """IoU with the true mask of: the centre-box prior, Otsu, and per feature extractor the first-PCA-component mask
    (patch mask at pixels by nearest neighbour, and the score map upsampled bilaterally then thresholded at 0)."""
    samples = foreground_samples(count, seed)
    table = extractors(extractor_names)
    rows = []
    for name, image, truth in samples:
        row = {"image": name, "centre_box": iou(centre_box(truth.shape), truth), "otsu": iou(otsu_mask(image), truth)}
        for feature_name, extract in table.items():
            grid = extract(image).permute(1, 2, 0)
            patch_mask = torch.from_numpy(foreground_mask(grid)).float()[None, None]
            nearest = F.interpolate(patch_mask, size=truth.shape, mode="nearest")[0, 0].numpy() > 0.5
            scores = torch.from_numpy(first_component_scores(grid)).float()[..., None]
            guided = upsample_features(scores, image, method="bilateral")[..., 0].numpy() > 0
            row[f"{feature_name}_nearest"] = iou(nearest, truth)
            row[f"{feature_name}_bilateral"] = iou(guided, truth)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", default="pixels,shipped,random")
    parser.add_argument("--size", type=int, default=128, help="mosaic side in pixels (a multiple of 16)")
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--val", type=int, default=20)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--pixels-per-image", type=int, default=1000)
    parser.add_argument("--sigma-range", default="0.05,0.1,0.2,0.4", help="candidates, chosen on validation")
    parser.add_argument("--sigma-spatial", default="0.5,1.0,2.0", help="candidates (patches), chosen on validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--composites", type=int, default=12, help="horse-shaped texture composites (foreground)")
    parser.add_argument("--parts", default="segmentation,foreground")
    parser.add_argument("--quick", action="store_true", help="few mosaics, one parameter pair, 2 composites")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.val, args.test, args.sigma_range, args.sigma_spatial = 8, 4, 6, "0.1", "1.0"
        args.composites = 2
    parts = args.parts.split(",")
    common = {"size": args.size, "texture_scale": 1.0, "n_regions": (3, 8)}
    train = mosaics(args.train, 0, seed=args.seed, source_rows=(0.0, 0.6), **common)
    val = mosaics(args.val, 0, seed=args.seed + 1, source_rows=(0.0, 0.6), **common)
    test = mosaics(args.test, 0, seed=args.seed + 1000, source_rows=(0.6, 1.0), **common)
    n_classes = train[2]
    grid = [(float(s), float(r)) for s in args.sigma_spatial.split(",") for r in args.sigma_range.split(",")]

    rows = []
    for name, extract in extractors(args.features.split(",") if "segmentation" in parts else []).items():
        start = time.perf_counter()
        feats = {key: [extract(im) for im in data[0]] for key, data in (("train", train), ("val", val), ("test", test))}
        probe = fit_patch_probe(feats["train"], train[1], n_classes)
        # the bilateral parameters: the best validation mIoU + boundary F of the patch protocol
        val_scores = {
            (s, r): patch_probe_scores(
                probe, feats["val"], val[0], val[1], n_classes, "bilateral", sigma_spatial=s, sigma_range=r
            )
            for s, r in grid
        }
        best = max(grid, key=lambda p: val_scores[p]["boundary_f"] + val_scores[p]["miou"])
        params = {"bilinear": {}, "bilateral": {"sigma_spatial": best[0], "sigma_range": best[1]}}
        row = {"features": name, "dim": feats["test"][0].shape[0], "sigma_spatial": best[0], "sigma_range": best[1]}
        for method, kwargs in params.items():
            row[f"patch_probe_{method}"] = patch_probe_scores(
                probe, feats["test"], test[0], test[1], n_classes, method, **kwargs
            )
            row[f"pixel_probe_{method}"] = pixel_probe_scores(
                upsampled(feats["train"], train[0], method, **kwargs),
                train[1],
                upsampled(feats["test"], test[0], method, **kwargs),
                test[1],
                n_classes,
                args.pixels_per_image,
                args.seed,
            )
        row["validation"] = {f"{s},{r}": v for (s, r), v in val_scores.items()}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    setup = {
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        "mosaics": f"{args.size}x{args.size}, 5 textures, 3-8 Voronoi regions, texture_scale 1.0",
        "splits": f"train {args.train} (seed {args.seed}, rows 0-0.6), validation {args.val} (seed {args.seed + 1}, "
        f"rows 0-0.6), test {args.test} (seed {args.seed + 1000}, rows 0.6-1)",
        "pixel_probe": f"softmax regression (L-BFGS) on {args.pixels_per_image} random pixels of each upsampled "
        "training mosaic, per method",
        "patch_probe": "softmax regression (L-BFGS) on the patch features (label of the centre pixel); its logits "
        "upsampled per method",
        "boundary_f": "DAVIS boundary F, bound_th 0.008 (ceil(0.008 x diagonal) pixels), mean over classes present",
        "foreground": "IoU with the true mask at 320 x 480 (quokka) / 320 x 400 (horse composites); 16 x 16 "
        "pixels per patch; mask = first PCA component > 0, signed so that the border is background",
    }
    foreground = (
        foreground_scores(args.features.split(","), args.composites, args.seed) if "foreground" in parts else []
    )
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": rows, "foreground": foreground}, indent=2) + "\n")
    if args.markdown:
        lines = [] if not rows else [
            "| features | dim | probe | bilinear mIoU | bilateral mIoU | bilinear boundary F | bilateral boundary F |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            for probe_kind in ("pixel", "patch"):
                lin, bil = row[f"{probe_kind}_probe_bilinear"], row[f"{probe_kind}_probe_bilateral"]
                lines.append(
                    f"| {row['features']} | {row['dim']} | {probe_kind} | {lin['miou']:.4f} | {bil['miou']:.4f} "
                    f"| {lin['boundary_f']:.4f} | {bil['boundary_f']:.4f} |"
                )
        if foreground:
            columns = [key for key in foreground[0] if key != "image"]
            lines += [""] * bool(lines) + ["| image | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
            for row in foreground:
                lines.append(f"| {row['image']} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
            composites = [row for row in foreground if row["image"] != "quokka"]
            if composites:
                means = [np.mean([row[c] for row in composites]) for c in columns]
                cells = " | ".join(f"{m:.3f}" for m in means)
                lines.append(f"| mean of {len(composites)} horse composites | {cells} |")
        args.markdown.write_text("\n".join(lines) + "\n")
    return {"setup": setup, "results": rows, "foreground": foreground}


if __name__ == "__main__":
    main()
