"""Block masking: exact counts, block structure, reproducibility, the batch-level ratio spread and the official
float32 mask counts and block-area formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinov3_hf.ssl import collate
from dinov3_hf.ssl.augment import MultiCropAugmentation
from dinov3_hf.ssl.masking import MaskingGenerator, masked_patch_counts, max_block_patches, sample_masks


def _components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of True cells."""
    rows = mask.tolist()
    h, w = len(rows), len(rows[0])
    seen: set[tuple[int, int]] = set()
    count = 0
    for i in range(h):
        for j in range(w):
            if rows[i][j] and (i, j) not in seen:
                count += 1
                stack = [(i, j)]
                seen.add((i, j))
                while stack:
                    a, b = stack.pop()
                    for c, d in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                        if 0 <= c < h and 0 <= d < w and rows[c][d] and (c, d) not in seen:
                            seen.add((c, d))
                            stack.append((c, d))
    return count


@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (4, 4), (7, 7), (14, 14), (12, 16), (3, 20)])
def test_exact_counts(grid):
    generator = torch.Generator().manual_seed(0)
    n = grid[0] * grid[1]
    masking = MaskingGenerator(grid, max_num_patches=0.5 * n)
    for count in sorted({0, 1, 2, 3, n // 10, n // 4, n // 3, n // 2, 2 * n // 3, n - 1, n}):
        if 0 <= count <= n:
            mask = masking(count, generator)
            assert mask.dtype == torch.bool and mask.shape == grid
            assert int(mask.sum()) == count, (grid, count)


def test_count_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        MaskingGenerator((4, 4), max_num_patches=8)(17)
    with pytest.raises(ValueError, match="grid_size"):
        MaskingGenerator((0, 4), max_num_patches=8)


def test_masks_are_blocky():
    generator = torch.Generator().manual_seed(1)
    masking = MaskingGenerator((14, 14), max_num_patches=98)
    block, scattered = [], []
    for _ in range(20):
        block.append(_components(masking(60, generator)))
        random_mask = torch.zeros(196, dtype=torch.bool)
        random_mask[torch.randperm(196, generator=generator)[:60]] = True
        scattered.append(_components(random_mask.view(14, 14)))
    assert np.mean(block) < np.mean(scattered) / 4, (block, scattered)


def test_seeded_generator_reproducible():
    masking = MaskingGenerator((14, 14), max_num_patches=98)
    first = [masking(50, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(torch.equal(first[0], m) for m in first)
    other = masking(50, torch.Generator().manual_seed(8))
    assert not torch.equal(first[0], other)
    a = sample_masks(8, (14, 14), generator=torch.Generator().manual_seed(3))
    b = sample_masks(8, (14, 14), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_sample_masks_spread():
    n_patches = 14 * 14
    masks = sample_masks(8, (14, 14), mask_probability=0.5, generator=torch.Generator().manual_seed(0))
    assert masks.dtype == torch.bool and masks.shape == (8, n_patches)
    counts = sorted(int(c) for c in masks.sum(dim=1))
    expected = [int(n_patches * r) for r in np.linspace(0.1, 0.5, 5)[1:]]
    assert expected == [39, 58, 78, 98]
    assert counts == [0, 0, 0, 0] + expected
    orders = {
        tuple(sample_masks(8, (14, 14), generator=torch.Generator().manual_seed(s)).sum(1).tolist()) for s in range(5)
    }
    assert len(orders) > 1  # the rows are shuffled

    assert not sample_masks(4, (4, 4), mask_probability=0.0).any()
    all_masked = sample_masks(3, (10, 10), mask_probability=1.0, ratio_range=(0.2, 0.2))
    assert all_masked.sum(dim=1).tolist() == [20, 20, 20]
    with pytest.raises(ValueError, match="mask_probability"):
        sample_masks(4, (4, 4), mask_probability=1.5)
    with pytest.raises(ValueError, match="ratio_range"):
        sample_masks(4, (4, 4), ratio_range=(0.5, 0.1))


def official_counts(n_images: int, num_patches: int) -> list[int]:
    """The official collate's masked-patch counts: ratios torch.linspace(0.1, 0.5, n + 1) in float32, image i gets
    int(N · ratio[i + 1]) (a float32 product), n = int(n_images · 0.5)."""
    n = int(n_images * 0.5)
    ratios = torch.linspace(0.1, 0.5, n + 1, dtype=torch.float32)
    return [int(num_patches * ratios[i + 1]) for i in range(n)]


def test_mask_counts_are_the_official_float32_ones():
    """Batch sizes 1-128 per GPU (2 global crops each) on grids 14, 16, 32 and 48: identical to the official counts,
    which float64 ratios miss by one patch for 13 of the 512 combinations."""
    float64_differs = 0
    for grid in (14, 16, 32, 48):
        num_patches = grid * grid
        for batch in range(1, 129):
            expected = official_counts(2 * batch, num_patches)
            assert masked_patch_counts(2 * batch, num_patches, 0.5, (0.1, 0.5)) == expected, (batch, grid)
            float64 = [int(num_patches * r) for r in np.linspace(0.1, 0.5, batch + 1)[1:]]
            float64_differs += float64 != expected
    assert float64_differs == 13
    assert 81 in official_counts(98, 196) and 82 not in official_counts(98, 196)  # 49 per GPU, 14 x 14: not 82
    masks = sample_masks(98, (14, 14), generator=torch.Generator().manual_seed(0))
    assert sorted(masks.sum(1).tolist()) == sorted(official_counts(98, 196) + [0] * 49)


def test_max_block_patches_is_the_official_formula():
    """((0.5·S) // p · S) // p, Python's left-to-right precedence; worked by hand."""
    assert max_block_patches(224, 16) == 98.0  # 112 // 16 = 7; 7·224 = 1568; 1568 // 16 = 98 = 0.5·14²
    assert max_block_patches(112, 16) == 21.0  # 56 // 16 = 3; 3·112 = 336; 336 // 16 = 21, not 0.5·7² = 24.5
    assert max_block_patches(28, 4) == 21.0  # the Fashion-MNIST configs: 7 x 7 grid
    assert max_block_patches(200, 16) == 75.0  # 100 // 16 = 6; 6·200 = 1200; 1200 // 16 = 75 (12 x 12 grid: 72)
    assert max_block_patches(512, 32) == 128.0  # ConvNeXt students: stride 32 at twice the crop
    for grid in (7, 14, 15, 48):  # without max_num_patches, sample_masks uses the formula's value for h x h patches
        assert max_block_patches(grid * 16, 16) == max_block_patches(grid, 1) == (grid // 2) * grid
    with pytest.raises(ValueError, match=r"not square: pass max_num_patches=max_block_patches\(crop_size"):
        sample_masks(4, (4, 6))


def test_collator_uses_the_official_block_area(monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return sample_masks(*args, **kwargs)

    monkeypatch.setattr(collate, "sample_masks", spy)
    augmentation = MultiCropAugmentation(global_size=28, local_size=12, n_local_crops=1)
    collator = collate.MultiCropCollator(augmentation, patch_size=4)
    image = Image.new("RGB", (32, 32), (10, 120, 200))
    batch = collator([{"image": image}, {"image": image}])
    assert seen["max_num_patches"] == 21.0 and batch["masks"].shape == (4, 49)
