"""One LiT loss + backward on a fixed global batch, in one process or under `torchrun` (DDP, gloo).

    python dist_lit_check.py single OUT.pt
    torchrun --nproc_per_node 2 dist_lit_check.py ddp OUT.pt

Writes the loss (averaged over ranks) and the trainable parameters' gradients (DDP-averaged), for the test to compare.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from dinov3_hf import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtModel, Dinov3HfViTConfig
from dinov3_hf.ssl.losses.contrastive import symmetric_infonce

GLOBAL_BATCH = 8


def main(mode: str, out: str) -> None:
    distributed = mode == "ddp"
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    backbone = Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                             patch_size=8, rope_rescale=None)
    config = Dinov3HfDinoTxtConfig(backbone_config=backbone, text_hidden_size=16, text_num_hidden_layers=1,
                                   text_num_attention_heads=2, vision_head_layers=1, vision_head_drop_path_rate=0.0,
                                   vision_head_layerscale_init=0.5)
    model = Dinov3HfDinoTxtModel(config).train()
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=gen)
    ids = torch.randint(1, 49406, (GLOBAL_BATCH, 6), generator=gen)
    ids[:, 0], ids[:, -1] = 49406, 49407
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    outputs = wrapped(input_ids=ids[rows], pixel_values=pixels[rows])
    loss = symmetric_infonce(outputs.image_embeds, outputs.text_embeds, model.logit_scale)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    loss = loss.detach().clone()
    if distributed:
        dist.all_reduce(loss)
        loss /= world
    if rank == 0:
        torch.save({"loss": loss, "grads": grads}, out)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
