"""DINOv3 pretraining on the Hugging Face Trainer: optimizer groups, schedules, EMA, clipping, NaN guard, logging.

`SSLTrainer(model=SSLMetaArch(recipe), args=TrainingArguments(...), train_dataset=..., data_collator=...)`.
The Trainer's own lr scheduler and global clipping are replaced: `SSLScheduler` sets lr, weight decay and the
last-layer freeze per parameter group every step, gradients are clipped per student submodule, and the teacher is
updated by EMA after every optimizer step. Everything lives in the model, optimizer and scheduler state dicts or the
Trainer state, and the crops of a sample depend only on (seed, epoch, index) (`SeededSamples`), so
`resume_from_checkpoint` continues the same run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from .collate import SeededSamples
from .meta_arch import SSLMetaArch
from .param_groups import apply_schedules, build_param_groups
from .resolutions import MixedResolutionBatchSampler
from .schedules import make_schedule


class SSLScheduler(LRScheduler):
    """Per-step lr / weight decay / last-layer lr for the groups of `build_param_groups` (step = optimizer steps)."""

    def __init__(self, optimizer: torch.optim.Optimizer, recipe):
        self.lr_schedule = make_schedule(recipe.lr)
        self.wd_schedule = make_schedule(recipe.weight_decay)
        self.freeze_last_layer_iters = recipe.freeze_last_layer_iters
        super().__init__(optimizer)

    def state_dict(self) -> dict:
        """The step counter and last values; the schedules themselves come from the recipe."""
        return {k: v for k, v in super().state_dict().items() if k not in ("lr_schedule", "wd_schedule")}

    def get_lr(self) -> list[float]:
        it = self.last_epoch
        lr, wd = self.lr_schedule(it), self.wd_schedule(it)
        apply_schedules(self.optimizer, lr=lr, wd=wd, last_layer_lr=0.0 if it < self.freeze_last_layer_iters else lr)
        return [group["lr"] for group in self.optimizer.param_groups]


class EMATeacherCallback(TrainerCallback):
    """θ_ema <- m(step)·θ_ema + (1 - m(step))·θ_student after each optimizer step (`model.update_ema`)."""

    def __init__(self, recipe):
        self.momentum = make_schedule(recipe.momentum)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.update_ema(self.momentum(state.global_step))


class GramTeacherCallback(TrainerCallback):
    """After each optimizer step (and the EMA update), copy the EMA teacher into the Gram teacher when due."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.refresh_gram_teacher(completed_steps=state.global_step + 1)


class ClipPerModuleCallback(TrainerCallback):
    """Clip the gradient norm of each student submodule (backbone, heads) separately to `max_norm`."""

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.max_norm > 0:
            for student in model.student_modules():
                for module in student.values():
                    torch.nn.utils.clip_grad_norm_(module.parameters(), self.max_norm)


class EpochSeedCallback(TrainerCallback):
    """Tells `SeededSamples` the epoch, so every epoch draws new crops while runs stay resumable."""

    def __init__(self, dataset: SeededSamples):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch + 1e-6))


class SSLTrainer(Trainer):
    """A Trainer for `SSLMetaArch` (or `DistillationMetaArch`); pass `remove_unused_columns=False` and
    `max_grad_norm=0` in its arguments."""

    def __init__(self, model: SSLMetaArch, args, **kwargs):
        if args.remove_unused_columns:
            raise ValueError("SSL training needs TrainingArguments(remove_unused_columns=False): the collator reads the images.")
        if args.max_grad_norm:
            raise ValueError(
                "Set TrainingArguments(max_grad_norm=0): gradients are clipped per submodule with recipe.clip_grad."
            )
        recipe = model.recipe
        callbacks = list(kwargs.pop("callbacks", None) or []) + [EMATeacherCallback(recipe), ClipPerModuleCallback(recipe.clip_grad)]
        if recipe.gram is not None:
            callbacks.append(GramTeacherCallback())  # after the EMA update
        dataset = kwargs.pop("train_dataset", None)
        if dataset is not None and not isinstance(dataset, SeededSamples):
            dataset = SeededSamples(dataset, seed=args.seed)
        if dataset is not None:
            callbacks.append(EpochSeedCallback(dataset))
        super().__init__(model=model, args=args, callbacks=callbacks, train_dataset=dataset, **kwargs)
        self.recipe = recipe
        self._momentum = make_schedule(recipe.momentum)
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._nan_streak = 0

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's loader, or with `recipe.resolutions` one whose `MixedResolutionBatchSampler` gives every rank
        its share of each global batch at the resolution drawn for that batch."""
        if self.recipe.resolutions is None:
            return super().get_train_dataloader()
        sampler = MixedResolutionBatchSampler(
            self.train_dataset, self.args.per_device_train_batch_size,
            [r.probability for r in self.recipe.resolutions], seed=self.recipe.resolution_seed,
            world_size=self.args.world_size, rank=self.args.process_index,
        )
        return DataLoader(
            self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
        )

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = [
                group
                for student in self.model.student_modules()
                for group in build_param_groups(
                    student, layer_decay=self.recipe.layer_decay, patch_embed_lr_mult=self.recipe.patch_embed_lr_mult
                )
            ]
            self.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=self.recipe.adamw_betas)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = SSLScheduler(optimizer or self.optimizer, self.recipe)
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, iteration=self.state.global_step)
        loss = outputs["loss"]
        self._guard_nan(loss)
        for name, value in outputs.items():
            self._sums[name] += float(value.detach())
        self._count += 1
        return (loss, outputs) if return_outputs else loss

    def _guard_nan(self, loss: torch.Tensor) -> None:
        if math.isfinite(float(loss.detach())):
            self._nan_streak = 0
            return
        self._nan_streak += 1
        if self._nan_streak > self.recipe.max_consecutive_nan:
            raise FloatingPointError(
                f"The SSL loss was NaN/inf for {self._nan_streak} consecutive steps (last at step "
                f"{self.state.global_step}); stopping. Lower the learning rate, raise the teacher-temperature warmup, "
                "or check the data for corrupt images."
            )

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._count and "loss" in logs:
            logs.update({name: total / self._count for name, total in self._sums.items() if name != "loss"})
            logs["momentum"] = self._momentum(self.state.global_step)
            self._sums.clear()
            self._count = 0
        super().log(logs, *args, **kwargs)

    def save_backbones(self, output_dir: str | Path) -> dict[str, Path]:
        """Save the teacher and student backbones as `from_pretrained` folders (with their image processor), on the
        main process."""
        from ..processing import Dinov3HfImageProcessor

        paths: dict[str, Path] = {}
        if not self.is_world_process_zero():
            return paths
        for role in ("teacher", "student"):
            backbone = getattr(self.model, role)["backbone"]
            path = Path(output_dir) / f"{role}_backbone"
            backbone.save_pretrained(path)
            Dinov3HfImageProcessor.for_model_config(
                backbone.config, size={"height": self.recipe.global_size, "width": self.recipe.global_size}
            ).save_pretrained(path)
            paths[role] = path
        return paths
