"""Pretraining on the Trainer: a run logs every term, resumes exactly, learns, exports; the 7B recipe's sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel, TrainerCallback

from dinov3_hf import Dinov3HfViTModel
from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.ssl.config import DistillationConfig, PretrainConfig, load_yaml_with_overrides
from dinov3_hf.ssl.meta_arch import SSLMetaArch
from dinov3_hf.ssl.pretraining import build_trainer, run_training

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "training" / "configs"
# kNN gain of the full objective over KoLeo alone that test_dino_and_ibot_learn_beyond_koleo requires (measured: +5.9
# and +5.4 points on seeds 0 and 1, where each arm varied by about 2 points between the seeds)
KOLEO_MARGIN = 0.03

TINY_RECIPE = {
    "backbone": {"preset": "vits16", "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "drop_path_rate": 0.1},
    "dino_head": {"prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    "ibot_head": {"prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    "global_size": 28, "local_size": 12, "n_local_crops": 2, "freeze_last_layer_iters": 2,
    "teacher_temp": {"kind": "warmup_constant", "warmup_iters": 3, "start": 0.04, "peak": 0.07},
    "lr": {"kind": "warmup_cosine", "warmup_iters": 2, "total_iters": 6, "start": 0.0, "peak": 1e-3, "end": 1e-5},
    "momentum": {"kind": "warmup_cosine", "warmup_iters": 0, "total_iters": 6, "start": 0.9, "peak": 0.9, "end": 1.0},
}


def tiny_config(tmp_path, max_steps=6, **training):
    return {
        "recipe": TINY_RECIPE,
        "data": {"kind": "fashion_mnist", "limit": 64},
        "training": {"output_dir": str(tmp_path), "per_device_train_batch_size": 8, "max_steps": max_steps,
                     "logging_steps": 1, "save_steps": 3, "use_cpu": True, "seed": 0, "dataloader_num_workers": 0,
                     "disable_tqdm": True, **training},
    }


def write_config(tmp_path, config) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_logs_every_term_and_exports_backbones(tmp_path):
    trainer = run_training(write_config(tmp_path, tiny_config(tmp_path / "run")))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 6
    for key in ("loss", "dino_global", "dino_local", "ibot", "koleo", "teacher_temp", "momentum", "learning_rate"):
        assert all(key in entry and entry[key] == entry[key] for entry in logs), key
    assert logs[0]["teacher_temp"] == pytest.approx(0.04) and logs[-1]["teacher_temp"] == pytest.approx(0.07)
    teacher = AutoModel.from_pretrained(tmp_path / "run" / "teacher_backbone")
    assert isinstance(teacher, Dinov3HfViTModel)
    for key, value in trainer.model.teacher["backbone"].state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key


def test_last_layer_frozen_then_trained(tmp_path):
    trainer = build_trainer(tiny_config(tmp_path, max_steps=4, save_steps=100))
    before = trainer.model.student["dino_head"].last_layer.weight.detach().clone()
    trainer.train()
    # lr is 0 for the last layer during the first 2 steps, then it moves
    assert not torch.equal(before, trainer.model.student["dino_head"].last_layer.weight)
    groups = trainer.optimizer.param_groups
    assert any(g["is_last_layer"] for g in groups)


class StopAfter(TrainerCallback):
    """Simulates an interruption: training stops after `step` optimizer steps (a checkpoint is saved then)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = control.should_training_stop = True


def assert_resumes_exactly(make_config, tmp_path, max_steps: int = 6, stop_at: int = 3) -> dict:
    """A run interrupted after `stop_at` steps and resumed from its checkpoint ends within 1e-6 of the
    uninterrupted run, every tensor of the model state included. `make_config(output_dir, max_steps)` builds the
    config. Returns the uninterrupted run's final state."""
    full = build_trainer(make_config(tmp_path / "full", max_steps))
    full.train()
    interrupted = build_trainer(make_config(tmp_path / "part", max_steps))
    interrupted.add_callback(StopAfter(stop_at))
    interrupted.train()
    assert interrupted.state.global_step == stop_at
    resumed = build_trainer(make_config(tmp_path / "part", max_steps))
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / f"checkpoint-{stop_at}"))
    assert resumed.state.global_step == max_steps
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert any(not torch.equal(value, interrupted.model.state_dict()[key]) for key, value in full_state.items())
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, atol=1e-6, rtol=0, msg=key)
    return full_state


def test_resume_continues_the_same_run(tmp_path):
    assert_resumes_exactly(lambda out, steps: tiny_config(out, max_steps=steps, save_steps=100), tmp_path)


def test_nan_guard_stops_with_a_clear_message(tmp_path):
    trainer = build_trainer(tiny_config(tmp_path, max_steps=5, save_steps=100))
    with torch.no_grad():
        trainer.model.student["backbone"].cls_token.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN/inf for 3 consecutive steps"):
        trainer.train()


def test_official_7b_recipe_on_meta_device():
    config = load_yaml_with_overrides(CONFIGS / "vit7b16_stage1.yaml")
    recipe = PretrainConfig.from_dict(config["recipe"])
    with torch.device("meta"):
        model = SSLMetaArch(recipe)
    backbone = model.student["backbone"]
    assert sum(p.numel() for p in backbone.parameters()) == 6_716_043_264
    dino, ibot = model.student["dino_head"], model.student["ibot_head"]
    assert dino.last_layer.weight.shape == (262144, 512) and ibot.last_layer.weight.shape == (98304, 384)
    assert dino.mlp[0].weight.shape == (8192, 4096) and ibot.mlp[0].weight.shape == (4096, 4096)
    assert recipe.global_size == 256 and recipe.local_size == 112 and recipe.clip_grad == 30.0


def test_every_shipped_config_builds():
    """Every SSL recipe in training/configs parses (dino.txt configs are checked with the dino.txt tests)."""
    paths = [path for path in sorted(CONFIGS.glob("*.yaml")) if not path.name.startswith("dinotxt")]
    assert len(paths) >= 10
    for path in paths:
        config = load_yaml_with_overrides(path)
        recipe_class = DistillationConfig if "students" in config["recipe"] else PretrainConfig
        recipe_class.from_dict(config["recipe"])
        assert set(config) <= {"recipe", "data", "training"}, path.name


def test_config_errors():
    with pytest.raises(ValueError, match="Unknown recipe keys: colour"):
        PretrainConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="not of the form key=value"):
        load_yaml_with_overrides(CONFIGS / "fashion_mnist_cpu.yaml", ["recipe.lr"])


def test_two_process_step_equals_one_process(tmp_path):
    """DDP over 2 gloo ranks gives the losses and updated parameters of one process on the same global batch."""
    script = Path(__file__).parent / "dist_pretrain_check.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, str(script), "single", str(tmp_path / "single.pt")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", str(script), "ddp", str(tmp_path / "ddp.pt")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "ddp.pt")
    for name, value in a["losses"].items():
        torch.testing.assert_close(b["losses"][name], value, atol=1e-5, rtol=0, msg=name)
    for name, value in a["grads"].items():
        torch.testing.assert_close(b["grads"][name], value, atol=1e-5, rtol=0, msg=name)
    for name, value in a["student"].items():
        torch.testing.assert_close(b["student"][name], value, atol=1e-5, rtol=0, msg=name)


# Budget of test_dino_and_ibot_learn_beyond_koleo: the small Fashion-MNIST recipe for 300 steps of 128 images, with a
# teacher temperature low enough that the DINO targets sharpen within that budget
LEARNING_TEST_OVERRIDES = ["training.per_device_train_batch_size=128", "training.max_steps=300",
                           "recipe.lr.total_iters=300", "recipe.momentum.total_iters=300",
                           "recipe.teacher_temp={kind: constant, value: 0.025}"]


def small_run_knn(tmp_path, overrides: list[str]) -> tuple[float, dict]:
    """kNN accuracy of the EMA teacher after the small Fashion-MNIST recipe (fashion_mnist_small_cpu.yaml) with
    `overrides`, on 5,000 held-out training images / 2,000 test images, and the last log entry."""
    from dinov3_hf.metrics import knn_eval_on_dataset
    from dinov3_hf.processing import Dinov3HfImageProcessor

    config = load_yaml_with_overrides(CONFIGS / "fashion_mnist_small_cpu.yaml",
                                      [f"training.output_dir={tmp_path}", "training.disable_tqdm=true", *overrides])
    trainer = build_trainer(config)
    trainer.train()
    teacher = trainer.model.teacher["backbone"]
    processor = Dinov3HfImageProcessor.for_model_config(teacher.config, size={"height": 28, "width": 28})
    bank = load_fashion_mnist("train", limit=5000, offset=50000)  # never seen in training (limit 20000)
    queries = load_fashion_mnist("test", limit=2000)
    logs = [entry for entry in trainer.state.log_history if "dino_entropy_fraction" in entry]
    return knn_eval_on_dataset(teacher, processor, bank, queries), logs[-1]


def test_dino_and_ibot_learn_beyond_koleo(tmp_path):
    """On the same budget the full objective (DINO + iBOT + KoLeo) beats KoLeo alone by a wide margin, and the DINO
    targets end well below uniform (entropy < 0.9·ln K): the learning comes through DINO and iBOT."""
    full, full_log = small_run_knn(tmp_path / "full", LEARNING_TEST_OVERRIDES)
    koleo, _ = small_run_knn(tmp_path / "koleo", [*LEARNING_TEST_OVERRIDES, "recipe.dino_loss_weight=0",
                                                   "recipe.ibot_loss_weight=0"])
    assert full_log["dino_entropy_fraction"] < 0.9, full_log
    assert full >= koleo + KOLEO_MARGIN, (full, koleo)


def test_pretrain_script_under_torchrun(tmp_path):
    """training/pretrain.py runs under `torchrun --nproc_per_node 2` (DDP over gloo) and exports the backbones."""
    config = tiny_config(tmp_path / "run", max_steps=2, save_steps=100)
    config["training"]["ddp_backend"] = "gloo"
    path = write_config(tmp_path, config)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", str(REPO / "training" / "pretrain.py"),
                             "--config", str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert isinstance(AutoModel.from_pretrained(tmp_path / "run" / "teacher_backbone"), Dinov3HfViTModel)
    assert (tmp_path / "run" / "student_backbone" / "preprocessor_config.json").is_file()


def test_shipped_default_model():
    """The package ships a trained backbone (≤ 25 MB) that loads with from_pretrained, and its CLS features are
    trained: kNN (k=20) on held-out Fashion-MNIST beats the same architecture at random initialisation by 15 points
    (measured on this 500 / 250 split: 0.732 against 0.372 to 0.380 for seeds 0 to 2)."""
    from dinov3_hf.metrics import extract_cls_features, knn_accuracy
    from dinov3_hf.pretrained_models import default_model_path
    from dinov3_hf.processing import Dinov3HfImageProcessor

    path = default_model_path()
    assert (path / "model.safetensors").stat().st_size <= 25 * 1024**2
    model = AutoModel.from_pretrained(path)
    assert isinstance(model, Dinov3HfViTModel) and model.config.image_size == 28
    torch.manual_seed(0)
    untrained = Dinov3HfViTModel(model.config)
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 28, "width": 28})
    bank, queries = load_fashion_mnist("train", limit=500, offset=50000), load_fashion_mnist("test", limit=250)
    labels = torch.tensor(bank["label"]), torch.tensor(queries["label"])

    def accuracy(backbone) -> float:
        transform = lambda images: processor(list(images), return_tensors="pt")["pixel_values"]  # noqa: E731
        features = [extract_cls_features(backbone, split["image"], transform) for split in (bank, queries)]
        return knn_accuracy(features[0], labels[0], features[1], labels[1], k=20)

    trained, random_init = accuracy(model), accuracy(untrained)
    assert trained >= random_init + 0.15, (trained, random_init)
