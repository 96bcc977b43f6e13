"""Multi-student distillation: one teacher forward per batch, students learn, student subgroups
across processes, exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch
from dist_distill_check import HEAD, STUDENTS, TEACHER, global_batch, recipe
from safetensors.torch import save_file
from transformers import AutoModel
from test_pretraining import assert_resumes_exactly

from dinov3_hf import Dinov3HfConvNextModel, Dinov3HfViTModel
from dinov3_hf.ssl.config import DistillationConfig, PretrainConfig
from dinov3_hf.ssl.distillation import DistillationMetaArch
from dinov3_hf.ssl.meta_arch import SSLMetaArch
from dinov3_hf.ssl.pretraining import build_trainer

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> str:
    """A training checkpoint folder whose EMA teacher has sharp prototypes (so its targets are far from uniform)."""
    folder = tmp_path_factory.mktemp("teacher") / "checkpoint-1"
    folder.mkdir()
    torch.manual_seed(0)
    sharp_head = {**HEAD, "last_layer_init_std": 0.5}
    model = SSLMetaArch(PretrainConfig.from_dict({"backbone": TEACHER, "dino_head": sharp_head, "ibot_head": sharp_head}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return str(folder)


def test_teacher_runs_once_per_batch_for_all_students(teacher_checkpoint):
    model = DistillationMetaArch(recipe(teacher_checkpoint, one_student_per_rank=False)).train()
    assert isinstance(model.students["vit"]["backbone"], Dinov3HfViTModel)
    assert isinstance(model.students["convnext"]["backbone"], Dinov3HfConvNextModel)
    assert model.crop_scales == {"vit": 1.0, "convnext": 2.0}
    calls, inputs = [], []
    model.teacher["backbone"].register_forward_hook(lambda module, args, output: calls.append(1))
    model.teacher["backbone"].register_forward_pre_hook(lambda module, args: inputs.append(args[0].shape) and None)
    student_inputs = {}

    def record(name):
        def hook(module, args):
            student_inputs[name] = [x.shape[-1] for x in args[0]]

        return hook

    for name, student in model.students.items():
        student["backbone"].register_forward_pre_hook(record(name))
    batch = {k: v.flatten(0, 1) for k, v in global_batch().items()}
    losses = model(**batch)
    assert len(calls) == 1
    assert inputs[0][-1] == 32  # the teacher sees the crops at its own size (64 / 2)
    assert student_inputs == {"vit": [32, 16], "convnext": [64, 32]}  # each student's grid is the teacher's 2 x 2
    for name in ("vit", "convnext"):
        for term in ("dino_global", "dino_local", "ibot", "koleo", "loss"):
            assert torch.isfinite(losses[f"{name}/{term}"]), (name, term)
    torch.testing.assert_close(losses["loss"], losses["vit/loss"] + losses["convnext/loss"])


def distill_config(tmp_path, teacher_checkpoint, max_steps=30, **training):
    base = recipe(teacher_checkpoint, one_student_per_rank=False)
    return {
        "recipe": {
            "backbone": TEACHER, "dino_head": HEAD, "ibot_head": HEAD, "teacher_checkpoint": teacher_checkpoint,
            "students": STUDENTS, "global_size": base.global_size, "local_size": base.local_size, "n_local_crops": 2,
            "teacher_temp": {"kind": "constant", "value": 0.07}, "layer_decay": 1.0, "freeze_last_layer_iters": 0,
            "lr": {"kind": "warmup_cosine", "warmup_iters": 3, "total_iters": max_steps, "start": 0.0, "peak": 3e-3, "end": 1e-4},
            "momentum": {"kind": "constant", "value": 0.9},
        },
        "data": {"kind": "fashion_mnist", "limit": 256},
        "training": {"output_dir": str(tmp_path), "per_device_train_batch_size": 16, "max_steps": max_steps,
                     "logging_steps": 1, "save_steps": 1000, "use_cpu": True, "seed": 0, "dataloader_num_workers": 0,
                     "disable_tqdm": True, **training},
    }


def test_two_students_learn_from_the_teacher(tmp_path, teacher_checkpoint):
    """A ViT and a ConvNeXt student both lower their loss on real images; their EMA copies are exported."""
    trainer = build_trainer(distill_config(tmp_path, teacher_checkpoint))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["global_crops"].shape[-1] == 64 and batch["masks"].shape[-1] == 4
    teacher_before = {k: v.clone() for k, v in trainer.model.teacher.state_dict().items()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    for name in ("vit", "convnext"):
        curve = [entry[f"{name}/loss"] for entry in logs]
        first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
        assert last < first - 0.05, (name, first, last)
    for key, value in trainer.model.teacher.state_dict().items():
        assert torch.equal(teacher_before[key], value), key  # the teacher is frozen
    paths = trainer.save_backbones(tmp_path / "out")
    assert sorted(paths) == ["convnext", "convnext_ema", "vit", "vit_ema"]
    assert isinstance(AutoModel.from_pretrained(paths["convnext_ema"]), Dinov3HfConvNextModel)


def test_distillation_resumes_exactly(tmp_path, teacher_checkpoint):
    """Distillation resumed from a checkpoint continues the same run: students, EMA copies and optimizer."""
    assert_resumes_exactly(lambda out, steps: distill_config(out, teacher_checkpoint, max_steps=steps), tmp_path,
                           max_steps=4, stop_at=2)


def test_student_subgroups_under_torchrun_match_one_process(tmp_path, teacher_checkpoint):
    """2 gloo ranks, one student each (subgroups of one rank); the teacher is sharded over both ranks and each
    student trains on the gathered global batch: the same losses, gradients and updated parameters as one process.
    The gradients are compared before the AdamW step, whose first update is about lr * sign(gradient) whatever the
    gradient's scale."""
    script = HERE / "dist_distill_check.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, str(script), "single", teacher_checkpoint, str(tmp_path / "single.pt")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", str(script), "ddp", teacher_checkpoint,
                          str(tmp_path / "ddp.pt")], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = torch.load(tmp_path / "single.pt")
    for rank, name in enumerate(("vit", "convnext")):
        part = torch.load(tmp_path / f"ddp.pt.rank{rank}")
        assert {k.split(".")[0] for k in part["students"]} == {name}  # each rank holds only its student
        for key, value in part["losses"].items():
            torch.testing.assert_close(value, one["losses"][key], atol=1e-5, rtol=0, msg=key)
        reference = {k: v for k, v in one["grads"].items() if k.split(".")[0] == name}
        assert sorted(part["grads"]) == sorted(reference) and len(reference) > 10
        for key, value in part["grads"].items():
            torch.testing.assert_close(value, reference[key], atol=1e-7, rtol=1e-4, msg=key)
        for key, value in part["students"].items():
            torch.testing.assert_close(value, one["students"][key], atol=1e-5, rtol=0, msg=key)


def test_distillation_recipe_errors(teacher_checkpoint):
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        DistillationConfig.from_dict({"students": STUDENTS})
    with pytest.raises(ValueError, match="prototypes is 16 but the teacher's is 32"):
        DistillationConfig.from_dict({"dino_head": HEAD, "ibot_head": HEAD, "teacher_checkpoint": teacher_checkpoint,
                                      "students": [dict(STUDENTS[0], dino_head={**HEAD, "prototypes": 16})]})
    bad_ranks = [dict(STUDENTS[0], ranks=[0, 1]), dict(STUDENTS[1], ranks=[0, 2])]
    with pytest.raises(ValueError, match="disjoint"):
        from dinov3_hf.ssl.distillation import student_subgroups

        student_subgroups(DistillationConfig.from_dict({"dino_head": HEAD, "ibot_head": HEAD, "students": bad_ranks,
                                                        "teacher_checkpoint": teacher_checkpoint}).students, 2)


def test_distill_script_with_student_subgroups_under_torchrun(tmp_path, teacher_checkpoint):
    """training/distill.py under torchrun (2 gloo ranks), one student per rank; each subgroup saves its student."""
    config = distill_config(tmp_path / "run", teacher_checkpoint, max_steps=3, per_device_train_batch_size=8)
    config["recipe"]["students"] = [dict(s, ranks=[i, i + 1]) for i, s in enumerate(STUDENTS)]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node", "2", str(HERE.parents[1] / "training" / "distill.py"),
         "--config", str(path)],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name, family in (("vit", Dinov3HfViTModel), ("convnext", Dinov3HfConvNextModel)):
        assert isinstance(AutoModel.from_pretrained(tmp_path / "run" / name), family)
        assert isinstance(AutoModel.from_pretrained(tmp_path / "run" / f"{name}_ema"), family)
