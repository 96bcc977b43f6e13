"""Mixed-size batches: images padded at the bottom and right into one batch, with a `pixel_mask` marking real pixels.

`pixel_mask` follows transformers' DETR-style image processors: (B, H, W), 1 on each image's own pixels, 0 on the
padding. The backbones accept it and give every image the result it would get alone.
"""

from __future__ import annotations

import torch


def image_grids(pixel_mask: torch.Tensor, pixel_values: torch.Tensor | list, stride: int) -> list[tuple[int, int]]:
    """Each image's output grid (h // stride, w // stride), with h x w its real pixels, read from `pixel_mask`.

    Raises a ValueError unless `pixel_values` is one batch tensor and `pixel_mask` has its batch and spatial shape
    and marks, per image, a top-left h x w rectangle whose sides are positive multiples of `stride` (the image
    processor's `do_pad=True` gives such masks).
    """
    if isinstance(pixel_values, (list, tuple)):
        raise ValueError(
            "pixel_mask goes with one padded batch tensor, not a list of crop batches; pad the images into one batch "
            "(the image processor's do_pad=True) or drop pixel_mask."
        )
    batch, height, width = pixel_values.shape[0], *pixel_values.shape[-2:]
    if pixel_mask.shape != (batch, height, width):
        raise ValueError(
            f"pixel_mask has shape {tuple(pixel_mask.shape)} but pixel_values {tuple(pixel_values.shape)} need a "
            f"({batch}, {height}, {width}) mask; pass the pixel_mask the image processor returns with do_pad=True."
        )
    real = pixel_mask.bool()
    grids = []
    for i, (h, w) in enumerate(mask_extents(real)):
        if not torch.equal(real[i], rectangle_mask(h, w, height, width, real.device)):
            raise ValueError(
                f"pixel_mask of image {i} does not mark a top-left rectangle: the real pixels must come first in each "
                "row and column, with the padding at the bottom and right (as the image processor's do_pad=True)."
            )
        if h == 0 or w == 0 or h % stride or w % stride:
            raise ValueError(
                f"Image {i} has {h}x{w} real pixels in pixel_mask; mixed-size batches need each image's height and "
                f"width to be positive multiples of the model's stride {stride}. Resize the images to such sizes "
                f"before padding (the image processor does with do_resize=True and size_divisor={stride})."
            )
        grids.append((h // stride, w // stride))
    return grids


def mask_extents(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Per image of a (B, H, W) mask, (rows, columns) holding any nonzero entry: the size of a top-left block."""
    mask = mask.bool()
    return list(zip(mask.any(2).sum(1).tolist(), mask.any(1).sum(1).tolist()))


def rectangle_mask(h: int, w: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(height, width) booleans, True on the top-left h x w block."""
    return (torch.arange(height, device=device) < h)[:, None] & (torch.arange(width, device=device) < w)[None, :]


def grid_masks(
    grids: list[tuple[int, int]], height: int, width: int, device: torch.device | None = None
) -> torch.Tensor:
    """(B, height, width) booleans, True on each image's top-left grid block `grids[b]`."""
    return torch.stack([rectangle_mask(h, w, height, width, device) for h, w in grids])


def token_index(
    patch_mask: torch.Tensor | None, image: int, tokens: int, device: torch.device | None = None
) -> torch.Tensor:
    """Indices of image `image`'s tokens in a padded sequence of `tokens` tokens that ends with the patch grid of
    `patch_mask` (B, h, w): every token before the grid (CLS, registers, pool), then the image's own patches,
    row-major. Without `patch_mask`, all tokens."""
    keep = torch.ones(tokens, dtype=torch.bool, device=device)
    if patch_mask is not None:
        keep[tokens - patch_mask[image].numel() :] = patch_mask[image].flatten()
    return keep.nonzero().squeeze(1)


def image_tokens(tokens: torch.Tensor, patch_mask: torch.Tensor | None, image: int) -> torch.Tensor:
    """Image `image`'s tokens (1, T_image, D) of a padded (B, T, D) sequence (see `token_index`)."""
    return tokens[image : image + 1, token_index(patch_mask, image, tokens.shape[1], tokens.device)]
