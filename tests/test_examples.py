"""Every script in examples/ runs end to end in its --smoke configuration on a tiny random backbone."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path



EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--smoke", "--backbone", "random", *args])


def test_examples_readme_lists_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    for script in sorted(EXAMPLES.glob("*.py")):
        assert f"examples/{script.name}" in readme, script.name


def test_finetune_classifier(tmp_path):
    metrics = run_example("finetune_classifier", "--output-dir", str(tmp_path))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["num_classes"] == 5
    assert (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "model" / "preprocessor_config.json").is_file()


def test_train_segmentation_probe(tmp_path):
    metrics = run_example("train_segmentation_probe", "--output-dir", str(tmp_path))
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and 0.0 <= metrics["overall_accuracy"] <= 1.0
    assert (tmp_path / "config.json").is_file()


def test_train_depth_probe(tmp_path):
    metrics = run_example("train_depth_probe", "--output-dir", str(tmp_path))
    assert all(math.isfinite(metrics[key]) for key in ("rmse", "abs_rel", "delta1", "baseline_rmse"))
    assert (tmp_path / "motorcycle_predicted_depth.png").is_file()


def test_lora_finetune(tmp_path):
    metrics = run_example("lora_finetune", "--output-dir", str(tmp_path))
    assert metrics["merged_max_diff"] <= 1e-5 and metrics["reloaded_adapter_max_diff"] <= 1e-5
    assert 0 < metrics["trainable_fraction"] < 1
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_knn_linear_probe_eval():
    metrics = run_example("knn_linear_probe_eval")
    assert 0.0 <= metrics["knn_accuracy"] <= 1.0 and 0.0 <= metrics["linear_probe_accuracy"] <= 1.0


def test_segmentation_probe_on_shipped_model_beats_random_init():
    """On held-out texture mosaics the linear probe on the shipped checkpoint beats a random-init backbone."""
    spec = importlib.util.spec_from_file_location("example_seg_full", EXAMPLES / "train_segmentation_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(["--baseline-random"])  # default settings, default (shipped) backbone
    assert metrics["mean_iou"] > metrics["random_init_mean_iou"] + 0.03, metrics
