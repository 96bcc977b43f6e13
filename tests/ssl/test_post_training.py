"""Gram anchoring (the loss itself: test_gram_loss.py) and high-resolution adaptation on the Trainer."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from scipy.stats import chisquare
from test_pretraining import CONFIGS, REPO, TINY_RECIPE, assert_resumes_exactly, tiny_config
from transformers import AutoModel

from dinov3_hf.ssl.collate import SeededSamples
from dinov3_hf.ssl.config import PretrainConfig
from dinov3_hf.ssl.meta_arch import SSLMetaArch
from dinov3_hf.ssl.pretraining import build_trainer
from dinov3_hf.ssl.resolutions import MixedResolutionBatchSampler, draw_resolution

GRAM = {"weight": {"kind": "half_cosine_ramp", "start_iter": 1, "ramp_iters": 3, "start": 0.0, "end": 2.0},
        "teacher_size": 56, "update_frequency": 2, "first_update": 2, "max_updates": 2}
RESOLUTIONS = [
    {"global_size": 28, "local_size": 12, "gram_size": 56, "probability": 0.5},
    {"global_size": 36, "local_size": 16, "gram_size": 48, "probability": 0.5},
]


def gram_config(tmp_path, resolutions=None, **training):
    config = tiny_config(tmp_path, **training)
    config["recipe"] = {**TINY_RECIPE, "gram": GRAM, "koleo_group_size": 4,
                        "dino_local_weight": {"kind": "constant", "value": 0.5}}
    if resolutions:
        config["recipe"]["resolutions"] = resolutions
    return config


def test_resolution_draws_follow_the_probabilities():
    probabilities = [0.3, 0.3, 0.3, 0.05, 0.05]
    draws = [draw_resolution(probabilities, 65537, g) for g in range(20000)]
    counts = [draws.count(i) for i in range(5)]
    assert chisquare(counts, [p * len(draws) for p in probabilities]).pvalue > 1e-3, counts
    assert draws == [draw_resolution(probabilities, 65537, g) for g in range(20000)]  # a pure function of (seed, g)
    assert draws != [draw_resolution(probabilities, 1, g) for g in range(20000)]


def test_mixed_resolution_batches_agree_across_ranks():
    dataset = SeededSamples(list(range(40)), seed=3)
    probabilities = [0.5, 0.25, 0.25]
    samplers = [MixedResolutionBatchSampler(dataset, 4, probabilities, seed=7, world_size=2, rank=r) for r in (0, 1)]
    assert len(samplers[0]) == 5
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        batches = [list(s) for s in samplers]
        seen = []
        for g, (a, b) in enumerate(zip(*batches)):
            assert {r for _, r in a} == {r for _, r in b} == {draw_resolution(probabilities, 7, epoch * 5 + g)}
            seen += [i for i, _ in a + b]
        assert len(seen) == len(set(seen)) == 40
    with pytest.raises(ValueError, match="fewer than one global batch"):
        MixedResolutionBatchSampler(SeededSamples(list(range(5))), 4, [1.0], world_size=2)


def test_gram_teacher_refresh_cadence():
    recipe = PretrainConfig.from_dict({**TINY_RECIPE, "gram": GRAM})
    model = SSLMetaArch(recipe)
    refreshed = [step for step in range(1, 12) if model.refresh_gram_teacher(step)]
    assert refreshed == [2, 4] and int(model.gram_updates) == 2  # every 2 steps from step 2, at most 2 times
    # from the EMA teacher at a given step, once
    model = SSLMetaArch(PretrainConfig.from_dict({**TINY_RECIPE, "gram": {"teacher_from_ema_at": 3}}))
    with torch.no_grad():
        model.teacher["backbone"].cls_token.add_(1.0)
    assert [step for step in range(1, 8) if model.refresh_gram_teacher(step)] == [3]
    assert torch.equal(model.gram_teacher.cls_token, model.teacher["backbone"].cls_token)


def test_gram_stage_trains_and_logs_every_term(tmp_path):
    trainer = build_trainer(gram_config(tmp_path, max_steps=4, save_steps=100))
    initial_gram_teacher = copy.deepcopy(trainer.model.gram_teacher.state_dict())
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["gram_crops"].shape[-1] == 56 and batch["global_crops"].shape[-1] == 28
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4 and all(entry["gram"] > 0 for entry in logs)
    # refreshed from the EMA teacher after steps 2 and 4: equal to the EMA teacher now
    assert int(trainer.model.gram_updates) == 2
    for key, value in trainer.model.teacher["backbone"].state_dict().items():
        assert torch.equal(trainer.model.gram_teacher.state_dict()[key], value), key
    assert not torch.equal(initial_gram_teacher["cls_token"], trainer.model.gram_teacher.cls_token)


def test_gram_loss_weight_and_local_weight_enter_the_total(tmp_path):
    trainer = build_trainer(gram_config(tmp_path))
    model = trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    n_local = TINY_RECIPE["n_local_crops"]
    for iteration, gram_weight in ((0, 0.0), (2, 1.0), (5, 2.0)):
        torch.manual_seed(0)
        losses = model(**batch, iteration=iteration)
        expected = (0.5 * 2 * n_local / (2 * n_local + 2) * losses["dino_local"] + 2 / (2 * n_local + 2) * losses["dino_global"]
                    + losses["ibot"] + 0.2 * losses["koleo"] + gram_weight * losses["gram"])
        torch.testing.assert_close(losses["loss"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("resolutions", [None, RESOLUTIONS], ids=["gram", "high_res"])
def test_post_training_stages_resume_exactly(tmp_path, resolutions):
    """Interrupted after step 3 and resumed = uninterrupted, Gram teacher and its refresh count included."""
    state = assert_resumes_exactly(
        lambda out, steps: gram_config(out, resolutions, max_steps=steps, save_steps=100), tmp_path
    )
    assert int(state["gram_updates"]) == 2


def test_init_from_and_gram_teacher_from_a_training_checkpoint(tmp_path):
    source = build_trainer(tiny_config(tmp_path / "stage1", max_steps=2, save_steps=2))
    source.train()
    teacher = source.model.teacher.state_dict()
    recipe = {**TINY_RECIPE, "init_from": str(tmp_path / "stage1"),
              "gram": {"teacher_checkpoint": str(tmp_path / "stage1" / "checkpoint-2")}}
    model = SSLMetaArch(PretrainConfig.from_dict(recipe))
    for key, value in teacher.items():
        assert torch.equal(model.student.state_dict()[key], value), key
        assert torch.equal(model.teacher.state_dict()[key], value), key
    for key, value in source.model.teacher["backbone"].state_dict().items():
        assert torch.equal(model.gram_teacher.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError, match="checkpoint-N"):
        SSLMetaArch(PretrainConfig.from_dict({**TINY_RECIPE, "init_from": str(tmp_path / "nothing")}))


def test_recipe_errors_for_post_training():
    with pytest.raises(ValueError, match="summing to 1"):
        PretrainConfig.from_dict({"resolutions": [{"global_size": 32, "local_size": 16, "probability": 0.4}]})
    with pytest.raises(ValueError, match="update_frequency must be >= 1"):
        PretrainConfig.from_dict({"gram": {"update_frequency": 0}})


@pytest.fixture(scope="module")
def fashion_mnist_checkpoint(tmp_path_factory) -> str:
    """A training checkpoint folder with the architecture of training/configs/fashion_mnist_cpu.yaml (random weights)."""
    from safetensors.torch import save_file

    from dinov3_hf.ssl.config import load_yaml_with_overrides

    recipe = load_yaml_with_overrides(CONFIGS / "fashion_mnist_cpu.yaml")["recipe"]
    folder = tmp_path_factory.mktemp("fashion_mnist_run") / "checkpoint-1"
    folder.mkdir()
    model = SSLMetaArch(PretrainConfig.from_dict(recipe))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return str(folder)


@pytest.mark.parametrize(
    "script, config, checkpoint_keys",
    [
        ("gram_anchor.py", "fashion_mnist_gram_cpu.yaml", ["recipe.init_from", "recipe.gram.teacher_checkpoint"]),
        ("hr_adapt.py", "fashion_mnist_hr_cpu.yaml", ["recipe.init_from", "recipe.gram.teacher_checkpoint"]),
        ("distill.py", "fashion_mnist_distill_cpu.yaml", ["recipe.teacher_checkpoint"]),
    ],
)
def test_post_training_recipes_run_from_the_command_line(tmp_path, fashion_mnist_checkpoint, script, config, checkpoint_keys):
    """The CPU recipes of training/ run end to end (2 steps) and save `from_pretrained` backbones."""
    overrides = [f"{key}={fashion_mnist_checkpoint}" for key in checkpoint_keys] + [
        f"training.output_dir={tmp_path}", "training.max_steps=2", "training.per_device_train_batch_size=16",
        "training.dataloader_num_workers=0", "training.disable_tqdm=true", "data.limit=64",
    ]
    result = subprocess.run([sys.executable, str(REPO / "training" / script), "--config", str(CONFIGS / config), *overrides],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = sorted(p.name for p in tmp_path.iterdir() if (p / "config.json").is_file())
    expected = ["convnext_small", "convnext_small_ema", "vit_small", "vit_small_ema"] if script == "distill.py" else [
        "student_backbone", "teacher_backbone"]
    assert saved == expected
    for name in saved:
        AutoModel.from_pretrained(tmp_path / name)
