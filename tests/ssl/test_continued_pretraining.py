"""Continued pretraining from released weights on your own images: `init_from` a backbone in
any format with fresh heads, head warm-up, the original weights as Gram teacher, unreadable images skipped and counted."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from convert.test_vit_formats import official_state_dict
from helpers import randomize_
from PIL import Image
from test_pretraining import CONFIGS, assert_resumes_exactly
from transformers import DINOv3ViTConfig, DINOv3ViTModel, TrainerCallback

from dinov3_hf.ssl.collate import UNREADABLE, UnreadableImagesError
from dinov3_hf.ssl.config import DistillationConfig, PretrainConfig, load_yaml_with_overrides
from dinov3_hf.ssl.meta_arch import SSLMetaArch
from dinov3_hf.ssl.pretraining import build_trainer

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "clock")  # scikit-image's bundled photos
HEAD = {"prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """An image folder of 7 real photos (downscaled; JPEG, grayscale ones PNG) and one corrupt file: a JPEG cut in
    half, as an interrupted copy leaves it (its header reads, its pixels do not)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((96, 96))
        image.save(folder / f"{name}.{'png' if image.mode == 'L' else 'jpg'}")
    whole = (folder / "astronaut.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    return folder


@pytest.fixture(scope="module")
def transformers_folder(tmp_path_factory):
    """A small backbone saved by transformers' own DINOv3ViTModel (the transformers layout), with random weights."""
    config = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             num_register_tokens=4, patch_size=8, layerscale_value=0.5)
    folder = tmp_path_factory.mktemp("hf_backbone")
    randomize_(DINOv3ViTModel(config)).save_pretrained(folder)
    return folder


def continued_config(output_dir, init_from, images, max_steps=5, freeze_backbone_iters=3, max_unreadable_fraction=0.2,
                     save_steps=100, **recipe):
    """A tiny continued-pretraining run: backbone from `init_from`, fresh heads, 2 steps per epoch (8 files, 4 a batch)."""
    return {
        "recipe": {
            "backbone": {"preset": "vits16", "drop_path_rate": 0.1},
            "init_from": str(init_from),
            "dino_head": HEAD, "ibot_head": HEAD,
            "global_size": 32, "local_size": 16, "n_local_crops": 2, "freeze_backbone_iters": freeze_backbone_iters,
            "teacher_temp": {"kind": "constant", "value": 0.07},
            "lr": {"kind": "constant", "value": 1e-3},
            "momentum": {"kind": "constant", "value": 0.9},
            **recipe,
        },
        "data": {"kind": "imagefolder", "path": str(images), "max_unreadable_fraction": max_unreadable_fraction},
        "training": {"output_dir": str(output_dir), "per_device_train_batch_size": 4, "max_steps": max_steps,
                     "logging_steps": 1, "save_steps": save_steps, "use_cpu": True, "seed": 0,
                     "dataloader_num_workers": 0, "disable_tqdm": True},
    }


class Snapshots(TrainerCallback):
    """The student and teacher modules after every optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, dict[str, torch.Tensor]]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append({f"{role}.{name}": copy.deepcopy(module.state_dict())
                           for role in ("student", "teacher") for name, module in getattr(model, role).items()})


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def skipped_log(log_history: list[dict]) -> dict[int, int]:
    return {entry["step"]: entry["skipped_images"] for entry in log_history if "skipped_images" in entry}


def test_continues_from_an_official_pth_with_head_warmup_on_photos(tmp_path, photo_folder, caplog):
    """Released ViT-S/16 .pth (architecture from recipe.backbone.preset) -> student, teacher and Gram teacher; the
    backbones stay bit-identical through the 3-step head warm-up while the heads learn, then train; the corrupt photo
    is skipped once per epoch and counted."""
    official = official_state_dict("vits16", depth=1)
    torch.save(official, tmp_path / "dinov3_vits16.pth")
    config = continued_config(tmp_path / "run", tmp_path / "dinov3_vits16.pth", photo_folder,
                              gram={"teacher_checkpoint": str(tmp_path / "dinov3_vits16.pth")})
    trainer = build_trainer(config)
    model = trainer.model
    for backbone in (model.student["backbone"], model.teacher["backbone"], model.gram_teacher):
        assert same(backbone.state_dict(), official)  # our key names are the official ones
    initial = {name: copy.deepcopy(module.state_dict()) for name, module in model.student.items()}
    snapshots = Snapshots()
    trainer.add_callback(snapshots)
    with caplog.at_level(logging.WARNING, logger="dinov3_hf.ssl.collate"):
        trainer.train()

    for step, state in enumerate(snapshots.steps, start=1):
        for role in ("student", "teacher"):
            assert same(state[f"{role}.backbone"], initial["backbone"]) == (step <= 3), (role, step)
            for head in ("dino_head", "ibot_head"):
                assert not same(state[f"{role}.{head}"], initial[head]), (role, head, step)
    assert same(model.gram_teacher.state_dict(), official)
    assert all(entry["gram"] > 0 for entry in trainer.state.log_history if "loss" in entry)

    # 8 files, 4 per batch: every epoch (2 steps) reads the corrupt one once; the count is cumulative
    skipped = skipped_log(trainer.state.log_history)
    assert sorted(skipped) == [1, 2, 3, 4, 5] and skipped[2] == 1 and skipped[4] == 2
    assert skipped[1] in (0, 1) and skipped[3] in (1, 2) and skipped[5] in (2, 3)
    assert any("unreadable: OSError: image file is truncated" in record.getMessage() for record in caplog.records)


def test_continues_from_a_transformers_folder_and_resumes_exactly(tmp_path, photo_folder, transformers_folder):
    """From a transformers-layout folder: the backbones are that model (transformers' own forward is the oracle), the
    heads are fresh; stopped inside the head warm-up and resumed = one run, the skipped-image count included."""
    model = SSLMetaArch(PretrainConfig.from_dict(continued_config(tmp_path, transformers_folder, photo_folder)["recipe"]))
    theirs = DINOv3ViTModel.from_pretrained(transformers_folder).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.inference_mode():
        expected = theirs(x).last_hidden_state
        for backbone in (copy.deepcopy(model.student["backbone"]).eval(), model.teacher["backbone"]):
            torch.testing.assert_close(backbone(x).last_hidden_state, expected, atol=1e-5, rtol=0)
    assert model.student["backbone"].config.drop_path_rate == 0.1  # recipe.backbone's keys override the config

    def make_config(output_dir, max_steps):
        return continued_config(output_dir, transformers_folder, photo_folder, max_steps=max_steps, save_steps=6,
                                freeze_backbone_iters=4)

    state = assert_resumes_exactly(make_config, tmp_path)  # stops after step 3, inside the warm-up; unfreezes at 5
    assert not torch.equal(state["student.backbone.cls_token"], model.student["backbone"].cls_token)
    logs = [json.loads((tmp_path / run / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
            for run in ("full", "part")]
    assert skipped_log(logs[0]) == skipped_log(logs[1])
    assert [skipped_log(logs[0])[step] for step in (2, 4, 6)] == [1, 2, 3]


def test_unreadable_images_are_skipped_not_replaced_and_too_many_fail(tmp_path, photo_folder, transformers_folder):
    trainer = build_trainer(continued_config(tmp_path, transformers_folder, photo_folder))
    dataset, collator = trainer.train_dataset, trainer.data_collator
    samples = [dataset[i] for i in range(len(dataset))]
    broken = [sample for sample in samples if UNREADABLE in sample]
    good = [sample for sample in samples if UNREADABLE not in sample]
    assert len(broken) == 1 and "truncated" in broken[0][UNREADABLE] and len(good) == 7
    # the batch is the other samples' batch, exactly: nothing is put in the corrupt image's place
    with_broken, without = collator(good[:1] + broken + good[1:3]), collator(good[:3])
    assert int(with_broken.pop("skipped_images")) == 1 and "skipped_images" not in without
    assert with_broken.keys() == without.keys()
    for key, value in without.items():
        assert torch.equal(with_broken[key], value), key
    with pytest.raises(UnreadableImagesError, match="All 1 images of a batch are unreadable"):
        collator(broken)

    # 1 of 8 images is more than 10%: the run stops in its first epoch, naming the count, the share and the setting
    trainer = build_trainer(continued_config(tmp_path, transformers_folder, photo_folder, max_unreadable_fraction=0.1))
    with pytest.raises(UnreadableImagesError, match=r"1 of the 8 images .* epoch 0 \(12.50%\), more than "
                                                    r"data.max_unreadable_fraction = 0.1"):
        trainer.train()
    assert trainer.state.global_step < 2


def test_any_datasets_dataset_and_image_column(tmp_path, photo_folder, transformers_folder):
    """data.kind hub reads any dataset `datasets.load_dataset` can (here a local Parquet dataset) from column
    data.image_key; a corrupt image in it is skipped too."""
    import datasets

    files = sorted(str(path) for path in photo_folder.iterdir())
    table = datasets.Dataset.from_dict({"photo": files, "index": list(range(len(files)))})
    (tmp_path / "parquet").mkdir()
    table.cast_column("photo", datasets.Image()).to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    config = continued_config(tmp_path / "run", transformers_folder, photo_folder, max_steps=2)
    config["data"] = {"kind": "hub", "name": str(tmp_path / "parquet"), "image_key": "photo", "max_unreadable_fraction": 0.2}
    trainer = build_trainer(config)
    assert trainer.train_dataset.dataset.column_names == ["photo", "index"]
    trainer.train()
    assert skipped_log(trainer.state.log_history)[2] == 1

    config["data"]["image_key"] = "image"
    with pytest.raises(ValueError, match=r"no column 'image' \(its columns: \['photo', 'index'\]\); set data.image_key"):
        build_trainer(config)


def test_continued_pretraining_recipe_and_errors(tmp_path):
    config = load_yaml_with_overrides(CONFIGS / "continue_pretraining.yaml")
    recipe = PretrainConfig.from_dict(config["recipe"])
    assert recipe.init_from == recipe.gram.teacher_checkpoint and recipe.init_from.endswith(".pth")
    assert recipe.freeze_backbone_iters > 0 and config["data"]["kind"] == "imagefolder"
    with pytest.raises(ValueError, match="init_from or recipe.backbone_checkpoint, not both"):
        PretrainConfig.from_dict({"init_from": "a.pth", "backbone_checkpoint": "b.pth"})
    with pytest.raises(ValueError, match="freeze_backbone_iters must be >= 0"):
        PretrainConfig.from_dict({"freeze_backbone_iters": -1})
    with pytest.raises(ValueError, match="freeze_backbone_iters are not used in distillation"):
        DistillationConfig.from_dict({"teacher_checkpoint": "t", "freeze_backbone_iters": 5,
                                      "students": [{"name": "s", "backbone": {"preset": "vits16"}}]})
    with pytest.raises(FileNotFoundError, match="does not exist.*official .pth"):
        SSLMetaArch(PretrainConfig.from_dict({"init_from": str(tmp_path / "missing" / "weights.pth")}))


def test_pasted_objects_data_kind_gives_the_generated_images():
    """data.kind pasted_objects: the unlabelled images of make_pasted_objects, pixel for pixel, in index order."""
    import numpy as np

    from dinov3_hf.data import make_pasted_objects
    from dinov3_hf.ssl.pretraining import load_image_dataset

    dataset = load_image_dataset({"kind": "pasted_objects", "n_images": 3, "image_size": 32, "seed": 7})
    expected = make_pasted_objects(3, image_size=32, seed=7)
    assert len(dataset) == 3
    for row, record in zip(dataset, expected):
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(record.image))
    with pytest.raises(ValueError, match="n_images"):
        load_image_dataset({"kind": "pasted_objects"})
