"""Multi-scale deformable attention against a per-point bilinear rule written out here in fp64
(Meta's `dinov3/eval/segmentation/models/utils/ms_deform_attn.py`: sampling at pixel (x W - 0.5, y H - 0.5), each
of the 4 corners outside the grid contributing 0, softmax jointly over levels x points of a head)."""

from __future__ import annotations

import math

import pytest
import torch

from dinov3_hf.models.heads.ms_deform_attn import MSDeformAttn


def bilinear_point(plane: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """plane [d, H, W]; (x, y) normalised; per-corner zero padding."""
    _, height, width = plane.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    a, b = px - x0, py - y0
    out = torch.zeros(plane.shape[0], dtype=plane.dtype)
    for xx, yy, weight in ((x0, y0, (1 - a) * (1 - b)), (x0 + 1, y0, a * (1 - b)), (x0, y0 + 1, (1 - a) * b),
                           (x0 + 1, y0 + 1, a * b)):
        if 0 <= xx < width and 0 <= yy < height:
            out += weight * plane[:, yy, xx]
    return out


def reference(module: MSDeformAttn, query, ref, value, shapes):
    """The module's projections, then a per-point loop: locations, joint softmax, bilinear sampling."""
    n_batch, n_query, _ = query.shape
    heads, levels, points = module.n_heads, module.n_levels, module.n_points
    v = module.value_proj(value)
    d = v.shape[-1] // heads
    offsets = module.sampling_offsets(query)
    logits = module.attention_weights(query)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n_batch, n_query, heads * d, dtype=value.dtype)
    locations = torch.zeros(n_batch, n_query, heads, levels, points, 2, dtype=value.dtype)
    for n in range(n_batch):
        for q in range(n_query):
            for m in range(heads):
                weights = logits[n, q, m * levels * points : (m + 1) * levels * points].softmax(0)
                for lvl, (h, w) in enumerate(shapes):
                    plane = v[n, starts[lvl] : starts[lvl + 1], m * d : (m + 1) * d].T.reshape(d, h, w)
                    for p in range(points):
                        flat = ((m * levels + lvl) * points + p) * 2
                        r = ref[min(n, ref.shape[0] - 1), q, lvl]
                        x = r[0] + offsets[n, q, flat] / w
                        y = r[1] + offsets[n, q, flat + 1] / h
                        locations[n, q, m, lvl, p] = torch.stack([x, y])
                        out[n, q, m * d : (m + 1) * d] += weights[lvl * points + p] * bilinear_point(plane, x, y)
    return module.output_proj(out), locations


@pytest.mark.parametrize("shapes", [[(3, 5), (2, 3)], [(4, 6), (3, 3), (1, 2)]])
def test_matches_per_point_bilinear_reference(shapes):
    torch.manual_seed(0)
    levels = len(shapes)
    module = MSDeformAttn(d_model=16, n_levels=levels, n_heads=2, n_points=3, ratio=0.5).double()
    for param in module.parameters():
        torch.nn.init.normal_(param, std=0.5)
    length = sum(h * w for h, w in shapes)
    query = torch.randn(2, 7, 16, dtype=torch.float64)
    value = torch.randn(2, length, 16, dtype=torch.float64)
    ref = torch.rand(1, 7, levels, 2, dtype=torch.float64) * 1.4 - 0.2  # in [-0.2, 1.2]
    with torch.no_grad():
        expected, locations = reference(module, query, ref, value, shapes)
    # the case covers points outside the grid on every side, where corners are zero-padded
    assert (locations < 0).any() and (locations > 1).any()
    assert module.value_proj.out_features == 8  # ratio 0.5
    with torch.no_grad():
        got = module(query, ref, value, shapes)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_corner_zero_padding_and_joint_softmax_by_hand():
    """Value = ones, one head, offsets 0: a point at the image corner (0, 0) sees 1 of its 4 corners (1/4); at a left
    edge centre (0, y_centre) 2 of 4 (1/2). With equal logits over 2 levels x 1 point the joint softmax gives 1/2 each
    (a per-level softmax would give 1 each)."""
    module = MSDeformAttn(d_model=4, n_levels=2, n_heads=1, n_points=1).double()
    with torch.no_grad():
        for lin in (module.sampling_offsets, module.attention_weights):
            lin.weight.zero_()
            lin.bias.zero_()
        module.value_proj.weight.zero_()
        module.value_proj.bias.fill_(1.0)  # V = 1 everywhere
        module.output_proj.weight.copy_(torch.eye(4))
        module.output_proj.bias.zero_()
    shapes = [(2, 2), (4, 4)]
    value = torch.randn(1, 20, 4, dtype=torch.float64)
    corner = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)  # both levels at (0, 0)
    edge = torch.tensor([[[[0.0, 0.25], [0.0, 0.375]]]], dtype=torch.float64)  # left edge, on a row centre
    inside = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]], dtype=torch.float64)
    with torch.no_grad():
        out_corner = module(torch.zeros(1, 1, 4, dtype=torch.float64), corner, value, shapes)
        out_edge = module(torch.zeros(1, 1, 4, dtype=torch.float64), edge, value, shapes)
        out_inside = module(torch.zeros(1, 1, 4, dtype=torch.float64), inside, value, shapes)
    torch.testing.assert_close(out_corner, torch.full((1, 1, 4), 0.25, dtype=torch.float64))
    torch.testing.assert_close(out_edge, torch.full((1, 1, 4), 0.5, dtype=torch.float64))
    torch.testing.assert_close(out_inside, torch.ones(1, 1, 4, dtype=torch.float64))


def test_offsets_are_in_cells_of_their_level():
    """An x offset of +1 on a 1 x 4 level moves the sample one cell right: from a cell centre it reads the next cell."""
    module = MSDeformAttn(d_model=2, n_levels=1, n_heads=1, n_points=1).double()
    with torch.no_grad():
        module.sampling_offsets.weight.zero_()
        module.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]))
        module.attention_weights.weight.zero_()
        module.value_proj.weight.copy_(torch.eye(2))
        module.value_proj.bias.zero_()
        module.output_proj.weight.copy_(torch.eye(2))
        module.output_proj.bias.zero_()
    value = torch.tensor([[[10.0, 0.0], [20.0, 0.0], [30.0, 0.0], [40.0, 0.0]]], dtype=torch.float64)
    ref = torch.tensor([[[[1.5 / 4, 0.5]]]], dtype=torch.float64)  # centre of cell 1
    with torch.no_grad():
        out = module(torch.zeros(1, 1, 2, dtype=torch.float64), ref, value, [(1, 4)])
    assert out[0, 0, 0].item() == pytest.approx(30.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=20, n_levels=1, n_heads=3, n_points=1, ratio=0.5)
    module = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1)
    with pytest.raises(ValueError, match="cover 6 positions but the value has 5"):
        module(torch.zeros(1, 1, 8), torch.zeros(1, 1, 1, 2), torch.zeros(1, 5, 8), [(2, 3)])
