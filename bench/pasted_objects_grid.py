#!/usr/bin/env python
"""Example picture of the pasted-objects set (`dinov3_hf.data.pasted_objects`) and its generation time.

Top rows: training images (seed 0, `TRAIN_BACKGROUNDS`); bottom row: held-out images (seed 1,
`HELD_OUT_BACKGROUNDS`). Each image shows its visible masks in the colour of their category, blended at 0.3, and
each box (xyxy pixels) in that colour with the category name.

    python bench/pasted_objects_grid.py                      # writes bench/results/pasted_objects.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dinov3_hf.data.pasted_objects import CATEGORIES, HELD_OUT_BACKGROUNDS, PastedObjectsImage, make_pasted_objects
from dinov3_hf.viz import label_palette, segmentation_overlay


def annotated(record: PastedObjectsImage) -> Image.Image:
    palette = label_palette(len(CATEGORIES))
    classes = torch.where(record.semantic > 0, record.semantic - 1, torch.full_like(record.semantic, 255))
    picture = segmentation_overlay(record.image, classes, alpha=0.3, palette=palette, ignore_index=255)
    draw = ImageDraw.Draw(picture)
    for box, label in zip(record.boxes.tolist(), record.labels.tolist()):
        colour = tuple(int(c) for c in palette[label])
        x0, y0, x1, y1 = box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)
        draw.text((x0 + 3, y0 + 2), CATEGORIES[label], fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pasted_objects.png")
    args = parser.parse_args()

    make_pasted_objects(1, args.size)  # load and cut out the source photos once
    start = time.perf_counter()
    make_pasted_objects(64, args.size)
    print(f"64 images of {args.size} px: {time.perf_counter() - start:.3f} s")

    train = make_pasted_objects(2 * args.columns, args.size, seed=0)
    held_out = make_pasted_objects(args.columns, args.size, seed=1, backgrounds=HELD_OUT_BACKGROUNDS)
    records = train + held_out
    gap = 4
    grid = Image.new("RGB", (args.columns * (args.size + gap) - gap, 3 * (args.size + gap) - gap), (255, 255, 255))
    for index, record in enumerate(records):
        row, column = divmod(index, args.columns)
        grid.paste(annotated(record), (column * (args.size + gap), row * (args.size + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    counts = np.bincount(torch.cat([r.labels for r in records]).numpy(), minlength=len(CATEGORIES))
    print(f"wrote {args.out}: {len(records)} images, objects per category {dict(zip(CATEGORIES, counts.tolist()))}")


if __name__ == "__main__":
    main()
