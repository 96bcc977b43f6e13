"""Texture mosaics: exact labels (every region's pixels are its class's texture) and seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from dinov3_hf.data import TextureMosaics, texture, texture_crop_dataset, texture_mosaic_dataset



@pytest.mark.parametrize("layout", ["voronoi", "rectangles"])
def test_every_region_is_copied_from_its_class_texture(layout):
    mosaics = TextureMosaics(size=(40, 56), layout=layout, n_regions=(2, 7), texture_scale=0.5, seed=3)
    seen_classes = set()
    for index in range(6):
        sample = mosaics[index]
        image = np.asarray(sample.image)
        assert image.shape == (40, 56, 3) and sample.labels.shape == (40, 56) and sample.labels.dtype == np.uint8
        # the regions partition the image and each has one class
        assert set(np.unique(sample.regions)) == set(range(len(sample.region_classes)))
        np.testing.assert_array_equal(sample.labels, np.asarray(sample.region_classes)[sample.regions])
        for region, (cls, (oy, ox)) in enumerate(zip(sample.region_classes, sample.region_offsets)):
            mask = sample.regions == region
            window = texture(mosaics.classes[cls], 0.5)[oy : oy + 40, ox : ox + 56]
            np.testing.assert_array_equal(image[mask], window[mask])
            # and not from any other class's texture at that place
            for other in set(range(len(mosaics.classes))) - {cls}:
                source = texture(mosaics.classes[other], 0.5)
                if source.shape[0] >= oy + 40 and source.shape[1] >= ox + 56:
                    assert not np.array_equal(image[mask], source[oy : oy + 40, ox : ox + 56][mask])
            seen_classes.add(cls)
    assert len(seen_classes) >= 3


def test_texture_sources_are_rgb_and_scaled():
    brick = texture("brick")
    assert brick.shape == (512, 512, 3) and brick.dtype == np.uint8
    assert np.array_equal(brick[..., 0], brick[..., 2])  # a grayscale texture, repeated
    assert texture("brick", 0.25).shape == (128, 128, 3)
    assert texture("coffee").shape == (400, 600, 3)
    with pytest.raises(ValueError, match="Unknown texture"):
        texture("lena")


def test_mosaics_are_seeded_and_independent_of_order():
    make = lambda seed: TextureMosaics(size=32, seed=seed)  # noqa: E731
    first, second = make(0), make(0)
    later = second[5]  # generated before the others: each sample depends on (seed, index) only
    for index in range(5):
        a, b = first[index], second[index]
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
        np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(np.asarray(first[5].image), np.asarray(later.image))
    assert not np.array_equal(np.asarray(first[0].image), np.asarray(first[1].image))
    assert not np.array_equal(np.asarray(first[0].image), np.asarray(make(1)[0].image))


def test_dataset_builders():
    seg = texture_mosaic_dataset(3, size=24, classes=("brick", "grass", "gravel"), seed=7)
    assert seg.num_rows == 3 and seg.column_names == ["image", "label"]
    row = seg[1]
    expected_image, expected_labels = TextureMosaics(size=24, classes=("brick", "grass", "gravel"), seed=7).pair(1)
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(expected_image))
    np.testing.assert_array_equal(np.asarray(row["label"]), expected_labels)  # PNG-exact class indices
    assert "0: brick, 1: grass, 2: gravel" in seg.info.description

    crops = texture_crop_dataset(10, size=24, seed=1)
    assert crops.features["label"].names == ["brick", "grass", "gravel", "coffee", "rocket"]
    assert crops["label"] == [i % 5 for i in range(10)]
    assert crops[0]["image"].size == (24, 24)


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout"):
        TextureMosaics(layout="hexagons")
    with pytest.raises(ValueError, match="smaller than"):
        TextureMosaics(classes=("chelsea",), size=400, texture_scale=0.5)
    with pytest.raises(ValueError, match="n_regions"):
        TextureMosaics(n_regions=(3, 2))


def test_source_rows_give_disjoint_train_and_held_out_windows():
    train = TextureMosaics(size=32, source_rows=(0.0, 0.6), seed=0)
    held_out = TextureMosaics(size=32, source_rows=(0.6, 1.0), seed=1)
    for mosaics, (start, stop) in ((train, (0.0, 0.6)), (held_out, (0.6, 1.0))):
        for index in range(8):
            sample = mosaics[index]
            for cls, (oy, _) in zip(sample.region_classes, sample.region_offsets):
                rows = texture(mosaics.classes[cls], 0.5).shape[0]
                assert round(start * rows) <= oy and oy + 32 <= round(stop * rows)
    with pytest.raises(ValueError, match="source_rows"):
        TextureMosaics(source_rows=(0.5, 0.5))
