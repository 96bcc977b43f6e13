"""dinov3_hf: DINOv3 models, checkpoint interop and training on the Hugging Face stack.

Importing the package registers its configs, models, backbones, task models, processors and the dino.txt tokenizer
with the transformers Auto classes, and the open-vocabulary segmentation pipeline task.

The one exception is the `dinov3-hf` command itself (the console script, or `python -m dinov3_hf`): there this file
imports nothing heavy, so that `--help` and `--version` answer without loading torch and transformers, and
`dinov3_hf.cli.main` registers the Auto classes when a subcommand runs.
"""

import sys
from pathlib import Path

__version__ = "0.1.0"


def _runs_the_cli() -> bool:
    """Whether this interpreter was started as the `dinov3-hf` command: its console script, or `python -m dinov3_hf`
    (while it locates the module to run, and so while it imports this package, CPython sets sys.argv[0] to "-m")."""
    argv = getattr(sys, "argv", None) or [""]
    if argv[0] == "-m":
        return __name__ in getattr(sys, "orig_argv", ())
    return Path(argv[0]).stem == "dinov3-hf"


if not _runs_the_cli():
    from .models.convnext import Dinov3HfConvNextBackbone, Dinov3HfConvNextConfig, Dinov3HfConvNextModel
    from .models.dinotxt import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfDinoTxtTokenizer
    from .models.heads import (
        DPTHead,
        Dinov3HfDepthEstimationConfig,
        Dinov3HfForDepthEstimation,
        Dinov3HfForImageClassification,
        Dinov3HfForSemanticSegmentation,
        Dinov3HfImageClassificationConfig,
        Dinov3HfSemanticSegmentationConfig,
        transformers_dpt_config,
    )
    from .models.vit import Dinov3HfViTBackbone, Dinov3HfViTConfig, Dinov3HfViTModel
    from .processing import Dinov3HfDinoTxtProcessor, Dinov3HfImageProcessor
    from .registration import register_auto_classes

    register_auto_classes()

__all__ = [
    "DPTHead",
    "Dinov3HfConvNextBackbone",
    "Dinov3HfConvNextConfig",
    "Dinov3HfConvNextModel",
    "Dinov3HfDepthEstimationConfig",
    "Dinov3HfDinoTxtConfig",
    "Dinov3HfDinoTxtModel",
    "Dinov3HfDinoTxtProcessor",
    "Dinov3HfDinoTxtTokenizer",
    "Dinov3HfForDepthEstimation",
    "Dinov3HfForImageClassification",
    "Dinov3HfForSemanticSegmentation",
    "Dinov3HfImageClassificationConfig",
    "Dinov3HfImageProcessor",
    "Dinov3HfSemanticSegmentationConfig",
    "Dinov3HfViTBackbone",
    "Dinov3HfViTConfig",
    "Dinov3HfViTModel",
    "__version__",
    "transformers_dpt_config",
]
