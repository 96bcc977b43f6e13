"""dino.txt LiT training (frozen DINOv3 backbone; vision head + text tower trained) on the Hugging Face Trainer.

    python training/train_dinotxt.py --config training/configs/dinotxt_fashion_mnist_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/train_dinotxt.py --config training/configs/dinotxt_vitl16.yaml \
        recipe.backbone=/ckpt/vitl16 data.path=/data/captions

The YAML has the sections `recipe` (dinov3_hf.ssl.lit.LiTConfig), `data` (the training images and their captions,
or class labels plus `templates`), optional `eval` (held-out images and templates for zero-shot accuracy) and
`training` (TrainingArguments). Overrides use dotted keys, e.g. `training.max_steps=100`. The trained model and its
processor are saved to `<output_dir>/dinotxt`.
"""

from __future__ import annotations

import argparse
import sys

from dinov3_hf.ssl.lit import run_lit_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file with recipe / data / eval / training sections")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the YAML")
    args = parser.parse_args(argv)
    run_lit_training(args.config, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
