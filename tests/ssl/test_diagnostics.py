"""Training diagnostics: the formulas against hand computation, their wiring into the SSL forward and the Trainer's
log history, the uniform-targets warning and the plot."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from test_pretraining import tiny_config, write_config

from dinov3_hf.ssl.diagnostics import feature_std, target_diagnostics
from dinov3_hf.ssl.losses.sinkhorn import sinkhorn_knopp
from dinov3_hf.ssl.pretraining import build_trainer, plot_main, read_log_history, run_training

DIAGNOSTIC_KEYS = [f"{head}_{name}" for head in ("dino", "ibot")
                   for name in ("entropy", "entropy_fraction", "prototypes_used", "logit_std", "agreement")] + ["cls_std"]


def test_target_diagnostics_by_hand():
    targets = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    logits = torch.tensor([[1.0, 0.0, 2.0, 0.0], [3.0, 0.0, 0.0, 0.0], [2.0, 3.0, 1.0, 0.0]])
    student = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # paired with the first two rows
    got = target_diagnostics(logits, targets, student)
    entropy = (math.log(2) + 0.0 - (0.1 * math.log(0.1) + 0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.4 * math.log(0.4))) / 3
    assert got["entropy"] == pytest.approx(entropy, rel=1e-6)
    assert got["entropy_fraction"] == pytest.approx(entropy / math.log(4), rel=1e-6)
    # argmax rows: 0 (first of a tie), 0, 3 -> prototypes {0, 3}
    assert got["prototypes_used"] == 2
    # per-prototype std over the 3 samples (unbiased), averaged over the 4 prototypes
    stds = [np.std([1, 3, 2], ddof=1), np.std([0, 0, 3], ddof=1), np.std([2, 0, 1], ddof=1), 0.0]
    assert got["logit_std"] == pytest.approx(np.mean(stds), rel=1e-6)
    # student argmax 1 vs target 0, student 3 vs target 0: no agreement; then one that agrees
    assert got["agreement"] == 0.0
    assert target_diagnostics(logits, targets, torch.tensor([[9.0, 0, 0, 0], [0, 0, 0, 1.0]]))["agreement"] == 0.5


def test_uniform_and_empty_targets():
    uniform = torch.full((5, 8), 1 / 8)
    got = target_diagnostics(torch.zeros(5, 8), uniform, torch.zeros(0, 8))
    assert got["entropy_fraction"] == pytest.approx(1.0) and got["logit_std"] == 0.0 and got["agreement"] == 0.0
    empty = target_diagnostics(torch.zeros(0, 8), torch.zeros(0, 8), torch.zeros(0, 8))  # no masked patch
    assert empty["entropy"] == 0.0 and empty["prototypes_used"] == 0.0


def test_feature_std_detects_collapse():
    assert feature_std(torch.ones(6, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0])) == 0.0  # every sample the same
    x = torch.tensor([[3.0, 4.0], [4.0, -3.0]])  # rows of norm 5 -> (0.6, 0.8), (0.8, -0.6)
    expected = np.mean([np.std([0.6, 0.8], ddof=1), np.std([0.8, -0.6], ddof=1)])
    assert feature_std(x) == pytest.approx(expected, rel=1e-6)


def test_forward_reports_the_diagnostics_of_its_targets(tmp_path):
    """The diagnostics of one SSL forward equal a hand recomputation from the teacher's own outputs."""
    trainer = build_trainer(tiny_config(tmp_path))
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    iteration = 1
    with torch.no_grad():
        out = model(**batch, iteration=iteration)
        teacher = model.teacher["backbone"](batch["global_crops"])
        cls_logits = model.teacher["dino_head"](teacher.pooler_output).numpy()
        temperature = model.teacher_temp(iteration)
        targets = sinkhorn_knopp(torch.from_numpy(cls_logits), temperature, model.recipe.sinkhorn_iterations).numpy()
    entropy = -(targets * np.log(np.clip(targets, 1e-30, None))).sum(1).mean()
    assert out["dino_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert out["dino_entropy_fraction"] == pytest.approx(entropy / math.log(cls_logits.shape[1]), rel=1e-5)
    assert out["dino_prototypes_used"] == len(set(targets.argmax(1).tolist()))
    assert out["dino_logit_std"] == pytest.approx(cls_logits.astype(np.float64).std(0, ddof=1).mean(), rel=1e-3)
    masked = int(batch["masks"].sum())
    assert masked > 0 and 0 < out["ibot_entropy_fraction"] <= 1.0


def test_diagnostics_reach_the_log_history_warning_and_plot(tmp_path, caplog):
    """Every diagnostic is in `log_history` at every logging step; nearly uniform targets after the configured
    share of the run warn once; the plot command writes a PNG from the run folder."""
    config = tiny_config(tmp_path / "run", max_steps=4, save_steps=2)
    config["recipe"] = {**config["recipe"], "uniform_targets_warning_after": 0.5}
    with caplog.at_level(logging.WARNING):
        trainer = run_training(write_config(tmp_path, config))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4
    for key in DIAGNOSTIC_KEYS:
        assert all(key in entry and math.isfinite(entry[key]) for entry in logs), key
    assert all(0 < entry["dino_entropy_fraction"] <= 1 for entry in logs)
    warnings = [record for record in caplog.records if "nearly uniform" in record.getMessage()]
    assert logs[-1]["dino_entropy_fraction"] > 0.98 and len(warnings) == 1  # a 4-step run has not learned yet
    assert read_log_history(tmp_path / "run") == trainer.state.log_history
    assert read_log_history(tmp_path / "run" / "checkpoint-2")[-1]["step"] == 2
    assert plot_main([str(tmp_path / "run"), "--out", str(tmp_path / "curves.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.width > 1000


def test_no_warning_when_disabled_and_clear_plot_errors(tmp_path, caplog):
    config = tiny_config(tmp_path / "run", max_steps=2, save_steps=100)
    config["recipe"] = {**config["recipe"], "uniform_targets_warning_after": None}
    with caplog.at_level(logging.WARNING):
        run_training(write_config(tmp_path, config))
    assert not [record for record in caplog.records if "nearly uniform" in record.getMessage()]
    with pytest.raises(FileNotFoundError, match="neither log_history.json"):
        read_log_history(tmp_path)
    from dinov3_hf.viz import plot_training_diagnostics

    with pytest.raises(ValueError, match="no SSL diagnostics"):
        plot_training_diagnostics([{"step": 1, "loss": 1.0}], tmp_path / "x.png")
