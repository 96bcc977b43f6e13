"""Building blocks of the DINOv3 ViT: patch embedding, RoPE, attention, FFNs, LayerScale and the block."""
