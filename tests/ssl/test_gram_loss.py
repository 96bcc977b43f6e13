"""Gram anchoring loss: hand-computed values, zero at equality, scale invariance, bicubic downsampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinov3_hf.ssl.losses import GramLoss, downsample_patch_tokens, gram_matrix


def test_gram_loss_by_hand():
    # one image, two patches. Student patches (1,0) and (0,1): Gram [[1,0],[0,1]].
    # Teacher patches (1,0) and (1,1)/√2·3 (scale does not matter): Gram [[1, 1/√2], [1/√2, 1]].
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [3.0, 3.0]]])
    expected = 2 * (1 / math.sqrt(2)) ** 2 / 4  # two off-diagonal entries differ by 1/√2, mean over 4 entries
    assert GramLoss()(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert gram_matrix(teacher)[0, 0, 1].item() == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def test_gram_loss_zero_for_equal_features_and_scale_invariant():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 10, 8), torch.randn(3, 10, 8)
    loss = GramLoss()
    assert loss(student, student.clone()).item() == pytest.approx(0.0, abs=1e-7)
    reference = loss(student, teacher).item()
    assert reference > 0.05
    assert loss(student * 7.5, teacher).item() == pytest.approx(reference, rel=1e-5)
    assert loss(student, teacher * 0.01).item() == pytest.approx(reference, rel=1e-5)
    # per-patch scales do not matter either (each patch is normalised)
    per_patch = torch.rand(3, 10, 1) + 0.5
    assert loss(student * per_patch, teacher).item() == pytest.approx(reference, rel=1e-5)


def test_gram_loss_is_image_level_and_fp32():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    per_image = [GramLoss()(student[i : i + 1], teacher[i : i + 1]).item() for i in range(2)]
    assert GramLoss()(student, teacher).item() == pytest.approx(sum(per_image) / 2, rel=1e-6)
    half = GramLoss()(student.bfloat16(), teacher.bfloat16())
    assert half.dtype == torch.float32


def test_gram_loss_gradient_flows_to_student_only():
    student = torch.randn(1, 5, 4, requires_grad=True)
    teacher = torch.randn(1, 5, 4, requires_grad=True)
    GramLoss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_gram_loss_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="downsample the teacher"):
        GramLoss()(torch.randn(1, 4, 3), torch.randn(1, 16, 3))


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with a = -0.75 (PyTorch's bicubic)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _bicubic_1d(values: list[float], out_size: int) -> list[float]:
    """align_corners=False: source coordinate (i + 0.5)·scale − 0.5, border-clamped taps, no antialiasing."""
    scale = len(values) / out_size
    out = []
    for i in range(out_size):
        x = (i + 0.5) * scale - 0.5
        x0 = math.floor(x)
        frac = x - x0
        total = 0.0
        for k in range(-1, 3):
            index = min(max(x0 + k, 0), len(values) - 1)
            total += values[index] * _cubic(frac - k)
        out.append(total)
    return out


def test_downsample_patch_tokens_follows_bicubic_by_hand():
    torch.manual_seed(2)
    h, w, dim = 6, 4, 3
    tokens = torch.randn(2, h * w, dim, dtype=torch.float64)
    out = downsample_patch_tokens(tokens, (h, w), (3, 2))
    assert out.shape == (2, 6, dim)
    # separable bicubic by hand: rows first, then columns
    grid = tokens.view(2, h, w, dim)
    for b in range(2):
        for d in range(dim):
            rows = [_bicubic_1d(grid[b, y, :, d].tolist(), 2) for y in range(h)]
            cols = [_bicubic_1d([rows[y][x] for y in range(h)], 3) for x in range(2)]
            expected = torch.tensor([[cols[x][y] for x in range(2)] for y in range(3)], dtype=torch.float64)
            assert torch.allclose(out.view(2, 3, 2, dim)[b, :, :, d], expected, atol=1e-10)
    # and it is F.interpolate(bicubic, align_corners=False, antialias=False) on the [D, h, w] maps
    maps = tokens.view(2, h, w, dim).permute(0, 3, 1, 2)
    reference = F.interpolate(maps, size=(3, 2), mode="bicubic", align_corners=False, antialias=False)
    assert torch.allclose(out, reference.flatten(2).transpose(1, 2))


def test_downsample_patch_tokens_checks_the_grid():
    tokens = torch.randn(1, 16, 2)
    assert downsample_patch_tokens(tokens, (4, 4), (4, 4)) is tokens
    with pytest.raises(ValueError, match="do not form the 5x5"):
        downsample_patch_tokens(tokens, (5, 5), (2, 2))
