"""LiT training of dino.txt on the Hugging Face Trainer (official `dinov3/eval/text/train_dinotxt.py`).

The backbone stays frozen; the vision head, text tower, text projection and logit scale are trained with the
symmetric InfoNCE over the global batch (`losses.contrastive`), AdamW with no weight decay on parameters with
ndim < 2 or names containing bn / ln / bias / logit_scale, the lr schedule of `recipe.lr` (official: linear warmup
over 2000 steps from 0 to 7e-4, then cosine to 0 at 50,000), and logit_scale clamped to [0, ln 100] after every step.
Captions come from a text column, or from class labels written into randomly drawn templates.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR
from torchvision.transforms import InterpolationMode, v2
from tqdm.auto import tqdm
from huggingface_hub import EvalResult
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from ..models.dinotxt import Dinov3HfDinoTxtModel, class_text_embeddings, zero_shot_logits
from ..processing import Dinov3HfDinoTxtProcessor
from .config import load_yaml_with_overrides
from .losses.contrastive import symmetric_infonce
from ..models.hub import DINOV3_LICENSE, PACKAGE_LICENSE, push_folder
from .pretraining import DATASET_IDS, load_image_dataset
from .schedules import make_schedule

_NO_DECAY_NAMES = ("bn", "ln", "bias", "logit_scale")


@dataclass
class LiTConfig:
    """The `recipe` section of a LiT run. Defaults are the official dino.txt values (ViT-L, 224-pixel crops).

    backbone: a checkpoint folder / Hub id, None for the package's shipped Fashion-MNIST ViT, "random" for a tiny
        random ViT (smoke tests). model: fields of `Dinov3HfDinoTxtConfig` (text tower size, vision head, ...).
    """

    backbone: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    horizontal_flips: bool = True
    lr: dict[str, Any] = field(default_factory=lambda: {
        "kind": "warmup_cosine", "warmup_iters": 2000, "total_iters": 50000, "start": 0.0, "peak": 7e-4, "end": 0.0,
    })
    weight_decay: float = 1e-4
    adamw_betas: tuple[float, float] = (0.9, 0.99)
    adamw_eps: float = 1e-8

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LiTConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"Unknown LiT recipe keys: {', '.join(unknown)}. Known keys: {', '.join(sorted(fields))}.")
        return cls(**{k: tuple(v) if isinstance(v, list) and k != "model" else v for k, v in values.items()})


class CaptionCollator:
    """Examples -> {"pixel_values": augmented images [B, 3, S, S], "input_ids": [B, T] padded to the longest}.

    Augmentation (official): RandomResizedCrop(S, scale=crop_scale, bicubic) + horizontal flip + normalisation.
    The caption is the example's `text_key` column, or a random template filled with `class_names[label]`.
    """

    def __init__(
        self,
        processor: Dinov3HfDinoTxtProcessor,
        recipe: LiTConfig,
        templates: Sequence[str] = (),
        class_names: Sequence[str] = (),
        image_key: str = "image",
        text_key: str = "caption",
        label_key: str = "label",
    ):
        self.tokenizer = processor.tokenizer
        image_processor = processor.image_processor
        steps = [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomResizedCrop(recipe.image_size, scale=recipe.crop_scale, interpolation=InterpolationMode.BICUBIC),
        ]
        if recipe.horizontal_flips:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.Normalize(image_processor.image_mean, image_processor.image_std))
        self.transform = v2.Compose(steps)
        self.templates, self.class_names = list(templates), list(class_names)
        self.image_key, self.text_key, self.label_key = image_key, text_key, label_key

    def caption(self, example: dict[str, Any]) -> str:
        if self.text_key in example:
            return example[self.text_key]
        if not (self.templates and self.class_names):
            raise ValueError(
                f"Examples have no {self.text_key!r} column; give data.templates and class names to caption labels."
            )
        return random.choice(self.templates).format(self.class_names[example[self.label_key]])

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = torch.stack([self.transform(ex[self.image_key].convert("RGB")) for ex in examples])
        texts = [self.caption(ex) for ex in examples]
        ids = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")["input_ids"]
        return {"pixel_values": images, "input_ids": ids}


def lit_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: decayed, and not decayed (ndim < 2 or a name containing
    bn / ln / bias / logit_scale)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            skip = param.ndim < 2 or any(part in name for part in _NO_DECAY_NAMES)
            (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ClampLogitScaleCallback(TrainerCallback):
    """logit_scale <- clamp(logit_scale, 0, ln 100) after every optimizer step."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.clamp_logit_scale_()


class LiTTrainer(Trainer):
    """A Trainer for `Dinov3HfDinoTxtModel` batches {pixel_values, input_ids} of image-caption pairs."""

    def __init__(self, model: Dinov3HfDinoTxtModel, args: TrainingArguments, recipe: LiTConfig, **kwargs):
        if args.remove_unused_columns:
            raise ValueError("LiT training needs TrainingArguments(remove_unused_columns=False): the collator reads images.")
        callbacks = list(kwargs.pop("callbacks", None) or []) + [ClampLogitScaleCallback()]
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)
        self.recipe = recipe

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = lit_param_groups(self.model, self.recipe.weight_decay)
            # lr 1: LambdaLR multiplies it by the schedule's value
            self.optimizer = torch.optim.AdamW(groups, lr=1.0, betas=self.recipe.adamw_betas, eps=self.recipe.adamw_eps)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, make_schedule(self.recipe.lr))
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
        logit_scale = self.accelerator.unwrap_model(model).logit_scale
        loss = symmetric_infonce(outputs.image_embeds, outputs.text_embeds, logit_scale)
        return (loss, outputs) if return_outputs else loss


@torch.no_grad()
def zero_shot_accuracy(
    model: Dinov3HfDinoTxtModel,
    processor: Dinov3HfDinoTxtProcessor,
    dataset,
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
    image_key: str = "image",
    label_key: str = "label",
) -> float:
    """Top-1 accuracy of the template-averaged zero-shot classifier on a labelled image dataset."""
    model.eval()
    class_embeds = class_text_embeddings(model, processor.tokenizer, class_names, templates)
    correct = 0
    for start in tqdm(range(0, len(dataset), batch_size), desc="zero-shot eval", leave=False):
        batch = dataset[start : start + batch_size]
        images = [image.convert("RGB") for image in batch[image_key]]
        pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"].to(model.device)
        predictions = zero_shot_logits(model, pixel_values, class_embeds).argmax(dim=-1).cpu()
        correct += int((predictions == torch.as_tensor(batch[label_key])).sum())
    return correct / len(dataset)


def _class_names(dataset, data: dict[str, Any]) -> list[str]:
    if "class_names" in data:
        return list(data["class_names"])
    feature = getattr(dataset, "features", {}).get(data.get("label_key", "label"))
    return [name.lower() for name in getattr(feature, "names", [])]


def build_lit_trainer(config: dict[str, Any], train_dataset=None) -> LiTTrainer:
    """A LiTTrainer for a parsed config with sections recipe (LiTConfig), data, eval and training
    (TrainingArguments); `train_dataset` replaces the data section's dataset."""
    from ..pretrained_models import load_backbone

    unknown = sorted(set(config) - {"recipe", "data", "eval", "training"})
    if unknown:
        raise ValueError(f"Unknown config sections {unknown}; expected recipe, data, eval and training.")
    recipe = LiTConfig.from_dict(config.get("recipe", {}))
    data = config.get("data", {})
    training = {"remove_unused_columns": False, "report_to": [], "ddp_find_unused_parameters": False,
                **config.get("training", {})}
    push = training.pop("push_to_hub", False)  # run_lit_training pushes the saved model, not the Trainer
    if push and not training.get("hub_model_id"):
        raise ValueError(
            "training.push_to_hub needs training.hub_model_id, the Hub repo to push the dino.txt model to."
        )
    args = TrainingArguments(**training)
    set_seed(args.seed)
    backbone, _ = load_backbone(recipe.backbone)
    model = Dinov3HfDinoTxtModel.from_backbone(backbone, **recipe.model).train()
    processor = Dinov3HfDinoTxtProcessor.for_model_config(model.config, image_size=recipe.image_size)
    dataset = train_dataset if train_dataset is not None else load_image_dataset(data)
    collator = CaptionCollator(
        processor, recipe, templates=data.get("templates", ()), class_names=_class_names(dataset, data),
        image_key=data.get("image_key", "image"), text_key=data.get("text_key", "caption"),
        label_key=data.get("label_key", "label"),
    )
    trainer = LiTTrainer(model=model, args=args, recipe=recipe, train_dataset=dataset, data_collator=collator)
    trainer.processor = processor
    trainer.push_repo_id = args.hub_model_id if push else None
    return trainer


def run_lit_training(config_path: str | Path, overrides: Sequence[str] = ()) -> tuple[LiTTrainer, float | None]:
    """Train as configured; save model + processor (+ model card) to `<output_dir>/dinotxt`; with an `eval` section (a
    dataset spec like `data` plus `templates`, held out from training), return the zero-shot accuracy there too, and
    with `training.push_to_hub: true` push that folder to `training.hub_model_id` (`hub_private_repo`, `hub_revision`,
    `hub_token` as for the Trainer)."""
    config = load_yaml_with_overrides(config_path, list(overrides))
    trainer = build_lit_trainer(config)
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    accuracy = None
    if trainer.is_world_process_zero():
        out = Path(trainer.args.output_dir) / "dinotxt"
        model.save_pretrained(out)
        trainer.processor.save_pretrained(out)
        if "eval" in config:
            spec = config["eval"]
            dataset = load_image_dataset(spec)
            accuracy = zero_shot_accuracy(
                model, trainer.processor, dataset, _class_names(dataset, spec), spec["templates"],
                image_key=spec.get("image_key", "image"), label_key=spec.get("label_key", "label"),
            )
            trainer.log({"zero_shot_accuracy": accuracy})
            print(f"zero-shot accuracy on the held-out images and templates: {accuracy:.4f}")
        publish_dinotxt(trainer, model, config, out, accuracy)
    return trainer, accuracy


def publish_dinotxt(
    trainer: LiTTrainer, model: Dinov3HfDinoTxtModel, config: dict[str, Any], folder: Path, accuracy: float | None
) -> None:
    """Write the model card of the saved dino.txt folder (the zero-shot accuracy as a model-index result) and, if the
    run is configured to, push the folder. The licence is the package's on the shipped backbone (`recipe.backbone`
    null), else the DINOv3 License, which covers Meta's backbones and everything derived from them."""
    args, recipe, spec = trainer.args, config.get("recipe", {}), config.get("eval", {})
    dataset = DATASET_IDS.get(spec.get("kind")) or spec.get("name") or spec.get("kind")
    trained_on = DATASET_IDS.get(config.get("data", {}).get("kind"))
    results = None
    if accuracy is not None:
        results = [EvalResult(task_type="zero-shot-image-classification", dataset_type=dataset, dataset_name=dataset,
                              dataset_split=spec.get("split", "test"), metric_type="accuracy", metric_value=accuracy,
                              metric_name="zero-shot accuracy (held-out templates)")]
    card = model.model_card(
        trainer.push_repo_id,
        license=PACKAGE_LICENSE if recipe.get("backbone") is None else DINOV3_LICENSE,
        datasets=[trained_on] if trained_on else None,
        eval_results=results,
        tags=["dinotxt", "locked-image-text-tuning"],
    )
    card.save(folder / "README.md")
    if trainer.push_repo_id:
        push_folder(folder, trainer.push_repo_id, private=args.hub_private_repo, revision=args.hub_revision,
                    token=args.hub_token, commit_message=f"dino.txt model at step {trainer.state.global_step}")
