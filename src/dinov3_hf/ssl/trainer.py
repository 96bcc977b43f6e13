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
from transformers.trainer_callback import ExportableState, ProgressCallback
from transformers.utils import logging

from .collate import SeededSamples, UnreadableImagesError
from .meta_arch import SSLMetaArch
from .param_groups import apply_schedules, build_param_groups
from .resolutions import MixedResolutionBatchSampler
from .schedules import make_schedule


logger = logging.get_logger(__name__)

# the diagnostics shown on the progress bar (all of them are in the log history)
PROGRESS_BAR_KEYS = ("dino_entropy_fraction", "dino_prototypes_used", "ibot_entropy_fraction", "cls_std")
UNIFORM_TARGETS_FRACTION = 0.98
MAX_UNREADABLE_FRACTION = 0.01  # default of data.max_unreadable_fraction


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
    """θ_ema <- m(step)·θ_ema + (1 - m(step))·θ_student after each optimizer step (`model.update_ema`); the heads only
    during the head warm-up (the first `recipe.freeze_backbone_iters` steps)."""

    def __init__(self, recipe):
        self.momentum = make_schedule(recipe.momentum)
        self.freeze_backbone_iters = recipe.freeze_backbone_iters

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step < self.freeze_backbone_iters:
            model.update_ema(self.momentum(state.global_step), backbone=False)
        else:
            model.update_ema(self.momentum(state.global_step))


class HeadWarmupCallback(TrainerCallback):
    """Head warm-up: before each of the first `iters` optimizer steps the student backbones' gradients are dropped
    (set to None), so AdamW skips those parameters (no update, no weight decay, no moment state) and they stay
    bit-identical while the heads learn. The gradients are still computed, since DDP reduces every parameter's."""

    def __init__(self, iters: int):
        self.iters = iters

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step < self.iters:
            for student in model.student_modules():
                for param in student["backbone"].parameters():
                    param.grad = None


class UnreadableImagesCallback(TrainerCallback, ExportableState):
    """Counts the images the collator skipped as unreadable (each batch's `skipped_images`, summed over processes):
    `total` over the run (logged as `skipped_images`) and `in_epoch` in the current epoch.

    Training stops with `UnreadableImagesError` once in_epoch > max_fraction × dataset_size: an epoch reads every
    image once, so this fires, within the first epoch, exactly when more than that share of the dataset is
    unreadable. The counts are saved in checkpoints (trainer_state.json) and restored on resume.
    """

    def __init__(self, dataset_size: int, max_fraction: float):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"data.max_unreadable_fraction must be in [0, 1], got {max_fraction}.")
        self.dataset_size, self.max_fraction = dataset_size, max_fraction
        self.total = self.epoch = self.in_epoch = 0

    def state(self) -> dict:
        return {
            "args": {"dataset_size": self.dataset_size, "max_fraction": self.max_fraction},
            "attributes": {"total": self.total, "epoch": self.epoch, "in_epoch": self.in_epoch},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        for name, value in state.stateful_callbacks.get(type(self).__name__, {}).get("attributes", {}).items():
            setattr(self, name, value)

    def add(self, skipped: int, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.in_epoch = epoch, 0
        self.total += skipped
        self.in_epoch += skipped
        if self.in_epoch > self.max_fraction * self.dataset_size:
            raise UnreadableImagesError(
                f"{self.in_epoch} of the {self.dataset_size} images of the dataset were unreadable in epoch {epoch} "
                f"({self.in_epoch / self.dataset_size:.2%}), more than data.max_unreadable_fraction = {self.max_fraction}. "
                "Fix or remove the files (each one is logged as a warning), or raise data.max_unreadable_fraction."
            )


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
    `max_grad_norm=0` in its arguments. Images the collator skips as unreadable are counted (`UnreadableImagesCallback`,
    at most `max_unreadable_fraction` of the dataset per epoch)."""

    def __init__(self, model: SSLMetaArch, args, *, max_unreadable_fraction: float = MAX_UNREADABLE_FRACTION, **kwargs):
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
        if recipe.freeze_backbone_iters:
            callbacks.append(HeadWarmupCallback(recipe.freeze_backbone_iters))
        dataset = kwargs.pop("train_dataset", None)
        if dataset is not None and not isinstance(dataset, SeededSamples):
            dataset = SeededSamples(dataset, seed=args.seed)
        if dataset is not None:
            if len(dataset) == 0:
                raise ValueError("The training dataset has no images; check the data section of the config.")
            callbacks += [EpochSeedCallback(dataset), UnreadableImagesCallback(len(dataset), max_unreadable_fraction)]
        super().__init__(model=model, args=args, callbacks=callbacks, train_dataset=dataset, **kwargs)
        self.recipe = recipe
        self._momentum = make_schedule(recipe.momentum)
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._nan_streak = 0
        self._warned_uniform_targets = False

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

    @property
    def unreadable_images(self) -> UnreadableImagesCallback:
        """The counter of unreadable images (looked up, as the Trainer may replace callbacks restored from a checkpoint)."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, UnreadableImagesCallback))

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """Count the batch's unreadable images (`skipped_images` from the collator, summed over processes), then step."""
        skipped = torch.as_tensor(inputs.pop("skipped_images", 0), device=self.args.device)
        self.unreadable_images.add(int(self.accelerator.reduce(skipped, "sum")), epoch=int(self.state.epoch + 1e-6))
        return super().training_step(model, inputs, num_items_in_batch)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = [
                group
                for student in self.model.student_modules()
                for group in build_param_groups(
                    student, layer_decay=self.recipe.layer_decay, patch_embed_lr_mult=self.recipe.patch_embed_lr_mult,
                    head_lr_multiplier=self.recipe.head_lr_multiplier,
                    last_layer_wd_multiplier=self.recipe.last_layer_wd_multiplier,
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
            self._sums[name] += float(value.detach() if isinstance(value, torch.Tensor) else value)
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
            logs["skipped_images"] = self.unreadable_images.total  # over the run
            self._sums.clear()
            self._count = 0
            self._report_diagnostics(logs)
        super().log(logs, *args, **kwargs)

    def _report_diagnostics(self, logs: dict[str, float]) -> None:
        """Show the target diagnostics on the progress bar, and warn once when the DINO targets are still nearly
        uniform (entropy > `UNIFORM_TARGETS_FRACTION`·ln K) after `recipe.uniform_targets_warning_after` of the run."""
        shown = {key: logs[key] for key in PROGRESS_BAR_KEYS if key in logs}
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback) and callback.training_bar is not None and shown:
                callback.training_bar.set_postfix({key: f"{value:.3g}" for key, value in shown.items()}, refresh=False)
        fraction = logs.get("dino_entropy_fraction")
        after = self.recipe.uniform_targets_warning_after
        if (
            fraction is not None and fraction > UNIFORM_TARGETS_FRACTION and not self._warned_uniform_targets
            and after is not None and self.state.global_step >= after * self.state.max_steps
        ):
            self._warned_uniform_targets = True
            logger.warning(
                f"After {self.state.global_step} of {self.state.max_steps} steps the DINO teacher targets are still "
                f"nearly uniform (entropy {fraction:.3f}·ln K, prototype score std {logs.get('dino_logit_std', 0):.3g} "
                f"across samples): DINO and iBOT teach little. For small data and short runs try "
                "recipe.dino_head.normalize_prototypes=true (and the same for ibot_head), fewer prototypes, or a lower "
                "teacher temperature; see the diagnostics with training/plot_diagnostics.py."
            )

    def save_backbones(self, output_dir: str | Path) -> dict[str, Path]:
        """Save the teacher and student backbones as `from_pretrained` folders (with their image processor), on the
        main process. Under FSDP the parameters are shards, so every process first takes part in gathering the full
        state dict (`accelerator.get_state_dict`), which the main process then writes."""
        from ..processing import Dinov3HfImageProcessor

        full_state = self.accelerator.get_state_dict(self.model) if self.is_fsdp_enabled else None
        paths: dict[str, Path] = {}
        if not self.is_world_process_zero():
            return paths
        for role in ("teacher", "student"):
            backbone = getattr(self.model, role)["backbone"]
            path = Path(output_dir) / f"{role}_backbone"
            prefix = f"{role}.backbone."
            state = None if full_state is None else {
                key[len(prefix):]: value for key, value in full_state.items() if key.startswith(prefix)
            }
            backbone.save_pretrained(path, state_dict=state)
            Dinov3HfImageProcessor.for_model_config(
                backbone.config, size={"height": self.recipe.global_size, "width": self.recipe.global_size}
            ).save_pretrained(path)
            paths[role] = path
        return paths
