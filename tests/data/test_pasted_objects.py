"""Pasted objects (`dinov3_hf.data.pasted_objects`): the labels are exact (masks are the visible pixels of each pasted
photo cutout, the background texture is untouched elsewhere), boxes and the semantic map agree with the masks, and
the set is deterministic per seed with held-out seeds and textures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torchvision.ops import masks_to_boxes

from dinov3_hf.data import make_pasted_objects
from dinov3_hf.data import pasted_objects as po
from dinov3_hf.data.stereo import load_quokka
from dinov3_hf.data.textures import texture


@pytest.fixture(scope="module")
def train():
    return make_pasted_objects(24, image_size=128, seed=0)


def test_masks_are_disjoint_and_large_enough(train):
    for record in train:
        assert record.masks.dtype == torch.bool and record.masks.shape[1:] == (128, 128)
        assert int(record.masks.sum(0).max()) <= 1
        for mask, placement in zip(record.masks, record.placements, strict=True):
            _, full, area = po._render(placement, 128)
            assert mask.numpy()[~full].sum() == 0  # visible part lies inside the pasted cutout
            assert mask.sum() >= max(po.MIN_VISIBLE_FRACTION * area, po.MIN_AREA_FRACTION * 128 * 128)


def test_boxes_are_tight_around_the_masks(train):
    for record in train:
        expected = masks_to_boxes(record.masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # last pixel's far edge
        assert record.boxes.dtype == torch.float32
        torch.testing.assert_close(record.boxes, expected, rtol=0, atol=0)


def test_semantic_map_and_panoptic_agree_with_masks_and_labels(train):
    for record in train:
        expected = torch.zeros(128, 128, dtype=torch.int64)
        for mask, label in zip(record.masks, record.labels, strict=True):
            expected[mask] = label + 1
        assert torch.equal(record.semantic, expected)
        panoptic = record.panoptic()
        for info in panoptic["segments_info"]:
            segment = panoptic["segmentation"] == info["id"]
            assert torch.equal(segment, record.masks[info["id"] - 1])
            assert info["label_id"] == int(record.labels[info["id"] - 1])
        assert torch.equal(panoptic["segmentation"] == 0, record.semantic == 0)


def test_background_is_the_texture_window_outside_the_masks(train):
    for record in train:
        top, left = record.background_offset
        window = texture(record.background, record.background_scale)[top : top + 128, left : left + 128]
        outside = (record.semantic == 0).numpy()
        pixels = np.asarray(record.image)
        np.testing.assert_array_equal(pixels[outside], window[outside])
        assert (pixels != window).any(axis=2)[~outside].mean() > 0.8  # objects replaced the texture


def _paste(source: np.ndarray, mask: np.ndarray, placement: po.Placement, size: int, resample) -> np.ndarray:
    """`source` cropped to `mask`'s box, resized, flipped and placed on a size x size canvas (zeros elsewhere)."""
    rows, cols = np.nonzero(mask)
    crop = Image.fromarray(source[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    pixels = np.asarray(crop.resize((placement.width, placement.height), resample))
    pixels = pixels[:, ::-1] if placement.flip else pixels
    pad = max(placement.height, placement.width)
    canvas = np.zeros((size + 2 * pad, size + 2 * pad, *pixels.shape[2:]), dtype=pixels.dtype)
    top, left = placement.top + pad, placement.left + pad
    canvas[top : top + placement.height, left : left + placement.width] = pixels
    return canvas[pad : pad + size, pad : pad + size]


def test_quokka_pixels_are_the_photo_under_its_mask():
    records = make_pasted_objects(40, image_size=128, seed=3)
    quokka = load_quokka()
    photo, polygon = np.asarray(quokka.image), quokka.mask.astype(np.uint8)
    checked = 0
    for record in records:
        for index, placement in enumerate(record.placements):
            if po.CATEGORIES[placement.category] != "quokka":
                continue
            mask = record.masks[index].numpy()
            pasted = _paste(polygon, polygon, placement, 128, Image.Resampling.NEAREST).astype(bool)
            in_front = record.masks[index + 1 :].any(dim=0).numpy()
            np.testing.assert_array_equal(mask, pasted & ~in_front)  # the polygon's visible part
            expected = _paste(photo, polygon, placement, 128, Image.Resampling.BILINEAR)
            np.testing.assert_array_equal(np.asarray(record.image)[mask], expected[mask])
            checked += 1
    assert checked >= 5 and any(p.flip for r in records for p in r.placements if p.category == 0)


def test_coin_cutouts_are_the_24_round_coins():
    cutouts = po.object_cutouts("coin")
    assert len(cutouts) == 24
    coins = skdata.coins()
    for image, mask in cutouts:
        height, width = mask.shape
        # a filled disc: mask area = pi / 4 of its box, and it touches all four box sides
        assert abs(mask.sum() / (np.pi / 4 * height * width) - 1) < 0.1
        assert 0.8 < height / width < 1.25 and mask[0].any() and mask[-1].any() and mask[:, 0].any()
        assert np.asarray(image)[mask].mean() > coins.mean()  # bright metal, not the dark background


def test_deterministic_and_held_out_differs():
    first, again = make_pasted_objects(6, 96, seed=0), make_pasted_objects(6, 96, seed=0)
    for a, b in zip(first, again, strict=True):
        assert a.image.tobytes() == b.image.tobytes() and torch.equal(a.masks, b.masks) and a.placements == b.placements
    assert make_pasted_objects(3, 96, seed=0)[2].image.tobytes() == first[2].image.tobytes()  # image i: (seed, i)
    reseeded = make_pasted_objects(6, 96, seed=1)
    assert all(a.image.tobytes() != b.image.tobytes() for a in first for b in reseeded)
    other = make_pasted_objects(6, 96, seed=1, backgrounds=po.HELD_OUT_BACKGROUNDS)
    assert all(a.image.tobytes() != b.image.tobytes() for a in first for b in other)
    assert {r.background for r in first} <= set(po.TRAIN_BACKGROUNDS)
    assert {r.background for r in other} <= set(po.HELD_OUT_BACKGROUNDS)
    assert not set(po.TRAIN_BACKGROUNDS) & set(po.HELD_OUT_BACKGROUNDS)


def test_every_category_appears_and_objects_vary(train):
    labels = torch.cat([r.labels for r in train])
    assert set(labels.tolist()) == set(range(len(po.CATEGORIES)))
    assert {len(r.labels) for r in train} >= {1, 2, 3}
    assert all(len(r.labels) <= po.MAX_OBJECTS for r in train)


def test_generation_is_fast():
    make_pasted_objects(1)
    start = time.perf_counter()
    make_pasted_objects(64, image_size=256)
    assert time.perf_counter() - start < 3.0  # about 0.4 s on a shared 2-core CPU


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="backgrounds must name textures"):
        make_pasted_objects(1, backgrounds=("nope",))
    with pytest.raises(ValueError, match="image_size"):
        make_pasted_objects(1, image_size=4)
