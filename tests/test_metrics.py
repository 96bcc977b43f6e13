"""Task metrics against hand-computed values, and the offline `evaluate` modules giving the same numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dinov3_hf.metrics.functional import (
    METRIC_NAMES,
    accuracy,
    depth_metrics,
    intersect_and_union,
    load_metric,
    mean_iou,
)

# Two images, 4 classes; class 3 never occurs; 255 is ignored.
PRED = [np.array([[0, 0, 1], [1, 2, 2]]), np.array([[2, 2], [0, 1]])]
REF = [np.array([[0, 1, 1], [1, 2, 255]]), np.array([[2, 0], [0, 255]])]
# counted pixels: image 1 (ref, pred): (0,0) (1,0) (1,1) (1,1) (2,2); image 2: (2,2) (0,2) (0,0)
# class 0: intersect 2, pred area 3, ref area 3 -> union 4; class 1: intersect 2, pred 2, ref 3 -> union 3;
# class 2: intersect 2, pred 3, ref 2 -> union 3; class 3: absent (the predictions on ignored pixels do not count)
IOU = [1 / 2, 2 / 3, 2 / 3, math.nan]
ACC = [2 / 3, 2 / 3, 1.0, math.nan]

GT = [np.array([[1.0, 2.0], [4.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 0.0]])]
DEPTH = [np.array([[1.1, 2.0], [3.0, 9.0]]), np.array([[3.8, 1.0], [1.0, 1.0]])]


def image1_depth():
    # valid: (1.1 vs 1), (2 vs 2), (3 vs 4)
    errors = [(1.1, 1.0), (2.0, 2.0), (3.0, 4.0)]
    rmse = math.sqrt(sum((p - g) ** 2 for p, g in errors) / 3)
    abs_rel = sum(abs(p - g) / g for p, g in errors) / 3
    return rmse, abs_rel


def test_accuracy_by_hand():
    assert accuracy([0, 1, 1, 2], [0, 1, 0, 0]) == pytest.approx(0.5)
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert accuracy(scores, [2, 0, 1]) == pytest.approx(1 / 3)
    assert accuracy(scores, [2, 0, 1], top_k=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        accuracy([0, 1, 1], [0, 1])


def test_mean_iou_by_hand():
    result = mean_iou(PRED, REF, num_labels=4)
    np.testing.assert_allclose(result["per_category_iou"].numpy(), IOU)
    np.testing.assert_allclose(result["per_category_accuracy"].numpy(), ACC)
    assert result["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert result["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert result["overall_accuracy"] == pytest.approx(6 / 8)
    # a batch tensor gives the same as the list
    same = mean_iou(torch.tensor(np.stack([PRED[0], PRED[0]])), torch.tensor(np.stack([REF[0], REF[0]])), 4)
    single = mean_iou(PRED[0], REF[0], 4)
    assert same["mean_iou"] == pytest.approx(single["mean_iou"])


def test_mean_iou_counts_reduce_labels_and_errors():
    intersect, union, area_pred, area_ref = intersect_and_union(PRED[0], REF[0], 4)
    assert intersect.tolist() == [1, 2, 1, 0] and union.tolist() == [2, 3, 1, 0]
    assert area_pred.tolist() == [2, 2, 1, 0] and area_ref.tolist() == [1, 3, 1, 0]
    # reduce_labels: reference 0 -> ignored, k -> k - 1
    result = mean_iou([np.array([[0, 1]])], [np.array([[1, 0]])], num_labels=2, reduce_labels=True)
    np.testing.assert_allclose(result["per_category_iou"].numpy(), [1.0, math.nan])
    assert math.isnan(mean_iou([np.array([[0]])], [np.array([[255]])], num_labels=2)["mean_iou"])
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        mean_iou([PRED[0]], [REF[1]], num_labels=4)
    with pytest.raises(ValueError, match="num_labels=2"):
        mean_iou([np.array([[0, 5]])], [np.array([[0, 1]])], num_labels=2)


def test_depth_metrics_by_hand():
    result = depth_metrics(DEPTH, GT)
    rmse1, abs_rel1 = image1_depth()
    rmse2, abs_rel2 = 1.8, 0.9  # image 2: the single valid pixel, 3.8 vs 2
    assert result["num_images"] == 2
    assert result["rmse"] == pytest.approx((rmse1 + rmse2) / 2)
    assert result["abs_rel"] == pytest.approx((abs_rel1 + abs_rel2) / 2)
    # image 1: ratios 1.1, 1, 4/3 -> 2 of 3 under 1.25, 3 of 3 under 1.5625; image 2: ratio 1.9 -> only delta3 (1.953)
    assert result["delta1"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["delta2"] == pytest.approx((1 + 0) / 2)
    assert result["delta3"] == pytest.approx((1 + 1) / 2)
    clamped = depth_metrics(DEPTH, GT, max_depth=3.0)  # drops gt 4; clamps the prediction 3.8 to 3 (error 1)
    assert clamped["rmse"] == pytest.approx(((0.01 / 2) ** 0.5 + 1.0) / 2)
    empty = depth_metrics([np.ones((2, 2))], [np.zeros((2, 2))])
    assert empty["num_images"] == 0 and math.isnan(empty["rmse"])


def test_evaluate_modules_give_the_same_numbers():
    assert set(METRIC_NAMES) == {"accuracy", "mean_iou", "depth"}
    assert load_metric("accuracy").compute(predictions=[0, 1, 1, 2], references=[0, 1, 0, 0]) == {"accuracy": 0.5}

    via_evaluate = load_metric("mean_iou").compute(predictions=PRED, references=REF, num_labels=4, ignore_index=255)
    direct = mean_iou(PRED, REF, num_labels=4)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert via_evaluate[key] == pytest.approx(direct[key])
    np.testing.assert_allclose(via_evaluate["per_category_iou"], IOU)

    via_evaluate = load_metric("depth").compute(predictions=DEPTH, references=GT)
    direct = depth_metrics(DEPTH, GT)
    for key in ("rmse", "abs_rel", "delta1", "delta2", "delta3"):
        assert via_evaluate[key] == pytest.approx(direct[key], rel=1e-6)  # float32 storage in evaluate

    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("f1")


def test_linear_probe_accuracy_separable_and_chance():
    from dinov3_hf.metrics import linear_probe_accuracy

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 4
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 16, generator=generator)
    # well separated classes: every test point classified correctly
    assert linear_probe_accuracy(features[:300], labels[:300], features[300:], labels[300:]) == 1.0
    # labels unrelated to the features: about chance (0.25) on held-out points
    shuffled = labels[torch.randperm(400, generator=generator)]
    noise = torch.randn(400, 16, generator=generator)
    assert linear_probe_accuracy(noise[:300], shuffled[:300], noise[300:], shuffled[300:]) < 0.45


def test_pixel_features_flatten_images():
    from PIL import Image

    from dinov3_hf.metrics import pixel_features

    images = [Image.fromarray(np.full((2, 3), value, dtype=np.uint8)) for value in (0, 7)]
    features = pixel_features(images)
    assert features.shape == (2, 6) and features.dtype == torch.float32
    assert torch.equal(features[1], torch.full((6,), 7.0))


def test_feature_readouts_against_the_token_outputs():
    """extract_features: "cls" is the normed CLS token, "patch_mean" the mean of the tokens after the CLS and the
    registers, "cls+patch_mean" the two unit-normed side by side; batching changes nothing; unknown readouts fail."""
    from dinov3_hf import Dinov3HfViTConfig, Dinov3HfViTModel
    from dinov3_hf.metrics import extract_cls_features, extract_features

    torch.manual_seed(0)
    config = Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                                           patch_size=8, num_register_tokens=2)
    model = Dinov3HfViTModel(config).eval()
    pixels = torch.randn(5, 3, 24, 16)
    images = list(range(5))  # stand-ins: the transform indexes the pixel batch

    def transform(batch):
        return pixels[list(batch)]

    with torch.no_grad():
        tokens = model(pixels).last_hidden_state
    cls, patch_mean = tokens[:, 0], tokens[:, 3:].mean(dim=1)
    assert torch.allclose(extract_features(model, images, transform, "cls", batch_size=2), cls, atol=1e-6)
    assert torch.equal(extract_cls_features(model, images, transform), extract_features(model, images, transform))
    assert torch.allclose(extract_features(model, images, transform, "patch_mean", batch_size=3), patch_mean, atol=1e-6)
    both = extract_features(model, images, transform, "cls+patch_mean")
    expected = torch.cat([cls / cls.norm(dim=-1, keepdim=True), patch_mean / patch_mean.norm(dim=-1, keepdim=True)], 1)
    assert both.shape == (5, 64) and torch.allclose(both, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"readout must be one of \('cls', 'patch_mean', 'cls\+patch_mean'\)"):
        extract_features(model, images, transform, "mean")

    class NoPatchTokens(torch.nn.Module):  # e.g. transformers' DINOv3ViTModel: pooler_output only
        def forward(self, pixel_values):
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            return BaseModelOutputWithPooling(pooler_output=pixel_values.flatten(1))

    assert torch.equal(extract_features(NoPatchTokens(), images, transform), pixels.flatten(1))
    with pytest.raises(ValueError, match="needs a model whose output has patch_tokens.*Use readout='cls'"):
        extract_features(NoPatchTokens(), images, transform, "patch_mean")


def test_eval_knn_script_reports_model_and_pixel_baselines(capsys, tmp_path):
    """training/eval_knn.py: kNN and linear probe of the shipped model, random init, raw and mean-centred pixels; the
    pixel rows equal a direct computation."""
    import importlib.util
    import json
    from pathlib import Path

    from dinov3_hf.data import load_fashion_mnist
    from dinov3_hf.metrics import knn_accuracy, pixel_features

    path = Path(__file__).parents[1] / "training" / "eval_knn.py"
    spec = importlib.util.spec_from_file_location("eval_knn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--bank", "300", "--queries", "100", "--json", str(tmp_path / "r.json")])
    patch_mean = module.main(["--bank", "300", "--queries", "100", "--readout", "patch_mean"])
    assert patch_mean["raw pixels"] == results["raw pixels"]  # the readout changes the model rows only
    assert patch_mean["trained"] != results["trained"]
    assert set(results) == {"trained", "random init", "raw pixels", "mean-centred pixels"}
    bank, queries = load_fashion_mnist("train", limit=300, offset=50000), load_fashion_mnist("test", limit=100)
    bank_x, query_x = pixel_features(bank["image"]), pixel_features(queries["image"])
    mean = bank_x.mean(0)
    labels = torch.tensor(bank["label"]), torch.tensor(queries["label"])
    assert results["raw pixels"]["knn"] == knn_accuracy(bank_x, labels[0], query_x, labels[1])
    assert results["mean-centred pixels"]["knn"] == knn_accuracy(bank_x - mean, labels[0], query_x - mean, labels[1])
    assert json.loads((tmp_path / "r.json").read_text())["results"] == results
    assert "kNN gain over random init" in capsys.readouterr().out
