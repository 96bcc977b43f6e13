"""Self-supervised training: DINOv3's losses, augmentations, masks, heads, teachers and schedules, and the
Hugging Face Trainer that runs pretraining, Gram anchoring, high-resolution adaptation and distillation."""

from .config import CropResolution, DistillationConfig, GramConfig, HeadConfig, PretrainConfig, StudentConfig
from .distillation import DistillationMetaArch, DistillationTrainer
from .meta_arch import SSLMetaArch
from .pretraining import build_trainer, run_training
from .trainer import SSLTrainer

__all__ = [
    "CropResolution", "DistillationConfig", "DistillationMetaArch", "DistillationTrainer", "GramConfig", "HeadConfig",
    "PretrainConfig", "SSLMetaArch", "SSLTrainer", "StudentConfig", "build_trainer", "run_training",
]
