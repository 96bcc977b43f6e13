"""dino.txt LiT training (frozen DINOv3 backbone; vision head + text tower trained) on the Hugging Face Trainer.

    python training/train_dinotxt.py --config training/configs/dinotxt_fashion_mnist_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/train_dinotxt.py --config training/configs/dinotxt_vitl16.yaml \
        recipe.backbone=/ckpt/vitl16 data.path=/data/captions

The YAML has the sections `recipe` (dinov3_hf.ssl.lit.LiTConfig), `data` (the training images and their captions,
or class labels plus `templates`), optional `eval` (held-out images and templates for zero-shot accuracy) and
`training` (TrainingArguments). Overrides use dotted keys, e.g. `training.max_steps=100`. The trained model and its
processor are saved to `<output_dir>/dinotxt`.
"""

import sys

from dinov3_hf.ssl.lit import run_lit_training
from dinov3_hf.ssl.pretraining import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__, run=run_lit_training))
