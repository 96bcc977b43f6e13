"""The dino.txt processor: the image processor and the CLIP BPE tokenizer behind one call."""

from __future__ import annotations

from typing import Any

from transformers import BatchFeature
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
from transformers.processing_utils import ProcessorMixin

from .image_processing import Dinov3HfImageProcessor


class Dinov3HfDinoTxtProcessor(ProcessorMixin):
    r"""`processor(images=..., text=...)` -> `pixel_values` and/or `input_ids` + `attention_mask`.

    Texts are tokenized as dino.txt was trained: padded with zeros to the 77-token context and truncated (ending with
    EOT); pass `padding`, `truncation` or other tokenizer arguments to change that. Other keyword arguments go to the
    image processor. Saved and loaded with `save_pretrained` / `AutoProcessor.from_pretrained`.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def for_model_config(cls, config, image_size: int = 224) -> "Dinov3HfDinoTxtProcessor":
        """The processor of a dino.txt config: square bicubic resize to `image_size` with the backbone's mean / std
        and patch multiple, and the CLIP BPE tokenizer with the config's text context.

        The tokenizer class is the one registered for the config's class with `AutoTokenizer` (importing dinov3_hf
        registers it), so processing/ does not import models/."""
        if type(config) not in TOKENIZER_MAPPING:
            raise ValueError(f"No tokenizer is registered for {type(config).__name__}; pass a dino.txt config.")
        image_processor = Dinov3HfImageProcessor.for_model_config(
            config, size={"height": image_size, "width": image_size}, resample="bicubic"
        )
        return cls(image_processor, TOKENIZER_MAPPING[type(config)](context_length=config.text_context_length))

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("Pass images, text or both to the dino.txt processor.")
        text_keys = ("padding", "truncation", "max_length", "pad_to_multiple_of", "return_attention_mask")
        text_kwargs = {"padding": "max_length", "truncation": True, **{k: kwargs.pop(k) for k in text_keys if k in kwargs}}
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data, tensor_type=return_tensors)
