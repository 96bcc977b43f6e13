#!/usr/bin/env bash
# GPU check of SSL pretraining on one GPU: bf16 step throughput (bench_ssl_step.py), then the ViT-S 1-GPU recipe
# (training/configs/vits16_1gpu.yaml) under the Trainer's FSDP2 settings via torchrun: 20 steps with checkpoints at
# 10 and 20, and a second run resumed from checkpoint-10 whose final teacher backbone is compared with the first.
#   OUT=/tmp/out bash bench/gpu_ssl_fsdp.sh
set -u
OUT=${OUT:-/tmp/gpu_ssl_fsdp}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1
if ! python -c "import ftfy" 2>/dev/null; then  # only the dino.txt tokenizer needs ftfy; an offline GPU box may lack it
  mkdir -p /tmp/stubs && echo "def fix_text(text): return text" > /tmp/stubs/ftfy.py && export PYTHONPATH=$PYTHONPATH:/tmp/stubs
fi
python -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/versions.txt"
[ "${SKIP_STEP_BENCH:-0}" = 1 ] || timeout 150 python bench/bench_ssl_step.py --device cuda 2>&1 | tail -20 | tee "$OUT/bench_ssl_step.txt"
python - <<'PY'
import numpy as np, os
from PIL import Image
root = "/tmp/fsdp_images/all"
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(256):  # smooth random images: the run checks mechanics, not learning
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((256, 256), Image.BICUBIC).save(f"{root}/{i:04d}.png")
PY
COMMON=(training.per_device_train_batch_size=16 training.save_steps=10 training.logging_steps=5
  training.dataloader_num_workers=4 training.fsdp=full_shard "training.fsdp_config={fsdp_version: 2}" "training.report_to=[]")
# the driver passes the images as a list, so the run needs no `datasets` install on the GPU machine
cat > /tmp/fsdp_driver.py <<'PY'
import glob, sys
from PIL import Image
from dinov3_hf.ssl.config import load_yaml_with_overrides
from dinov3_hf.ssl.pretraining import build_trainer
config = load_yaml_with_overrides("training/configs/vits16_1gpu.yaml", sys.argv[1:])
resume = config["training"].get("resume_from_checkpoint")
images = [{"image": Image.open(path).convert("RGB")} for path in sorted(glob.glob("/tmp/fsdp_images/all/*.png"))]
trainer = build_trainer(config, train_dataset=images)
trainer.train(resume_from_checkpoint=resume)
trainer.save_backbones(trainer.args.output_dir)
print("final log", trainer.state.log_history[-2:])
PY
timeout 150 torchrun --standalone --nproc_per_node 1 /tmp/fsdp_driver.py \
  "${COMMON[@]}" training.max_steps=20 training.output_dir=/tmp/fsdp_run > "$OUT/fsdp_run.txt" 2>&1
echo "rc=$?" >> "$OUT/fsdp_run.txt"
timeout 120 torchrun --standalone --nproc_per_node 1 /tmp/fsdp_driver.py \
  "${COMMON[@]}" training.max_steps=20 training.output_dir=/tmp/fsdp_resumed \
  training.resume_from_checkpoint=/tmp/fsdp_run/checkpoint-10 > "$OUT/fsdp_resume.txt" 2>&1
echo "rc=$?" >> "$OUT/fsdp_resume.txt"
ls -R /tmp/fsdp_run | head -40 > "$OUT/fsdp_run_files.txt"
python - <<'PY' 2>&1 | tee "$OUT/compare.txt"
import glob
from safetensors.torch import load_file
for sub in ("teacher", "student"):
    a = sorted(glob.glob(f"/tmp/fsdp_run/{sub}*/*.safetensors"))
    b = sorted(glob.glob(f"/tmp/fsdp_resumed/{sub}*/*.safetensors"))
    if not a or not b:
        print(sub, "missing", a, b); continue
    sa, sb = load_file(a[0]), load_file(b[0])
    diff = max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)
    print(sub, "tensors", len(sa), "max |one run - resumed run|", diff)
PY
