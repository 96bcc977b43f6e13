"""Multi-scale deformable attention with a value ratio, as Meta's
`dinov3/eval/segmentation/models/utils/ms_deform_attn.py` (`MSDeformAttn`), in pure PyTorch.

The sampling core is transformers' `multi_scale_deformable_attention` (Mask2Former): per level and head,
`F.grid_sample(value, 2 * loc - 1, mode="bilinear", padding_mode="zeros", align_corners=False)`, i.e. bilinear
interpolation at pixel coordinates (x W_l - 0.5, y H_l - 0.5) where every corner outside the level's grid contributes
0, then a weighted sum over levels and points. That is also the path Meta's module runs in its forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import multi_scale_deformable_attention


class MSDeformAttn(nn.Module):
    """`MSDeformAttn(d_model=C, n_levels=L, n_heads=M, n_points=P, ratio=rho)`.

    For query q with reference point r (normalised (x, y), (0, 0) the top-left corner, (1, 1) the bottom-right):

    - V = value_proj(value) with floor(rho C) channels, d = floor(rho C) / M per head; padded rows set to 0
    - loc[m, l, p] = r + sampling_offsets(q)[m, l, p] / (W_l, H_l)  (offsets in cells of level l)
    - A[m] = softmax over the L * P weights of head m jointly (`attention_weights(q)`)
    - out[m] = sum_{l, p} A[m, l, p] * bilinear(V_l[m], loc[m, l, p]); then output_proj (floor(rho C) -> C)
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int, ratio: float = 1.0):
        super().__init__()
        value_dim = int(d_model * ratio)
        if value_dim % n_heads:
            raise ValueError(
                f"MSDeformAttn: the value width int(d_model * ratio) = int({d_model} * {ratio}) = {value_dim} must be "
                f"divisible by n_heads={n_heads}; pick d_model, ratio and n_heads to fit."
            )
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query [N, Lq, C]; reference_points [N or 1, Lq, L, 2]; value [N, S, C] with S = sum H_l W_l (levels
        concatenated, row-major); padding_mask [N, S] (True = padding) or None. Returns [N, Lq, C]."""
        batch, num_queries, _ = query.shape
        length = value.shape[1]
        if sum(h * w for h, w in spatial_shapes) != length:
            raise ValueError(
                f"MSDeformAttn: spatial_shapes {list(spatial_shapes)} cover {sum(h * w for h, w in spatial_shapes)} "
                f"positions but the value has {length}."
            )
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, length, heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        normaliser = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        locations = locations.expand(batch, -1, -1, -1, -1, -1)
        output = multi_scale_deformable_attention(value, list(spatial_shapes), locations, weights)
        return self.output_proj(output)
