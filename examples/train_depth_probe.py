#!/usr/bin/env python
"""Train the official linear depth probe on a real image with ground-truth depth; report RMSE / AbsRel / delta1.

Data: the Middlebury "motorcycle" image bundled with scikit-image, with metric depth from its ground-truth disparity
(dinov3_hf.data.load_motorcycle), or imgaug's quokka photo with its relative depth map (`--image quokka`; needs
`pip install --no-deps imgaug==0.4.0`). Being a single image, it is split by columns: random crops from the left
part train `Dinov3HfForDepthEstimation` (frozen backbone, BatchNorm + 1x1 conv to depth bins, SigLoss), crops from
the right part are held out. A plain PyTorch loop trains the head; the metrics are dinov3_hf.metrics.depth_metrics,
compared with a constant prediction (the median training depth).

    python examples/train_depth_probe.py                 # shipped backbone, motorcycle, ~1 CPU minute
    python examples/train_depth_probe.py --image quokka --output-dir runs/depth_probe
    python examples/train_depth_probe.py --smoke
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dinov3_hf.data import depth_crops, load_depth_sample
from dinov3_hf.metrics import depth_metrics
from dinov3_hf.models.heads import Dinov3HfForDepthEstimation
from dinov3_hf.pretrained_models import load_backbone


def to_tensors(crops, processor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = [image for image, _ in crops]
    pixel_values = processor(images, size={"height": size, "width": size}, return_tensors="pt")["pixel_values"]
    depth = torch.stack([torch.from_numpy(d) for _, d in crops])
    return pixel_values, depth


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="backbone checkpoint (default: the shipped model); 'random' = tiny random")
    parser.add_argument("--image", choices=["motorcycle", "quokka"], default="motorcycle")
    parser.add_argument("--split", type=float, default=0.65, help="fraction of the width used for training crops")
    parser.add_argument("--crop-size", type=int, default=160, help="crop size in image pixels")
    parser.add_argument("--image-size", type=int, default=64, help="model input size the crops are resized to")
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-test", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--n-bins", type=int, default=256)
    parser.add_argument("--output-dir", type=Path, default=None, help="save the probe and a depth map of the image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny data and 3 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_train, args.num_test, args.steps, args.image_size, args.batch_size = 8, 4, 3, 32, 4

    sample = load_depth_sample(args.image)
    train = depth_crops(sample, args.num_train, args.crop_size, args.image_size, (0.0, args.split), seed=args.seed)
    test = depth_crops(sample, args.num_test, args.crop_size, args.image_size, (args.split, 1.0), seed=args.seed + 1)
    backbone, processor = load_backbone(args.backbone, args.seed)
    train_x, train_y = to_tensors(train, processor, args.image_size)
    test_x, test_y = to_tensors(test, processor, args.image_size)
    valid = train_y[train_y > 0]
    print(
        f"{sample.name}: {len(train)} train crops (left {args.split:.0%}), {len(test)} held-out crops; depth "
        f"{valid.min():.2f} .. {valid.max():.2f} {sample.units}"
    )

    torch.manual_seed(args.seed)
    model = Dinov3HfForDepthEstimation.from_backbone(
        backbone,
        min_depth=1e-3,
        max_depth=float(1.25 * valid.max()),
        n_bins=args.n_bins,
        sigloss_warmup_steps=min(100, args.steps // 4),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    for step in range(args.steps):
        index = torch.randint(len(train_x), (args.batch_size,), generator=generator)
        pixel_values, labels = train_x[index], train_y[index]
        flip = torch.rand(args.batch_size, generator=generator) < 0.5  # horizontal flips of image and depth
        pixel_values = torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)
        labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
        loss = model(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  SigLoss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        chunks = [model(pixel_values=test_x[i : i + 16]).predicted_depth for i in range(0, len(test_x), 16)]
    predicted = torch.cat(chunks)
    probe = depth_metrics(predicted, test_y)
    constant = depth_metrics(torch.full_like(test_y, float(valid.median())), test_y)
    for name, m in (("linear probe", probe), ("constant median", constant)):
        print(
            f"[{name}] held-out RMSE {m['rmse']:.3f} {sample.units}, AbsRel {m['abs_rel']:.3f}, "
            f"delta1 {m['delta1']:.3f}"
        )

    if args.output_dir:
        from dinov3_hf.viz import colorize_depth

        model.save_pretrained(args.output_dir)
        processor.save_pretrained(args.output_dir)
        # the whole image at the scale of the training crops
        shortest = round(sample.image.height * args.image_size / args.crop_size)
        full = processor(sample.image, size={"shortest_edge": shortest}, return_tensors="pt")
        with torch.no_grad():
            output = model(**full)
        depth = processor.post_process_depth_estimation(output, target_sizes=[sample.depth.shape])[0]
        out = Path(args.output_dir)
        colorize_depth(depth["predicted_depth"]).save(out / f"{sample.name}_predicted_depth.png")
        colorize_depth(sample.depth).save(out / f"{sample.name}_true_depth.png")
        print(f"saved the probe and depth maps to {out} (try: dinov3-hf depth IMAGE --model {out} --out DIR)")
    return {
        "rmse": probe["rmse"],
        "abs_rel": probe["abs_rel"],
        "delta1": probe["delta1"],
        "baseline_rmse": constant["rmse"],
        "baseline_abs_rel": constant["abs_rel"],
        "baseline_delta1": constant["delta1"],
    }


if __name__ == "__main__":
    main()
