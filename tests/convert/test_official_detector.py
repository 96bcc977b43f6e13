"""`dinov3-hf convert --head dinov3_vit7b16_de`: an official detector file (in the hub's {"model": ...} container) ->
our detector folder on a backbone folder -> back to the official file, bit for bit."""

from __future__ import annotations

import torch
from transformers import AutoImageProcessor, AutoModelForObjectDetection

from dinov3_hf.cli import main
from dinov3_hf.processing import Dinov3HfDetectionImageProcessor

from plain_detr_helpers import QUERIES, random_official_state, tiny_detector


def test_cli_converts_the_detector_both_ways(tmp_path, capsys):
    model = tiny_detector()
    model.backbone.save_pretrained(tmp_path / "backbone")
    state = random_official_state(seed=5)
    torch.save({"model": state}, tmp_path / "de.pth")
    args = ["convert", str(tmp_path / "de.pth"), str(tmp_path / "ours"), "--head", "dinov3_vit7b16_de"]
    assert main([*args, "--backbone", str(tmp_path / "backbone")]) == 0
    detector = AutoModelForObjectDetection.from_pretrained(tmp_path / "ours")
    assert detector.config.num_queries_one2one == QUERIES
    assert torch.equal(detector.query_embed.weight, state["query_embed.weight"])
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path / "ours"), Dinov3HfDetectionImageProcessor)
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back.pth"), "--to", "official", *args[3:]]) == 0
    saved = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert set(saved) == set(state) and all(torch.equal(saved[k], v) for k, v in state.items())

    capsys.readouterr()  # a depth head file given as the detector is refused, naming what it is
    torch.save({"conv_depth.head.0.weight": torch.zeros(1)}, tmp_path / "dd.pth")
    assert main(["convert", str(tmp_path / "dd.pth"), str(tmp_path / "x"), *args[3:], "--backbone",
                 str(tmp_path / "backbone")]) == 1
    assert "DPT depth head" in capsys.readouterr().err
