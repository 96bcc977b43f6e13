"""SSL losses against values worked out by hand with plain-Python math on tiny inputs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import dinov3_hf
from dinov3_hf.ssl.losses import DINOLoss, DistributedKoLeoLoss, IBOTPatchLoss, KoLeoLoss, masks_weight, sinkhorn_knopp


def _log_softmax(row: list[float], temperature: float) -> list[float]:
    scaled = [v / temperature for v in row]
    log_z = math.log(sum(math.exp(v) for v in scaled))
    return [v - log_z for v in scaled]


# ---------------------------------------------------------------- Sinkhorn-Knopp


def test_sinkhorn_one_iteration_by_hand():
    # exp(logits / τ) = [[1, 2], [3, 4]] (rows = samples b, columns = prototypes k), so Q = [[1, 3], [2, 4]] (K × B)
    tau = 0.5
    weights = [[1, 2], [3, 4]]
    logits = torch.tensor([[tau * math.log(v) for v in row] for row in weights], dtype=torch.float64)
    q = [[Fraction(weights[b][k]) for b in range(2)] for k in range(2)]
    q = [[v / sum(row) / 2 for v in row] for row in q]  # prototype rows / row sum / K
    col = [q[0][b] + q[1][b] for b in range(2)]
    q = [[q[k][b] / col[b] for b in range(2)] for k in range(2)]  # sample columns / column sum (/B, ·B cancel)
    expected = [[float(q[k][b]) for k in range(2)] for b in range(2)]
    assert expected == [[3 / 7, 4 / 7], [9 / 17, 8 / 17]]
    out = sinkhorn_knopp(logits, tau, n_iterations=1)
    assert out.dtype == torch.float32 and out.shape == (2, 2)
    torch.testing.assert_close(out, torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n_iterations", "col_tol"), [(3, 1e-2), (50, 1e-4)])
def test_sinkhorn_marginals(n_iterations, col_tol):
    torch.manual_seed(0)
    batch, n_prototypes = 64, 16
    logits = torch.randn(batch, n_prototypes)
    out = sinkhorn_knopp(logits, 1.0, n_iterations)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(batch), rtol=0, atol=1e-5)
    col_dev = (out.sum(dim=0) / (batch / n_prototypes) - 1).abs().max()
    assert col_dev < col_tol
    softmax_dev = (logits.softmax(dim=1).sum(dim=0) / (batch / n_prototypes) - 1).abs().max()
    assert softmax_dev > 10 * col_tol  # the plain softmax is far from uniform prototype usage


def test_sinkhorn_matches_literal_spec_and_does_not_overflow():
    def literal(logits: torch.Tensor, tau: float, n: int) -> torch.Tensor:  # Meta's formulation, float64
        q = torch.exp(logits.double() / tau).t()
        k, b = q.shape
        q = q / q.sum()
        for _ in range(n):
            q = q / q.sum(dim=1, keepdim=True) / k
            q = q / q.sum(dim=0, keepdim=True) / b
        return (q * b).t()

    torch.manual_seed(1)
    logits = torch.randn(12, 5)
    torch.testing.assert_close(sinkhorn_knopp(logits, 0.2, 3).double(), literal(logits, 0.2, 3), rtol=0, atol=1e-6)
    big = logits + 10.0  # exp(10 / 0.04) overflows fp32 (and float64) in the literal form
    out = sinkhorn_knopp(big, 0.04, 3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, sinkhorn_knopp(logits, 0.04, 3), rtol=0, atol=1e-5)  # a constant shift cancels


def test_sinkhorn_temperature_sharpens():
    torch.manual_seed(2)
    logits = torch.randn(32, 8)

    def mean_entropy(p: torch.Tensor) -> float:
        return float(-(p * p.clamp_min(1e-30).log()).sum(dim=1).mean())

    entropies = [mean_entropy(sinkhorn_knopp(logits, tau, 3)) for tau in (2.0, 0.5, 0.1)]
    assert entropies[0] > entropies[1] > entropies[2]
    assert entropies[0] < math.log(8) + 1e-6


def test_sinkhorn_input_checks_and_empty():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        sinkhorn_knopp(torch.zeros(2, 3, 4), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        sinkhorn_knopp(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="n_iterations"):
        sinkhorn_knopp(torch.zeros(2, 3), 0.1, n_iterations=0)
    assert sinkhorn_knopp(torch.zeros(0, 3), 0.1).shape == (0, 3)
    half = sinkhorn_knopp(torch.zeros(2, 3, dtype=torch.bfloat16), 0.1)
    assert half.dtype == torch.float32 and not half.requires_grad


# ---------------------------------------------------------------- DINO


def _dino_by_hand(student: list, teacher: list, tau: float, ignore_diagonal: bool) -> float:
    total, count = 0.0, 0
    for s, s_view in enumerate(student):
        for t, t_view in enumerate(teacher):
            if ignore_diagonal and s == t:
                continue
            for s_row, t_row in zip(s_view, t_view):
                total += sum(p * lp for p, lp in zip(t_row, _log_softmax(s_row, tau)))
                count += 1
    return -total / count


def test_dino_loss_tiny_by_hand():
    # 2 views, 1 image, 2 prototypes: student softmax(s/0.1) = [1/4, 3/4] and [1/2, 1/2]
    student = [[[0.0, 0.1 * math.log(3)]], [[0.0, 0.0]]]
    teacher = [[[0.2, 0.8]], [[0.6, 0.4]]]
    ce = {  # Σ_k P_t log p_s for each (s, t)
        (0, 0): 0.2 * math.log(1 / 4) + 0.8 * math.log(3 / 4),
        (0, 1): 0.6 * math.log(1 / 4) + 0.4 * math.log(3 / 4),
        (1, 0): math.log(1 / 2),
        (1, 1): math.log(1 / 2),
    }
    loss = DINOLoss(0.1)
    all_pairs = loss(torch.tensor(student), torch.tensor(teacher))
    off_diagonal = loss(torch.tensor(student), torch.tensor(teacher), ignore_diagonal=True)
    assert all_pairs.item() == pytest.approx(-sum(ce.values()) / 4, abs=1e-6)
    assert off_diagonal.item() == pytest.approx(-(ce[0, 1] + ce[1, 0]) / 2, abs=1e-6)


@pytest.mark.parametrize(("n_student", "n_teacher", "ignore_diagonal"), [(2, 2, True), (2, 2, False), (3, 2, False)])
def test_dino_loss_counts(n_student, n_teacher, ignore_diagonal):
    torch.manual_seed(3)
    student = torch.randn(n_student, 3, 4)
    teacher = torch.randn(n_teacher, 3, 4).softmax(dim=-1)
    expected = _dino_by_hand(student.tolist(), teacher.tolist(), 0.1, ignore_diagonal)
    got = DINOLoss()(student, teacher, ignore_diagonal=ignore_diagonal)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dino_loss_fp32_gradient_and_errors():
    student = torch.randn(2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    teacher = torch.full((2, 3, 4), 0.25)
    out = DINOLoss()(student, teacher)
    assert out.dtype == torch.float32
    out.backward()
    assert student.grad is not None and student.grad.shape == student.shape
    loss = DINOLoss()
    with pytest.raises(ValueError, match=r"student_logits must be \[S, B, K\]"):
        loss(torch.zeros(3, 4), teacher)
    with pytest.raises(ValueError, match=r"teacher_probs must be \[T, B, K\]"):
        loss(torch.zeros(2, 3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="must agree on B and K"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="S=3, T=2"):
        loss(torch.zeros(3, 3, 4), teacher, ignore_diagonal=True)
    with pytest.raises(ValueError, match="at least 2 views"):
        loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), ignore_diagonal=True)
    with pytest.raises(ValueError, match="student_temp"):
        DINOLoss(0.0)


# ---------------------------------------------------------------- iBOT


def test_masks_weight_order_and_values():
    masks = torch.tensor([[False, True, False], [True, True, False], [False, False, False], [True, True, True]])
    weights = masks_weight(masks)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([1, 1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3]))
    labels = torch.arange(12).view(4, 3)  # the weights follow the order of boolean indexing
    assert labels[masks].tolist() == masks.flatten().nonzero().squeeze(1).tolist()
    with pytest.raises(ValueError, match="bool tensor"):
        masks_weight(masks.long())
    with pytest.raises(ValueError, match="bool tensor"):
        masks_weight(masks.flatten())


def test_ibot_loss_tiny_by_hand():
    # 3 images; image 0 has 1 masked patch, image 1 has 2, image 2 none -> M = 3, weights 1, 1/2, 1/2
    masks = torch.tensor([[True, False], [True, True], [False, False]])
    student = [[0.0, 0.1 * math.log(3)], [0.2, -0.1], [0.05, 0.0]]
    teacher = [[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]]
    per_patch = [sum(p * lp for p, lp in zip(t, _log_softmax(s, 0.1))) for s, t in zip(student, teacher)]
    expected = -(1.0 * per_patch[0] + 0.5 * per_patch[1] + 0.5 * per_patch[2]) / 3
    got = IBOTPatchLoss(0.1)(torch.tensor(student), torch.tensor(teacher), masks_weight(masks), n_images=3)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_ibot_loss_empty_and_errors():
    loss = IBOTPatchLoss()
    student = torch.zeros(0, 4, requires_grad=True)
    out = loss(student, torch.zeros(0, 4), torch.zeros(0), n_images=2)
    assert out.item() == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match=r"student_logits must be \[M, K\]"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2), 1)
    with pytest.raises(ValueError, match=r"teacher_probs \(2, 5\) must match"):
        loss(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2), 1)
    with pytest.raises(ValueError, match=r"masks_weight must be \[M=2\]"):
        loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3), 1)
    with pytest.raises(ValueError, match="n_images"):
        loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2), 0)


# ---------------------------------------------------------------- KoLeo


def _koleo_by_hand(points: list[tuple[float, float]]) -> float:
    unit = [(x / math.hypot(x, y), y / math.hypot(x, y)) for x, y in points]
    total = 0.0
    for i, a in enumerate(unit):
        j = max((j for j in range(len(unit)) if j != i), key=lambda j: a[0] * unit[j][0] + a[1] * unit[j][1])
        b = unit[j]
        # PairwiseDistance adds eps to the difference
        d = math.sqrt((a[0] - b[0] + 1e-8) ** 2 + (a[1] - b[1] + 1e-8) ** 2)
        total += math.log(d + 1e-8)
    return -total / len(unit)


def test_koleo_three_points_by_hand():
    # angles 0°, 90°, 30°: neighbours 0->2, 1->2, 2->0; distances 2 sin 15°, 2 sin 30°, 2 sin 15°
    points = [(1.0, 0.0), (0.0, 3.0), (2 * math.cos(math.pi / 6), 2 * math.sin(math.pi / 6))]
    expected = _koleo_by_hand(points)
    assert expected == pytest.approx(-(2 * math.log(2 * math.sin(math.pi / 12)) + math.log(1.0)) / 3, abs=1e-7)
    got = KoLeoLoss()(torch.tensor(points))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, abs=1e-6)
    got_half = KoLeoLoss()(torch.tensor(points, dtype=torch.bfloat16))
    assert got_half.dtype == torch.float32


def test_koleo_errors():
    with pytest.raises(ValueError, match=r"B >= 2, got shape \(1, 3\)"):
        KoLeoLoss()(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        KoLeoLoss()(torch.zeros(4))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        DistributedKoLeoLoss(1)
    with pytest.raises(ValueError, match="must divide the global batch 6"):
        DistributedKoLeoLoss(4)(torch.randn(6, 3))


def test_distributed_koleo_single_process():
    torch.manual_seed(4)
    x = torch.randn(12, 5)
    torch.testing.assert_close(DistributedKoLeoLoss(12)(x), KoLeoLoss()(x))
    for group_size in (2, 3, 4, 6):
        per_group = torch.stack([KoLeoLoss()(chunk) for chunk in x.split(group_size)])
        torch.testing.assert_close(DistributedKoLeoLoss(group_size)(x), per_group.mean())

    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    DistributedKoLeoLoss(12)(a).backward()
    KoLeoLoss()(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------- 2 processes (gloo)


def test_losses_on_two_ranks():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(dinov3_hf.__file__).resolve().parents[1])  # the same package the tests import
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    script = Path(__file__).with_name("dist_losses_check.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.count("dist_losses_check OK") == 2
