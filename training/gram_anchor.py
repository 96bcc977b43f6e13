"""Gram anchoring (DINOv3 stage 2) on the Hugging Face Trainer: the pretraining objective plus the Gram loss against a
Gram teacher (a checkpoint, or the EMA teacher at a given step, refreshed every N steps), usually on high-resolution
undistorted crops.

    python training/gram_anchor.py --config training/configs/fashion_mnist_gram_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/gram_anchor.py --config training/configs/vit7b16_gram_anchor.yaml

The YAML's recipe is a dinov3_hf.ssl.PretrainConfig with a `gram` section (dinov3_hf.ssl.GramConfig); `init_from`
starts from a pretraining checkpoint.

Overrides use dotted keys (`training.max_steps=100`); `training.resume_from_checkpoint=true` continues the last
checkpoint in the output folder.
"""

import sys

from dinov3_hf.ssl.pretraining import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
