"""Model families: `vit` (the DINOv3 ViTs) and `convnext` (the distilled ConvNeXts)."""
