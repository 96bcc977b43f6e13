"""Single-teacher multi-student distillation (DINOv3) on the Hugging Face Trainer: a frozen teacher runs once per batch
and ViT / ConvNeXt students learn DINO + iBOT + KoLeo against its targets, each keeping an EMA copy.

    python training/distill.py --config training/configs/fashion_mnist_distill_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/distill.py --config training/configs/vitl16_distill_from_vit7b16.yaml

The YAML's recipe is a dinov3_hf.ssl.DistillationConfig: the teacher's architecture and `teacher_checkpoint`, and
`students` (with `ranks: [start, end)` to train them in rank subgroups). Each student and its EMA copy are saved as
`from_pretrained` folders in the output folder.

Overrides use dotted keys (`training.max_steps=100`); `training.resume_from_checkpoint=true` continues the last
checkpoint in the output folder.
"""

import sys

from dinov3_hf.ssl.pretraining import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
