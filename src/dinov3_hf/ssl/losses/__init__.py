"""SSL losses (official `dinov3/loss/`): Sinkhorn-Knopp teacher targets, DINO, iBOT, KoLeo and Gram anchoring."""

from .dino import DINOLoss
from .gram import GramLoss, downsample_patch_tokens, gram_matrix
from .ibot import IBOTPatchLoss, masks_weight
from .koleo import DistributedKoLeoLoss, KoLeoLoss
from .sinkhorn import sinkhorn_knopp

__all__ = [
    "DINOLoss", "DistributedKoLeoLoss", "GramLoss", "IBOTPatchLoss", "KoLeoLoss",
    "downsample_patch_tokens", "gram_matrix", "masks_weight", "sinkhorn_knopp",
]
