"""Self-supervised training: DINOv3's losses, augmentations, masks, heads, teachers and schedules, and the
Hugging Face Trainer that runs them (`SSLTrainer`)."""

from .config import HeadConfig, PretrainConfig
from .meta_arch import SSLMetaArch
from .pretraining import build_trainer, run_pretraining
from .trainer import SSLTrainer

__all__ = ["HeadConfig", "PretrainConfig", "SSLMetaArch", "SSLTrainer", "build_trainer", "run_pretraining"]
