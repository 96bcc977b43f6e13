"""Dense tools on patch features: tiled inference, upsampling to pixels, correspondences, video label propagation
and foreground masks. Each concept has its own module; they take a model or features as arguments."""

from .correspondence import (
    Matches,
    RawPixelPatches,
    draw_matches,
    grid_to_pixels,
    match_features,
    match_images,
    patch_feature_grid,
    pixels_to_grid,
    top_matches,
)
from .foreground import first_component_scores, foreground_mask, foreground_pca
from .propagation import PropagationResult, propagate_labels, propagate_video
from .tiling import (
    TiledFeatures,
    check_tiling,
    default_overlap,
    tile_boxes,
    tiled_patch_features,
    tiled_predict,
)
from .upsample import upsample_features, upsampled_pca_rgb

__all__: list[str] = [
    "Matches",
    "PropagationResult",
    "RawPixelPatches",
    "TiledFeatures",
    "check_tiling",
    "default_overlap",
    "draw_matches",
    "first_component_scores",
    "foreground_mask",
    "foreground_pca",
    "grid_to_pixels",
    "match_features",
    "match_images",
    "patch_feature_grid",
    "pixels_to_grid",
    "propagate_labels",
    "propagate_video",
    "tile_boxes",
    "tiled_patch_features",
    "tiled_predict",
    "top_matches",
    "upsample_features",
    "upsampled_pca_rgb",
]
