"""Publishing from the command line and from a training recipe, against the local Hub server: `dinov3-hf convert
--push-to-hub` to a private repo on a branch, and a pretraining config with `push_to_hub: true` that pushes its EMA
teacher backbone with a card holding its kNN and linear-probe accuracies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers import randomize_
from hub.conftest import TOKEN
from hub.hub_server import validate_metadata
from huggingface_hub import ModelCard
from transformers import AutoModel

from dinov3_hf import Dinov3HfImageProcessor, Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.cli import main
from dinov3_hf.data import load_fashion_mnist
from dinov3_hf.metrics import extract_cls_features, knn_eval_on_dataset, linear_probe_accuracy

REPO = Path(__file__).parents[2]
CLI = "import sys; from dinov3_hf.cli import main; sys.exit(main(sys.argv[1:]))"


def get(local_hub, path: str, token: bool = True) -> tuple[int, bytes]:
    """HTTP GET on the server: (status, body)."""
    request = urllib.request.Request(local_hub.endpoint + path,
                                     headers={"Authorization": f"Bearer {TOKEN}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_convert_push_to_hub_private_branch(local_hub, tmp_path):
    config = Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=2)
    randomize_(Dinov3HfViTModel(config)).save_pretrained(tmp_path / "src")
    dst = tmp_path / "dst"
    args = ["convert", str(tmp_path / "src"), str(dst), "--push-to-hub", "me/cli-vit", "--private", "--revision", "v1"]
    denied = local_hub.python(CLI, tmp_path / "cache", *args, token=False, exit_code=1)
    assert "Could not push" in denied.stderr and "hf auth login" in denied.stderr
    result = local_hub.python(CLI, tmp_path / "cache", *args)
    assert "Pushed" in result.stderr and "(branch v1)" in result.stderr

    status, body = get(local_hub, "/api/models/me/cli-vit/revision/v1")
    assert status == 200
    assert {s["rfilename"] for s in json.loads(body)["siblings"]} >= {
        "config.json", "model.safetensors", "preprocessor_config.json", "README.md"}
    assert json.loads(get(local_hub, "/api/models/me/cli-vit")[1])["sha"] != json.loads(body)["sha"]  # main != v1
    assert get(local_hub, "/me/cli-vit/resolve/v1/model.safetensors") == (200, (dst / "model.safetensors").read_bytes())
    assert get(local_hub, "/me/cli-vit/resolve/main/model.safetensors")[0] == 404  # pushed to the branch only
    assert get(local_hub, "/me/cli-vit/resolve/v1/config.json", token=False)[0] == 401  # private
    card = get(local_hub, "/me/cli-vit/resolve/v1/README.md")[1].decode()
    assert validate_metadata(card) == []
    assert ModelCard(card).data.pipeline_tag == "image-feature-extraction"
    assert 'Dinov3HfViTModel.from_pretrained("me/cli-vit")' in card


def test_convert_push_options_are_checked_before_converting(tmp_path, capsys):
    config = Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=1)
    Dinov3HfViTModel(config).save_pretrained(tmp_path / "src")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "a"), "--private"]) == 1
    assert "--private and --revision apply to --push-to-hub" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "b"), "--to", "hf", "--push-to-hub", "me/x"]) == 1
    assert "--push-to-hub uploads dinov3_hf folders" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pretraining_recipe_pushes_its_teacher_with_evaluation_results(local_hub, tmp_path):
    run = tmp_path / "run"
    local_hub.run([str(REPO / "training" / "pretrain.py"), "--config",
                   str(REPO / "training" / "configs" / "fashion_mnist_push_cpu.yaml"), f"training.output_dir={run}",
                   "training.hub_model_id=me/fmnist-tiny", "training.disable_tqdm=true"], tmp_path / "cache")
    teacher = run / "teacher_backbone"
    assert get(local_hub, "/me/fmnist-tiny/resolve/main/model.safetensors") == (
        200, (teacher / "model.safetensors").read_bytes())
    text = get(local_hub, "/me/fmnist-tiny/resolve/main/README.md")[1].decode()
    assert text == (teacher / "README.md").read_text() and validate_metadata(text) == []
    card = ModelCard(text)
    assert (card.data.license, card.data.library_name) == ("apache-2.0", "dinov3-hf")  # trained from scratch here
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}

    # the same protocol recomputed from the pushed folder: bank = train images after the 256 the run read
    model = AutoModel.from_pretrained(teacher)
    processor = Dinov3HfImageProcessor.for_model_config(model.config, size={"height": 28, "width": 28})
    bank, queries = load_fashion_mnist("train", 500, 256), load_fashion_mnist("test", 200)
    assert scores["kNN accuracy (k = 20, CLS)"] == knn_eval_on_dataset(model, processor, bank, queries, k=20)

    def features(images):
        return extract_cls_features(model, images, lambda x: processor(list(x), return_tensors="pt")["pixel_values"])

    probe = linear_probe_accuracy(features(bank["image"]), torch.tensor(bank["label"]), features(queries["image"]),
                                  torch.tensor(queries["label"]))
    assert scores["linear probe accuracy (CLS)"] == pytest.approx(probe, abs=1e-9)
    assert scores["kNN accuracy (k = 20, CLS)"] > 0.1  # above chance on 10 classes: a real evaluation ran


def test_lit_recipe_pushes_the_dinotxt_model_with_its_zero_shot_accuracy(local_hub, tmp_path):
    """`training/train_dinotxt.py` with `push_to_hub: true`: the saved dino.txt folder (model, processor, card) is
    pushed, and the card's model-index holds the run's held-out zero-shot accuracy."""
    run = tmp_path / "run"
    result = local_hub.run([str(REPO / "training" / "train_dinotxt.py"), "--config",
                   str(REPO / "training" / "configs" / "dinotxt_fashion_mnist_cpu.yaml"), f"training.output_dir={run}",
                   "training.max_steps=3", "training.per_device_train_batch_size=8", "training.disable_tqdm=true",
                   "training.push_to_hub=true", "training.hub_model_id=me/dinotxt-tiny", "data.limit=64",
                   "eval.limit=40", "recipe.model.text_hidden_size=32", "recipe.model.text_num_hidden_layers=1",
                   "recipe.model.vision_head_layers=1"], tmp_path / "cache")
    saved = run / "dinotxt"
    for name in ("model.safetensors", "config.json", "processor_config.json"):
        assert get(local_hub, f"/me/dinotxt-tiny/resolve/main/{name}") == (200, (saved / name).read_bytes()), name
    text = get(local_hub, "/me/dinotxt-tiny/resolve/main/README.md")[1].decode()
    assert text == (saved / "README.md").read_text() and validate_metadata(text) == []
    card = ModelCard(text)
    assert (card.data.license, card.data.pipeline_tag) == ("apache-2.0", "zero-shot-image-classification")
    (score,) = card.data.eval_results
    printed = float(result.stdout.split("zero-shot accuracy on the held-out images and templates: ")[1].split()[0])
    assert score.task_type == "zero-shot-image-classification" and score.dataset_split == "test"
    assert score.metric_value == pytest.approx(printed, abs=5e-5)  # the run's own evaluation, printed to 4 places
