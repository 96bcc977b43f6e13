"""Configuration of [`Dinov3HfForPlainDetrDetection`], Meta's released COCO detector (`dinov3_vit7b16_de`).

The defaults are the release values of the hub builder (`dinov3/hub/detectors.py`,
its `DetectionHeadConfig`): a frozen ViT-7B/16, Plain-DETR with the re-parameterised two-stage proposals and
the box-to-pixel relative position bias decoder ("global_rpe_decomp"), 91 sigmoid classes (COCO `category_id`s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...vit.configuration import Dinov3HfViTConfig
from ..configuration import Dinov3HfHeadConfig

# Fixed by the official code paths (dinov3/eval/detection/models/): not config fields of the release.
ENCODER_DIM_FEEDFORWARD = 2048  # build_transformer never passes dim_feedforward to the encoder layers
ENCODER_DROPOUT = 0.1  # nor dropout (live only in training mode)
PROPOSAL_IN_STRIDE = 16  # the ViT patch size: stride of the stitched feature map
PROPOSAL_TGT_STRIDES = (8, 16, 32, 64)  # the four proposal levels (enc_output_proj 0..3)
POSITION_TEMPERATURE = 10000.0


class Dinov3HfPlainDetrConfig(Dinov3HfHeadConfig):
    r"""Plain-DETR on a DINOv3 ViT (`dinov3/eval/detection/models/detr.py` `PlainDETRReParam`,
    `transformer.py`, `backbone.py`; `dinov3/eval/detection/util/box_ops.py`).

    Args:
        backbone_config: a [`Dinov3HfViTConfig`] (default the ViT-7B/16 preset).
        layers: ViT blocks whose normed patch tokens are concatenated (None: the official `[m * depth // 4 - 1 for m
            in 1..4]`, i.e. [9, 19, 29, 39] for 40 blocks).
        n_windows_sqrt: the image is cut into n x n windows, each run through the ViT, plus one global view resized to
            the window size (official 3 for the 7B).
        hidden_dim: width of the DETR transformer (official 768).
        nheads: attention heads of the encoder and decoder (official 8).
        dim_feedforward: FFN width of the decoder layers (official 2048; the encoder's is always 2048).
        num_encoder_layers / dec_layers: transformer encoder / decoder layers (official 6 / 6).
        num_queries_one2one: queries used at inference (official 1500).
        num_queries_one2many: training-only hybrid-matching queries; they only size `query_embed` (official 1500).
        topk: detections kept per image by the post-processing (official 1500).
        proposal_min_size: side of the level-0 anchor boxes in pixels, doubled per level (official 50).
        decoder_rpe_hidden_dim: hidden width of the BoxRPE MLPs `cpb_mlp1/2` (official 512).
        num_labels: sigmoid classes (official 91, COCO `category_id` indexing; index 0 is also the proposals'
            objectness).

    Tied weights: `transformer.decoder.class_embed` / `bbox_embed` are the top-level `class_embed` / `bbox_embed`
    (the same modules, as in the official model), so the state dict holds both names.
    """

    model_type = "dinov3_hf_plain_detr"

    def __init__(
        self,
        backbone_config: Dinov3HfViTConfig | dict[str, Any] | None = None,
        layers: Sequence[int] | None = None,
        n_windows_sqrt: int = 3,
        hidden_dim: int = 768,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        num_encoder_layers: int = 6,
        dec_layers: int = 6,
        num_queries_one2one: int = 1500,
        num_queries_one2many: int = 1500,
        topk: int = 1500,
        proposal_min_size: float = 50.0,
        decoder_rpe_hidden_dim: int = 512,
        **kwargs: Any,
    ):
        if backbone_config is None:
            backbone_config = Dinov3HfViTConfig.from_preset("vit7b16")
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = 91
        kwargs.setdefault("tie_word_embeddings", True)  # turns on transformers' handling of `_tied_weights_keys`
        super().__init__(backbone_config=backbone_config, **kwargs)
        if not self.is_vit:
            raise ValueError("The Plain-DETR detector runs on a DINOv3 ViT backbone; got a ConvNeXt config.")
        if layers is None:
            depth = self.backbone_num_layers
            layers = [m * depth // 4 - 1 for m in range(1, 5)]
        self.layers = self._validate_layers(layers)
        if hidden_dim % 32 or hidden_dim % nheads or hidden_dim % 2:
            raise ValueError(
                f"hidden_dim={hidden_dim} must be a multiple of 32 (GroupNorm(32, hidden_dim)) and of nheads={nheads}."
            )
        if min(n_windows_sqrt, nheads, num_encoder_layers, dec_layers, num_queries_one2one, topk) < 1:
            raise ValueError("n_windows_sqrt, nheads, layer counts, num_queries_one2one and topk must all be >= 1.")
        self.n_windows_sqrt = int(n_windows_sqrt)
        self.hidden_dim = int(hidden_dim)
        self.nheads = int(nheads)
        self.dim_feedforward = int(dim_feedforward)
        self.num_encoder_layers = int(num_encoder_layers)
        self.dec_layers = int(dec_layers)
        self.num_queries_one2one = int(num_queries_one2one)
        self.num_queries_one2many = int(num_queries_one2many)
        self.topk = int(topk)
        self.proposal_min_size = float(proposal_min_size)
        self.decoder_rpe_hidden_dim = int(decoder_rpe_hidden_dim)

    @property
    def backbone_channels(self) -> int:
        """Channels of the window wrapper's map: (global view + windows) x layers x ViT width."""
        return 2 * len(self.layers) * self.backbone_config.hidden_size
