"""Meta's Plain-DETR COCO detector on a DINOv3 ViT (`dinov3_vit7b16_de`, arXiv 2508.10104), module for
module as in `dinov3/eval/detection/models/` (`detr.py` `PlainDETRReParam` and `PostProcess`, `transformer.py`
`TransformerReParam` and its global BoxRPE decoder, `backbone.py` `WindowsWrapper` and the sine position encoding)
and `dinov3/eval/detection/util/box_ops.py`, so that the official head state dict loads by identity:

    transformer.level_embed                                  [1, d]
    transformer.encoder.layers.{i}.{self_attn (packed MHA), linear1, linear2, norm1, norm2}
    transformer.decoder.layers.{i}.{self_attn (packed MHA), cross_attn.{q,k,v,proj,cpb_mlp1,cpb_mlp2},
                                    norm1, norm2, norm3, linear1, linear2}
    transformer.decoder.final_layer_norm
    transformer.decoder.{class,bbox}_embed                   the top-level class_embed / bbox_embed (tied)
    transformer.{enc_output, enc_output_norm, pos_trans, pos_trans_norm, enc_output_proj.{0,2,3}}
    class_embed.{0..L}, bbox_embed.{0..L}.layers.{0,1,2}     L = dec_layers; index L scores the proposals
    query_embed [num_queries_one2one + num_queries_one2many, d], input_proj.0.{0 (1x1 conv), 1 (GroupNorm)}

Boxes are absolute pixels of the (padded) input tensor throughout, cxcywh in the outputs (the re-parameterised
variant of Plain-DETR; `pred_boxes` are not normalised to [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from ...vit.modeling import check_kwargs
from ..base import Dinov3HfHeadPreTrainedModel
from .configuration import (
    ENCODER_DIM_FEEDFORWARD,
    ENCODER_DROPOUT,
    POSITION_TEMPERATURE,
    PROPOSAL_IN_STRIDE,
    PROPOSAL_TGT_STRIDES,
    Dinov3HfPlainDetrConfig,
)

# delta2bbox's log-size clamp, |ln(16 / 1000)| (`wh_ratio_clip` in dinov3/eval/detection/util/box_ops.py)
MAX_LOG_RATIO = abs(math.log(16 / 1000))
RPE_PADDING_PENALTY = 100.0  # additive bias on padded keys in the BoxRPE cross-attention (not -inf)


# -- geometry -------------------------------------------------------------------------------------------------------


def window_sizes(size: int, n: int, patch: int) -> list[int]:
    """Window sizes along one side (`WindowsWrapper`): `w = ceil(floor(size / n) / patch) * patch` for the first
    n - 1, the remainder `size - (n - 1) * w` for the last. Raises a ValueError if a window is below one patch."""
    first = math.ceil((size // n) / patch) * patch
    sizes = [first] * (n - 1) + [size - (n - 1) * first]
    if min(sizes) < patch:
        raise ValueError(
            f"An image side of {size} px cuts into {n} windows of {sizes} px, but every window needs at least "
            f"{patch} px (one patch). Resize or pad the side to at least {minimum_side(n, patch)} px (every size "
            f"from there on works; the nearest valid size above {size} is {_next_valid(size, n, patch)})."
        )
    return sizes


def _valid(size: int, n: int, patch: int) -> bool:
    return size - (n - 1) * math.ceil((size // n) / patch) * patch >= patch


def _next_valid(size: int, n: int, patch: int) -> int:
    while not _valid(size, n, patch):
        size += 1
    return size


def minimum_side(n: int, patch: int) -> int:
    """The smallest side length from which every length gives n windows of at least `patch` px each."""
    bound = 2 * n * n * patch + n * patch  # past this the remainder window always exceeds one patch
    side = bound
    while side > 1 and _valid(side - 1, n, patch):
        side -= 1
    return side


def sine_position_encoding(mask: torch.Tensor, num_pos_feats: int) -> torch.Tensor:
    """Normalised sine encoding of a padding mask [B, H, W] (True = padding), Deformable-DETR style
    (`PositionEmbeddingSine(normalize=True)` of `dinov3/eval/detection/models/`):
    `y = (cumsum_rows(~mask) - 0.5) / (last + 1e-6) * 2pi` (x likewise), channel k of each part is
    `sin(y / t_k)` (even k) or `cos(y / t_k)` (odd k), `t_k = 10000 ** (2 * (k // 2) / num_pos_feats)`;
    returns [y-part ; x-part] as [B, 2 * num_pos_feats, H, W] (fp32)."""
    not_mask = (~mask).to(torch.float32)
    y_embed = not_mask.cumsum(1)
    x_embed = not_mask.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * scale
    x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * scale
    pos_x = _sine(x_embed, num_pos_feats)
    pos_y = _sine(y_embed, num_pos_feats)
    return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)


def _sine(coords: torch.Tensor, num_pos_feats: int) -> torch.Tensor:
    """[...] -> [..., num_pos_feats]: sin(c / t_k) at even k, cos(c / t_k) at odd k."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=coords.device)
    dim_t = POSITION_TEMPERATURE ** (2 * (dim_t // 2) / num_pos_feats)
    pos = coords[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def box_position_encoding(boxes: torch.Tensor, num_pos_feats: int) -> torch.Tensor:
    """Sine encoding of absolute-pixel boxes [B, Q, 4] (`get_proposal_pos_embed` of `TransformerReParam`, no
    normalisation): `num_pos_feats` channels of `_sine(2pi * coord)` per coordinate, concatenated over
    (cx, cy, w, h) -> [B, Q, 4 * num_pos_feats]."""
    return _sine(boxes * (2 * math.pi), num_pos_feats).flatten(2)


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def delta2bbox(proposals: torch.Tensor, deltas: torch.Tensor, max_shape: tuple[torch.Tensor, torch.Tensor]):
    """Apply (dx, dy, dw, dh) to cxcywh pixel boxes (`delta2bbox` of `dinov3/eval/detection/util/box_ops.py`):
    centre `(cx + w dx, cy + h dy)`, size `(w exp(dw), h exp(dh))` with dw, dh clamped to +-|ln(16/1000)|; returns
    xyxy with x clamped to [0, valid_W] and y to [0, valid_H], `max_shape = (valid_H, valid_W)` ([B, 1] each)."""
    pxy, pwh = proposals[..., :2], proposals[..., 2:]
    dxy, dwh = deltas[..., :2], deltas[..., 2:].clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
    gxy = pxy + pwh * dxy
    gwh = pwh * dwh.exp()
    x1y1, x2y2 = gxy - gwh * 0.5, gxy + gwh * 0.5
    valid_h, valid_w = max_shape
    x = torch.stack((x1y1[..., 0], x2y2[..., 0]), dim=-1).clamp(min=0)
    y = torch.stack((x1y1[..., 1], x2y2[..., 1]), dim=-1).clamp(min=0)
    x = torch.minimum(x, valid_w[..., None])
    y = torch.minimum(y, valid_h[..., None])
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


# -- modules --------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """`layers.{0..n-1}` Linear layers with ReLU between them (the DETR box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class LayerNorm2D(nn.Module):
    """LayerNorm over the channels of an NCHW map (`ln`, eps 1e-5)."""

    def __init__(self, channels: int):
        super().__init__()
        self.ln = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer with a fixed 2048 ReLU FFN and dropout 0.1 (`build_transformer` passes neither
    `dim_feedforward` nor `dropout` to the encoder): `s = norm1(s + MHA(s + pos, s + pos, s))`,
    `s = norm2(s + linear2(relu(linear1(s))))`."""

    def __init__(self, d_model: int, nheads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(d_model, ENCODER_DIM_FEEDFORWARD)
        self.linear2 = nn.Linear(ENCODER_DIM_FEEDFORWARD, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(ENCODER_DROPOUT)
        self.dropout1 = nn.Dropout(ENCODER_DROPOUT)
        self.dropout2 = nn.Dropout(ENCODER_DROPOUT)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src, key_padding_mask=padding_mask)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class Encoder(nn.Module):
    def __init__(self, config: Dinov3HfPlainDetrConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(config.hidden_dim, config.nheads) for _ in range(config.num_encoder_layers)
        )

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return src


class BoxRPECrossAttention(nn.Module):
    """Global cross-attention with the decomposed box-to-pixel relative position bias ("global_rpe_decomp",
    `linear` type): for key cell (i, j) with centre (u_j, v_i) = stride * (j + 0.5, i + 0.5) and a query box
    (x1, y1, x2, y2), `bias[h, q, (i, j)] = cpb_mlp2(y1 - v_i, y2 - v_i)[h] + cpb_mlp1(x1 - u_j, x2 - u_j)[h]
    - 100 * padded(i, j)`; `out = proj(softmax(q k^T / sqrt(d_head) + bias) v)` per head."""

    def __init__(self, dim: int, num_heads: int, rpe_hidden_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.cpb_mlp1 = self._rpe_mlp(rpe_hidden_dim, num_heads)
        self.cpb_mlp2 = self._rpe_mlp(rpe_hidden_dim, num_heads)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def _rpe_mlp(hidden: int, heads: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, heads, bias=False))

    def rpe_bias(
        self, boxes: torch.Tensor, grid: tuple[int, int], padding_mask: torch.Tensor
    ) -> torch.Tensor:
        """The additive attention bias [B, heads, Q, H * W] for cxcywh pixel boxes [B, Q, 4] on an H x W grid."""
        height, width = grid
        xyxy = box_cxcywh_to_xyxy(boxes)
        kwargs = dict(dtype=boxes.dtype, device=boxes.device)
        u = torch.linspace(0.5, width - 0.5, width, **kwargs) * PROPOSAL_IN_STRIDE
        v = torch.linspace(0.5, height - 0.5, height, **kwargs) * PROPOSAL_IN_STRIDE
        delta_x = xyxy[..., None, 0::2] - u[:, None]  # [B, Q, W, 2]: (x1 - u_j, x2 - u_j)
        delta_y = xyxy[..., None, 1::2] - v[:, None]  # [B, Q, H, 2]
        rpe_x = self.cpb_mlp1(delta_x)  # [B, Q, W, heads]
        rpe_y = self.cpb_mlp2(delta_y)  # [B, Q, H, heads]
        rpe = (rpe_y[:, :, :, None] + rpe_x[:, :, None]).flatten(2, 3).permute(0, 3, 1, 2)
        return rpe - RPE_PADDING_PENALTY * padding_mask[:, None, None, :].to(rpe.dtype)

    def forward(
        self,
        query: torch.Tensor,
        boxes: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        grid: tuple[int, int],
        padding_mask: torch.Tensor,
    ) -> torch.Tensor:
        batch, num_queries, dim = query.shape
        bias = self.rpe_bias(boxes, grid, padding_mask)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, x.shape[1], self.num_heads, dim // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(key)), heads(self.v(value)), bias)
        return self.proj(out.transpose(1, 2).reshape(batch, num_queries, dim))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: `t += MHA(norm2(t) + pos, norm2(t) + pos, norm2(t))`,
    `t += cross_attn(norm1(t) + pos, boxes, memory + pos_memory, memory)`, `t += linear2(relu(linear1(norm3(t))))`
    (dropout 0 in the release)."""

    def __init__(self, config: Dinov3HfPlainDetrConfig):
        super().__init__()
        d = config.hidden_dim
        self.cross_attn = BoxRPECrossAttention(d, config.nheads, config.decoder_rpe_hidden_dim)
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, config.nheads, dropout=0.0, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, config.dim_feedforward)
        self.linear2 = nn.Linear(config.dim_feedforward, d)
        self.norm3 = nn.LayerNorm(d)

    def forward(self, tgt, query_pos, boxes, memory_key, memory, grid, padding_mask) -> torch.Tensor:
        t = self.norm2(tgt)
        q = k = t + query_pos
        tgt = tgt + self.self_attn(q, k, t, need_weights=False)[0]
        t = self.norm1(tgt)
        tgt = tgt + self.cross_attn(t + query_pos, boxes, memory_key, memory, grid, padding_mask)
        return tgt + self.linear2(F.relu(self.linear1(self.norm3(tgt))))


class Decoder(nn.Module):
    """`layers`, `final_layer_norm`, and (tied, set by the detector) `class_embed` / `bbox_embed`. Each layer's
    normed output refines the reference boxes: `boxes = cxcywh(delta2bbox(boxes, bbox_embed[l](h_l)))`."""

    def __init__(self, config: Dinov3HfPlainDetrConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.dec_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_dim)
        self.class_embed: nn.ModuleList | None = None
        self.bbox_embed: nn.ModuleList | None = None

    def forward(self, tgt, query_pos, boxes, memory_key, memory, grid, padding_mask, max_shape):
        """Returns (normed per-layer outputs [L, B, Q, d], per-layer refined cxcywh boxes [L, B, Q, 4])."""
        hidden, refined = [], []
        for index, layer in enumerate(self.layers):
            tgt = layer(tgt, query_pos, boxes, memory_key, memory, grid, padding_mask)
            h = self.final_layer_norm(tgt)
            new_boxes = box_xyxy_to_cxcywh(delta2bbox(boxes, self.bbox_embed[index](h), max_shape))
            hidden.append(h)
            refined.append(new_boxes)
            boxes = new_boxes.detach()
        return torch.stack(hidden), torch.stack(refined)


class Transformer(nn.Module):
    """`TransformerReParam`: encoder, re-parameterised two-stage proposals at strides 8 / 16 / 32 / 64, decoder."""

    def __init__(self, config: Dinov3HfPlainDetrConfig):
        super().__init__()
        d = config.hidden_dim
        self.config = config
        self.level_embed = nn.Parameter(torch.empty(1, d))
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d)
        self.pos_trans = nn.Linear(2 * d, 2 * d)
        self.pos_trans_norm = nn.LayerNorm(2 * d)
        self.enc_output_proj = nn.ModuleList(
            [
                nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2)),  # stride 16 -> 8
                nn.Identity(),  # 16
                nn.Sequential(nn.Conv2d(d, d, 2, 2)),  # 16 -> 32
                nn.Sequential(nn.Conv2d(d, d, 2, 2), LayerNorm2D(d), nn.GELU(), nn.Conv2d(d, d, 2, 2)),  # -> 64
            ]
        )

    def proposals(self, memory: torch.Tensor, mask: torch.Tensor) -> tuple:
        """Anchors and their tokens at the four levels (`gen_encoder_output_proposals`): memory [B, H, W, d] and
        mask [B, H, W] (True = padding) -> (tokens [B, S', d], anchors cxcywh px [B, S', 4], max_shape).

        Level l (stride s = 8 * 2^l) anchors cell (i, j) at ((j + 0.5) s, (i + 0.5) s) with side
        `proposal_min_size * 2^l`. An anchor is valid when all four coordinates lie strictly inside
        (0.01, 0.99) x (valid_W, valid_H, valid_W, valid_H), valid_H / valid_W = the unpadded rows of column 0 /
        columns of row 0 of the level-0 mask, times 8. Padded or invalid anchors become the constant
        `max(H0, W0) * 8` and their tokens 0."""
        maps = memory.permute(0, 3, 1, 2)
        tokens, anchors, masks = [], [], []
        for level, (proj, stride) in enumerate(zip(self.enc_output_proj, PROPOSAL_TGT_STRIDES)):
            feature = proj(maps)
            height, width = feature.shape[-2:]
            level_mask = F.interpolate(mask[None].float(), size=(height, width))[0].bool()
            kwargs = dict(dtype=memory.dtype, device=memory.device)
            grid_y, grid_x = torch.meshgrid(
                torch.linspace(0, height - 1, height, **kwargs), torch.linspace(0, width - 1, width, **kwargs),
                indexing="ij",
            )
            centres = (torch.stack((grid_x, grid_y), dim=-1) + 0.5) * stride
            sizes = torch.full_like(centres, self.config.proposal_min_size * 2.0**level)
            anchors.append(torch.cat((centres, sizes), dim=-1).reshape(1, -1, 4).expand(maps.shape[0], -1, -1))
            tokens.append(feature.flatten(2).transpose(1, 2))
            masks.append(level_mask.flatten(1))
            if level == 0:
                level0_mask, level0_shape = level_mask, (height, width)
        tokens, anchors, padding = torch.cat(tokens, 1), torch.cat(anchors, 1), torch.cat(masks, 1)
        valid_h = (~level0_mask[:, :, 0]).sum(1).to(memory.dtype) * PROPOSAL_TGT_STRIDES[0]
        valid_w = (~level0_mask[:, 0, :]).sum(1).to(memory.dtype) * PROPOSAL_TGT_STRIDES[0]
        extent = torch.stack((valid_w, valid_h, valid_w, valid_h), dim=-1)[:, None]  # [B, 1, 4]
        valid = ((anchors > 0.01 * extent) & (anchors < 0.99 * extent)).all(-1)
        invalid = padding | ~valid
        anchors = anchors.masked_fill(invalid[..., None], max(level0_shape) * PROPOSAL_TGT_STRIDES[0])
        tokens = tokens.masked_fill(invalid[..., None], 0.0)
        tokens = self.enc_output_norm(self.enc_output(tokens))
        return tokens, anchors, (valid_h[:, None], valid_w[:, None])

    def forward(self, src: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, query_embed: torch.Tensor):
        """src [B, d, H, W], mask [B, H, W] (True = padding), pos [B, d, H, W] -> decoder and proposal outputs."""
        batch, d, height, width = src.shape
        src = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2) + self.level_embed[0].view(1, 1, -1)
        mask_flat = mask.flatten(1)
        memory = self.encoder(src, pos, mask_flat)
        tokens, anchors, max_shape = self.proposals(memory.reshape(batch, height, width, d), mask)
        num_layers = len(self.decoder.layers)
        enc_logits = self.decoder.class_embed[num_layers](tokens)
        enc_boxes = box_xyxy_to_cxcywh(delta2bbox(anchors, self.decoder.bbox_embed[num_layers](tokens), max_shape))
        num_queries = query_embed.shape[0]
        if enc_logits.shape[1] < num_queries:
            raise ValueError(
                f"The image gives {enc_logits.shape[1]} proposals but the detector keeps {num_queries} "
                "(num_queries_one2one): use a larger image or fewer queries."
            )
        top = torch.topk(enc_logits[..., 0], num_queries, dim=1)[1]
        reference = torch.gather(enc_boxes, 1, top[..., None].expand(-1, -1, 4)).detach()
        pos_embed = self.pos_trans_norm(self.pos_trans(box_position_encoding(reference, d // 2)))
        query_pos = pos_embed[..., :d]  # mixed selection: content queries come from query_embed
        tgt = query_embed[None].expand(batch, -1, -1)
        hidden, boxes = self.decoder(tgt, query_pos, reference, memory + pos, memory, (height, width), mask_flat,
                                     max_shape)
        return hidden, boxes, reference, enc_logits, enc_boxes


# -- the detector ---------------------------------------------------------------------------------------------------


@dataclass
class Dinov3HfPlainDetrOutput(ModelOutput):
    """Outputs of [`Dinov3HfForPlainDetrDetection`]; boxes are cxcywh in pixels of the padded input tensor.

    logits: [B, Q, num_labels] class logits of the last decoder layer (sigmoid scores).
    pred_boxes: [B, Q, 4] boxes of the last decoder layer.
    intermediate_logits / intermediate_boxes: [B, L, Q, num_labels] / [B, L, Q, 4], every decoder layer (the
        official `aux_outputs` are layers 0..L-2).
    reference_boxes: [B, Q, 4] the top-Q proposals fed to the decoder.
    enc_logits / enc_boxes: [B, S', num_labels] / [B, S', 4] the encoder proposals at the four levels.
    image_sizes: [B, 2] (height, width) of each image's unpadded part of the input tensor (for post-processing).
    """

    logits: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None
    intermediate_logits: torch.Tensor | None = None
    intermediate_boxes: torch.Tensor | None = None
    reference_boxes: torch.Tensor | None = None
    enc_logits: torch.Tensor | None = None
    enc_boxes: torch.Tensor | None = None
    image_sizes: torch.Tensor | None = None


class Dinov3HfForPlainDetrDetection(Dinov3HfHeadPreTrainedModel):
    """Meta's Plain-DETR detector (`PlainDETRReParam`) on our ViT (`self.backbone`).

    Input: `pixel_values` [B, 3, H, W] (ImageNet-normalised), optional `pixel_mask` [B, H, W] (1 = image, 0 =
    bottom / right padding, as transformers' DETR processors). The ViT runs on `n_windows_sqrt`^2 windows and on the
    whole image resized to one window (`WindowsWrapper`); windows below 16 px raise a ValueError.
    Inference keeps the first `num_queries_one2one` rows of `query_embed` and no self-attention mask, as the hub.
    """

    config: Dinov3HfPlainDetrConfig
    config_class = Dinov3HfPlainDetrConfig
    _tied_weights_keys = {
        "transformer.decoder.class_embed": "class_embed",
        "transformer.decoder.bbox_embed": "bbox_embed",
    }
    _head_size_fields = ("num_labels",)

    def __init__(self, config: Dinov3HfPlainDetrConfig):
        super().__init__(config)
        d = config.hidden_dim
        self.transformer = Transformer(config)
        self.class_embed = nn.ModuleList(nn.Linear(d, config.num_labels) for _ in range(config.dec_layers + 1))
        self.bbox_embed = nn.ModuleList(MLP(d, d, 4, 3) for _ in range(config.dec_layers + 1))
        self.query_embed = nn.Embedding(config.num_queries_one2one + config.num_queries_one2many, d)
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(config.backbone_channels, d, kernel_size=1), nn.GroupNorm(32, d))]
        )
        self.transformer.decoder.class_embed = self.class_embed
        self.transformer.decoder.bbox_embed = self.bbox_embed
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The base init (linear / conv weights N(0, head_initializer_range), biases 0), plus the modules it does
        not cover: transposed conv, packed attention projections, norms, query embeddings and `level_embed`."""
        super()._init_weights(module)
        std = self.config.head_initializer_range
        if isinstance(module, Transformer):
            init.normal_(module.level_embed)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.ConvTranspose2d, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)

    def window_features(self, pixel_values: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`WindowsWrapper`: [global view resized to the stitched grid ; stitched windows], each the concatenated
        normed patch maps of `layers` -> [B, 2 * len(layers) * D, Hg, Wg], and the padding mask nearest-resized to
        the grid. The global view is the whole tensor resized (antialiased bilinear) to one window's size."""
        n, patch = self.config.n_windows_sqrt, self.config.backbone_config.patch_size
        height, width = pixel_values.shape[-2:]
        rows, cols = window_sizes(height, n, patch), window_sizes(width, n, patch)

        def features(x: torch.Tensor) -> torch.Tensor:
            return torch.cat(self.backbone_feature_maps(x, self.config.layers), dim=1)

        stitched, top = [], 0
        for row in rows:
            left, line = 0, []
            for col in cols:
                line.append(features(pixel_values[:, :, top : top + row, left : left + col]))
                left += col
            stitched.append(torch.cat(line, dim=-1))
            top += row
        windows = torch.cat(stitched, dim=-2)
        resized = F.interpolate(pixel_values, size=(rows[0], cols[0]), mode="bilinear", antialias=True)
        global_view = F.interpolate(
            features(resized), size=windows.shape[-2:], mode="bilinear", align_corners=False, antialias=True
        )
        mask = F.interpolate(pad[None].float(), size=windows.shape[-2:])[0].bool()
        return torch.cat((global_view, windows), dim=1), mask

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None, **kwargs
    ) -> Dinov3HfPlainDetrOutput:
        """pixel_values [B, 3, H, W]; pixel_mask [B, H, W], 1 on image pixels, 0 on bottom / right padding."""
        check_kwargs(self, kwargs)
        batch, _, height, width = pixel_values.shape
        if pixel_mask is None:
            pixel_mask = torch.ones(batch, height, width, dtype=torch.long, device=pixel_values.device)
        if tuple(pixel_mask.shape) != (batch, height, width):
            raise ValueError(f"pixel_mask must have shape {(batch, height, width)}, got {tuple(pixel_mask.shape)}.")
        pad = ~pixel_mask.bool()
        features, mask = self.window_features(pixel_values, pad)
        pos = sine_position_encoding(mask, self.config.hidden_dim // 2).to(features.dtype)
        src = self.input_proj[0](features)
        queries = self.query_embed.weight[: self.config.num_queries_one2one]
        hidden, boxes, reference, enc_logits, enc_boxes = self.transformer(src, mask, pos, queries)
        logits = torch.stack([self.class_embed[i](h) for i, h in enumerate(hidden)])
        image_sizes = torch.stack(((~pad[:, :, 0]).sum(1), (~pad[:, 0, :]).sum(1)), dim=-1)
        return Dinov3HfPlainDetrOutput(
            logits=logits[-1],
            pred_boxes=boxes[-1],
            intermediate_logits=logits.transpose(0, 1),
            intermediate_boxes=boxes.transpose(0, 1),
            reference_boxes=reference,
            enc_logits=enc_logits,
            enc_boxes=enc_boxes,
            image_sizes=image_sizes,
        )
