"""Every script in examples/ runs end to end in its --smoke configuration on a tiny random backbone."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *args: str) -> dict:
    return load_example(name).main(["--smoke", "--backbone", "random", *args])


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


def read_metrics(path: Path) -> dict:
    metrics = json.loads((path / "metrics.json").read_text())
    assert all(math.isfinite(value) for value in metrics.values() if isinstance(value, float)), metrics
    return metrics


def test_train_detector(tmp_path):
    returned = run_example("train_detector", "--output-dir", str(tmp_path))
    metrics = read_metrics(tmp_path)
    assert metrics == returned
    assert all(0.0 <= metrics[key] <= 1.0 for key in ("map", "map_50", "map_75")), metrics
    assert (tmp_path / "model" / "config.json").is_file()


def test_train_detector_lora_layer_decay(tmp_path):
    """Frozen by default (only the new pyramid and the detector train); --lora adds trainable adapters."""
    frozen = run_example("train_detector")
    lora = run_example("train_detector", "--lora", "--layer-decay", "0.5", "--output-dir", str(tmp_path))
    assert all(0.0 <= lora[key] <= 1.0 for key in ("map", "map_50", "map_75")), lora
    assert 0.0 < frozen["trainable_fraction"] < lora["trainable_fraction"] < 1.0


def test_train_universal_segmentation(tmp_path):
    run_example("train_universal_segmentation", "--output-dir", str(tmp_path))
    metrics = read_metrics(tmp_path)
    for key in ("pq", "sq", "rq", "mean_iou", "pixel_accuracy", "mask_map", "mask_map_50", "mask_map_75"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert set(metrics["per_class_iou"]) == {"background", "quokka", "horse", "coin"}
    assert 0.0 < metrics["trainable_fraction"] < 1.0
    assert (tmp_path / "model" / "config.json").is_file()


def test_detector_and_segmenter_collates_give_the_exact_labels():
    """RT-DETR gets each box as (cx, cy, w, h) over the image size; Mask2Former gets segments that tile the image
    (background, then the objects) with the classes of the semantic map."""
    from dinov3_hf.data.pasted_objects import make_pasted_objects
    from dinov3_hf.pretrained_models import load_backbone

    records = make_pasted_objects(3, image_size=32, seed=5)
    _, processor = load_backbone("random")
    detection = load_example("train_detector").collate_fn(processor, 32)(records)
    assert detection["pixel_values"].shape == (3, 3, 32, 32)
    for record, target in zip(records, detection["labels"]):
        cx, cy, w, h = (target["boxes"] * 32).unbind(-1)
        torch.testing.assert_close(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1), record.boxes)
        assert torch.equal(target["class_labels"], record.labels)
    segmentation = load_example("train_universal_segmentation").collate_fn(processor, 32)(records)
    for record, masks, classes in zip(records, segmentation["mask_labels"], segmentation["class_labels"]):
        assert torch.equal(masks.sum(0), torch.ones(32, 32))  # every pixel in exactly one segment
        assert torch.equal((masks * classes[:, None, None]).sum(0).long(), record.semantic)
