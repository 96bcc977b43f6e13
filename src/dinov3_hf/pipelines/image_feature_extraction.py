"""transformers' `image-feature-extraction` pipeline, with mixed-size batches for the DINOv3 backbones."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import ImageFeatureExtractionPipeline
from transformers.backbone_utils import BackboneMixin

from ..models.convnext import Dinov3HfConvNextModel, Dinov3HfConvNextModelOutput
from ..models.vit import Dinov3HfViTModel, Dinov3HfViTModelOutput
from ..processing import Dinov3HfImageProcessor

IMAGE_FEATURE_EXTRACTION_TASK = "image-feature-extraction"


class Dinov3HfImageFeatureExtractionPipeline(ImageFeatureExtractionPipeline):
    """`pipeline("image-feature-extraction")`: transformers' pipeline, plus one padded forward per batch of
    images of different sizes for our ViT and ConvNeXt models.

    transformers' batching (`batch_size > 1`) concatenates the `pixel_values` of a batch, which needs one image size
    (a processor with a fixed `size`). With our model and image processor, a batch whose images come out in
    different sizes (e.g. `size={"shortest_edge": S}`) is padded by `Dinov3HfImageProcessor.pad` and runs as one
    forward with its `pixel_mask`; each image's result is then its own (`unpad()` of the model output): equal, up
    to float rounding, to running that image alone. Same-size batches and every other model run as in transformers.
    """

    @property
    def pads_mixed_sizes(self) -> bool:
        """Whether batches of mixed image sizes run padded: our ViT / ConvNeXt model (not a backbone view) with our
        image processor."""
        return (
            isinstance(self.model, (Dinov3HfViTModel, Dinov3HfConvNextModel))
            and not isinstance(self.model, BackboneMixin)
            and isinstance(self.image_processor, Dinov3HfImageProcessor)
        )

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """transformers' iterator, with `collate` as its DataLoader's collate function where batches may pad.

        transformers builds the DataLoader with its `pad_collate_fn` inside this method, leaving no hook to pass
        another; the iterator it returns runs `postprocess` over the model iterator, whose `loader` is that DataLoader.
        """
        iterator = super().get_iterator(
            inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
        )
        if batch_size > 1 and self.pads_mixed_sizes:
            loader = getattr(getattr(iterator, "loader", None), "loader", None)
            if not isinstance(loader, DataLoader):
                raise TypeError(
                    f"Expected transformers' pipeline iterator to wrap a DataLoader, found {type(loader).__name__}; "
                    "this transformers version batches differently. Run with batch_size=1."
                )
            loader.collate_fn = self.collate
        return iterator

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Preprocessed images -> one model input: concatenated as transformers does when all have one size, else
        padded into one batch with a `pixel_mask` (`Dinov3HfImageProcessor.pad`)."""
        if len({tuple(item["pixel_values"].shape) for item in items}) == 1:
            return {key: torch.cat([item[key] for item in items]) for key in items[0]}
        return dict(self.image_processor.pad([item["pixel_values"][0] for item in items], return_tensors="pt"))

    def postprocess(self, model_outputs: Any, pool: bool | None = None, return_tensors: bool = False) -> Any:
        """transformers' postprocessing of one image's output; a padded image's output is cut to its own tokens.

        The pipeline hands over a plain `ModelOutput` of the model output's fields, sliced to the image; the model's
        output class is rebuilt from them for its `unpad()`.
        """
        if self.pads_mixed_sizes and model_outputs.get("patch_mask") is not None:
            output_class = (
                Dinov3HfViTModelOutput if isinstance(self.model, Dinov3HfViTModel) else Dinov3HfConvNextModelOutput
            )
            (model_outputs,) = output_class(**model_outputs).unpad()
        return super().postprocess(model_outputs, pool=pool, return_tensors=return_tensors)
