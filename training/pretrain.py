"""DINOv3 SSL pretraining (DINO + iBOT + KoLeo, EMA teacher) on the Hugging Face Trainer.

    python training/pretrain.py --config training/configs/fashion_mnist_cpu.yaml [key=value ...]
    torchrun --nproc_per_node 8 training/pretrain.py --config training/configs/vitl16_imagenet.yaml data.path=/data/in1k

The YAML has three sections: `recipe` (dinov3_hf.ssl.PretrainConfig), `data` and `training` (TrainingArguments).
Overrides use dotted keys: `recipe.n_local_crops=4 training.max_steps=100`. `training.resume_from_checkpoint=true`
continues the last checkpoint in the output folder. At the end the teacher and student backbones are saved as
`from_pretrained` folders in the output folder.
"""

import sys

from dinov3_hf.ssl.pretraining import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
