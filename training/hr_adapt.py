"""High-resolution adaptation (DINOv3 stage 3) on the Hugging Face Trainer: Gram anchoring with one (global, local,
Gram-teacher) crop-size triple drawn per step, the same on every rank, and distributed KoLeo.

    python training/hr_adapt.py --config training/configs/fashion_mnist_hr_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/hr_adapt.py --config training/configs/vit7b16_high_res_adapt.yaml

The YAML's recipe is a dinov3_hf.ssl.PretrainConfig with `resolutions` and `gram` sections.

Overrides use dotted keys (`training.max_steps=100`); `training.resume_from_checkpoint=true` continues the last
checkpoint in the output folder.
"""

import sys

from dinov3_hf.ssl.pretraining import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
