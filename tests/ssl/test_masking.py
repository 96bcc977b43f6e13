"""Block masking: exact counts, block structure, reproducibility and the batch-level ratio spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov3_hf.ssl.masking import MaskingGenerator, sample_masks


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
    masking = MaskingGenerator(grid)
    n = grid[0] * grid[1]
    for count in sorted({0, 1, 2, 3, n // 10, n // 4, n // 3, n // 2, 2 * n // 3, n - 1, n}):
        if 0 <= count <= n:
            mask = masking(count, generator)
            assert mask.dtype == torch.bool and mask.shape == grid
            assert int(mask.sum()) == count, (grid, count)


def test_count_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        MaskingGenerator((4, 4))(17)
    with pytest.raises(ValueError, match="grid_size"):
        MaskingGenerator((0, 4))


def test_masks_are_blocky():
    generator = torch.Generator().manual_seed(1)
    masking = MaskingGenerator((14, 14))
    block, scattered = [], []
    for _ in range(20):
        block.append(_components(masking(60, generator)))
        random_mask = torch.zeros(196, dtype=torch.bool)
        random_mask[torch.randperm(196, generator=generator)[:60]] = True
        scattered.append(_components(random_mask.view(14, 14)))
    assert np.mean(block) < np.mean(scattered) / 4, (block, scattered)


def test_seeded_generator_reproducible():
    masking = MaskingGenerator((14, 14))
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
