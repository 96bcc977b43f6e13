"""Real image data that is available offline: files bundled in pip wheels and Debian packages."""

from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .pasted_objects import CATEGORIES as PASTED_OBJECTS_CATEGORIES, PastedObjectsImage, make_pasted_objects
from .stereo import DepthSample, depth_crops, disparity_to_depth, load_depth_sample, load_motorcycle, load_quokka
from .textures import (
    DEFAULT_CLASSES as TEXTURE_CLASSES,
    TEXTURES,
    MosaicSample,
    TextureMosaics,
    texture,
    texture_crop_dataset,
    texture_mosaic_dataset,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "PASTED_OBJECTS_CATEGORIES",
    "TEXTURES",
    "TEXTURE_CLASSES",
    "DepthSample",
    "MosaicSample",
    "PastedObjectsImage",
    "TextureMosaics",
    "depth_crops",
    "disparity_to_depth",
    "load_depth_sample",
    "load_fashion_mnist",
    "load_motorcycle",
    "load_quokka",
    "make_pasted_objects",
    "texture",
    "texture_crop_dataset",
    "texture_mosaic_dataset",
]
