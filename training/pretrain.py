"""DINOv3 SSL pretraining (DINO + iBOT + KoLeo, EMA teacher) on the Hugging Face Trainer.

    python training/pretrain.py --config training/configs/fashion_mnist_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/pretrain.py --config training/configs/vitl16_imagenet.yaml data.path=/data/in1k

The YAML has three sections: `recipe` (dinov3_hf.ssl.PretrainConfig), `data` and `training` (TrainingArguments).
Overrides use dotted keys: `recipe.n_local_crops=4 training.max_steps=100`. `training.resume_from_checkpoint=true`
continues the last checkpoint in the output folder. At the end the teacher and student backbones are saved as
`from_pretrained` folders in the output folder.
"""

from __future__ import annotations

import argparse
import sys

from dinov3_hf.ssl.pretraining import run_pretraining


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file with recipe / data / training sections")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the YAML")
    args = parser.parse_args(argv)
    run_pretraining(args.config, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
