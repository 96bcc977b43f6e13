"""SSL losses (official_dinov3.md §6.2–6.4): Sinkhorn-Knopp teacher targets, DINO, iBOT and KoLeo."""

from .dino import DINOLoss
from .ibot import IBOTPatchLoss, masks_weight
from .koleo import DistributedKoLeoLoss, KoLeoLoss
from .sinkhorn import sinkhorn_knopp

__all__ = ["DINOLoss", "DistributedKoLeoLoss", "IBOTPatchLoss", "KoLeoLoss", "masks_weight", "sinkhorn_knopp"]
