"""Schedules: hand-computed values of each kind, and the official recipes' schedules read from training/configs
against the official builders written out below with numpy."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dinov3_hf.ssl.config import PretrainConfig, load_yaml_with_overrides
from dinov3_hf.ssl.schedules import (
    Schedule,
    cosine_scheduler,
    evaluate_number,
    half_cosine_ramp,
    linear_warmup_cosine_decay,
    make_schedule,
    warmup_constant,
    warmup_cosine,
)
from dinov3_hf.ssl.trainer import SSLScheduler

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


def test_warmup_constant():
    kw = dict(warmup_iters=10, start=0.04, peak=0.07)
    assert warmup_constant(0, **kw) == pytest.approx(0.04)
    assert warmup_constant(5, **kw) == pytest.approx(0.055)
    assert warmup_constant(9, **kw) == pytest.approx(0.04 + 0.03 * 0.9)  # endpoint excluded
    assert warmup_constant(10, **kw) == pytest.approx(0.07)
    assert warmup_constant(10_000, **kw) == pytest.approx(0.07)
    assert warmup_constant(0, warmup_iters=0, start=0.0, peak=0.04) == 0.04


def test_linear_warmup_cosine_decay():
    """Schedules v2: warm-up one step short of the peak, cosine over C steps whose last one is exactly `end`."""
    kw = dict(start=0.0, peak=1.0, end=0.1, warmup_iters=10, cosine_iters=100)
    assert linear_warmup_cosine_decay(0, **kw) == 0.0
    assert linear_warmup_cosine_decay(5, **kw) == pytest.approx(0.5)
    assert linear_warmup_cosine_decay(9, **kw) == pytest.approx(0.9)  # endpoint excluded
    assert linear_warmup_cosine_decay(10, **kw) == 1.0
    assert linear_warmup_cosine_decay(43, **kw) == pytest.approx(0.1 + 0.9 * 0.75)  # angle 33·π/99 = π/3
    assert linear_warmup_cosine_decay(109, **kw) == 0.1  # the last cosine step reaches `end` exactly
    assert linear_warmup_cosine_decay(10**6, **kw) == 0.1
    one = dict(start=0.0, peak=1.0, end=0.5, warmup_iters=2, cosine_iters=1)  # np.linspace(0, π, 1) = [0]: peak
    assert [linear_warmup_cosine_decay(it, **one) for it in range(4)] == [0.0, 0.5, 1.0, 0.5]
    none = dict(start=0.0, peak=1.0, end=0.5, warmup_iters=2, cosine_iters=0)
    assert [linear_warmup_cosine_decay(it, **none) for it in range(4)] == [0.0, 0.5, 0.5, 0.5]


def test_cosine_scheduler():
    """Legacy CosineScheduler: warm-up includes its endpoint (peak at W - 1), cosine (it - W) / (T - W), then end."""
    kw = dict(start=0.0, peak=3.0, end=1.0, warmup_iters=4, total_iters=14)
    assert [cosine_scheduler(it, **kw) for it in range(5)] == pytest.approx([0.0, 1.0, 2.0, 3.0, 3.0])
    assert cosine_scheduler(9, **kw) == pytest.approx(2.0)  # angle 5π/10
    assert cosine_scheduler(13, **kw) == pytest.approx(1.0 + (1 + math.cos(0.9 * math.pi)))  # not yet `end`
    assert cosine_scheduler(14, **kw) == 1.0
    assert cosine_scheduler(0, start=0.5, peak=3.0, end=1.0, warmup_iters=1, total_iters=1) == 0.5  # linspace(a, b, 1)
    temp = dict(start=0.04, peak=0.07, end=0.07, warmup_iters=4, total_iters=4)  # the legacy teacher temperature
    assert [cosine_scheduler(it, **temp) for it in range(6)] == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])


def test_shorthands_are_schedules_v2():
    kw = dict(warmup_iters=10, total_iters=110, start=0.0, peak=1.0, end=0.1)
    for it in (0, 9, 10, 43, 109, 110, 500):
        assert warmup_cosine(it, **kw) == linear_warmup_cosine_decay(it, 0.0, 1.0, 0.1, 10, 100)
    ramp = dict(start_iter=100, ramp_iters=11, start=0.0, end=2.0)
    assert [half_cosine_ramp(it, **ramp) for it in (0, 99, 100, 110, 111)] == [0.0, 0.0, 0.0, 2.0, 2.0]
    assert half_cosine_ramp(105, **ramp) == pytest.approx(1.0)  # angle 5π/10
    assert half_cosine_ramp(5, start_iter=0, ramp_iters=0, start=1.0, end=0.5) == 0.5


def test_make_schedule():
    cfg = {"kind": "warmup_cosine", "warmup_iters": 10, "total_iters": 110, "start": 0, "peak": 1, "end": 0.1}
    s = make_schedule(cfg)
    assert isinstance(s, Schedule)
    assert s(43) == pytest.approx(0.775)
    assert isinstance(s(0), float)
    assert make_schedule({"kind": "half_cosine_ramp", "start_iter": 0, "ramp_iters": 3, "start": 1, "end": 0})(1) == (
        pytest.approx(0.5)
    )
    exact = make_schedule({"kind": "constant", "value": "1e-3 * (4 * sqrt(2048 / 1024))"})
    assert exact(0) == 1e-3 * (4 * math.sqrt(2)) and exact.params == {"value": 1e-3 * (4 * math.sqrt(2))}
    constant = make_schedule({"kind": "constant", "value": 1.5})
    assert [constant(it) for it in (0, 7, 10**6)] == [1.5, 1.5, 1.5]


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"kind": "linear"}, "unknown schedule kind 'linear'"),
        ({"warmup_iters": 1}, "'kind' key"),
        ({"kind": "warmup_constant", "warmup_iters": 1, "start": 0}, "missing: peak"),
        ({"kind": "warmup_constant", "warmup_iters": 1, "start": 0, "peak": 1, "end": 2}, "unknown: end"),
        ({"kind": "warmup_cosine", "warmup_iters": 9, "total_iters": 5, "start": 0, "peak": 1, "end": 0}, "total_it"),
        ({"kind": "warmup_constant", "warmup_iters": -1, "start": 0, "peak": 1}, "warmup_iters must be >= 0"),
        ({"kind": "warmup_constant", "warmup_iters": 1.5, "start": 0, "peak": 1}, "warmup_iters must be an integer"),
        ({"kind": "constant", "value": "2 * pi"}, r"schedule.value: cannot evaluate '2 \* pi' \('pi' is not allowed\)"),
    ],
)
def test_make_schedule_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(cfg)


def test_evaluate_number():
    assert evaluate_number(3) == 3 and evaluate_number(2.5) == 2.5
    assert evaluate_number("5e-5") == 5e-5  # YAML reads 5e-5 (no dot) as a string
    assert evaluate_number("1.25e-5 * (4 * sqrt(2048 / 1024))") == 1.25e-5 * (4 * math.sqrt(2048 / 1024))
    assert evaluate_number("-2 ** 2 + (3 - 1) / 4") == -3.5
    assert evaluate_number("100 * 1000") == 100_000 and isinstance(evaluate_number("100 * 1000"), int)
    for bad, reason in [
        ("__import__('os')", "not allowed"), ("math.sqrt(2)", "not allowed"), ("sqrt(2, 3)", "not allowed"),
        ("1 / 0", "division by zero"), ("sqrt(-1)", "math domain error"), ("2 ** 5000", "exponent 5000"),
        ("1e308 * 10", "not finite"), ("1e-3 *", "invalid syntax"), ("'a'", "not allowed"), ("True", "not allowed"),
    ]:
        with pytest.raises(ValueError, match=rf"recipe.lr.peak: cannot evaluate .*{reason}.*sqrt\(\)"):
            evaluate_number(bad, "recipe.lr.peak")
    with pytest.raises(ValueError, match="recipe.lr.peak must be a number or an expression string, got True"):
        evaluate_number(True, "recipe.lr.peak")


def test_recipe_names_the_bad_schedule_key():
    lr = {"kind": "linear_warmup_cosine_decay", "start": 0.0, "peak": "1e-3 * four", "end": 0.0, "warmup_iters": 1,
          "cosine_iters": 1}
    with pytest.raises(ValueError, match=r"recipe.lr.peak: cannot evaluate '1e-3 \* four'.*e.g."):
        PretrainConfig.from_dict({"lr": lr})
    with pytest.raises(ValueError, match="recipe.gram.weight: unknown schedule kind 'ramp'"):
        PretrainConfig.from_dict({"gram": {"weight": {"kind": "ramp"}}})


# ---- the official recipes against the official builders (`dinov3/train/cosine_lr_scheduler.py`) ----


def official_v2(start, peak, end, warmup_iterations, total_iterations, cosine_iterations=None):
    """Schedules v2 as a table over the official run: np.linspace warm-up without its endpoint, the cosine sampled
    at np.linspace(0, π, C) (both ends included), then `end` up to total_iterations."""
    if cosine_iterations is None:
        cosine_iterations = total_iterations - warmup_iterations
    warmup = np.linspace(start, peak, warmup_iterations, endpoint=False)
    cosine = end + (peak - end) * (1 + np.cos(np.linspace(0, np.pi, cosine_iterations))) / 2
    tail = np.full(total_iterations - warmup_iterations - cosine_iterations, end)
    return np.concatenate([warmup, cosine, tail])


def official_legacy(base_value, final_value, total_iters, warmup_iters=0, start_warmup_value=0.0):
    """The legacy CosineScheduler's table (trunc_extra 0): np.linspace warm-up with its endpoint, then
    final + (base - final)·(1 + cos(π·k / K)) / 2 for k < K = total - warmup; `final_value` from total_iters on."""
    k = np.arange(total_iters - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * k / max(len(k), 1)))
    return np.concatenate([np.linspace(start_warmup_value, base_value, warmup_iters), cosine]), final_value


def at(table, iterations, beyond):
    """The official value at each iteration; `beyond` past the table (v2 tables end at `end`)."""
    return np.array([table[it] if it < len(table) else beyond for it in iterations])


def recipe_of(name):
    config = load_yaml_with_overrides(CONFIGS / name)
    return PretrainConfig.from_dict(config["recipe"]), config["training"]


def ours(recipe, iterations):
    """lr, last-layer lr, weight decay (via SSLScheduler, as in training), momentum, teacher temperature, DINO local
    weight and Gram weight (via make_schedule on the parsed recipe) at each iteration."""
    groups = [{"params": [torch.zeros(1)], "lr_multiplier": 1.0, "wd_multiplier": 1.0, "is_last_layer": last}
              for last in (False, True)]
    scheduler = SSLScheduler(torch.optim.AdamW(groups), recipe)
    values = {name: [] for name in ("lr", "last_layer_lr", "wd", "momentum", "teacher_temp", "local", "gram")}
    others = {"momentum": recipe.momentum, "teacher_temp": recipe.teacher_temp, "local": recipe.dino_local_weight}
    if recipe.gram is not None:
        others["gram"] = recipe.gram.weight
    schedules = {name: make_schedule(cfg) for name, cfg in others.items()}
    for it in iterations:
        scheduler.last_epoch = it
        scheduler.get_lr()
        body, last = scheduler.optimizer.param_groups
        values["lr"].append(body["lr"])
        values["last_layer_lr"].append(last["lr"])
        values["wd"].append(body["weight_decay"])
        for name, schedule in schedules.items():
            values[name].append(schedule(it))
    return {name: np.array(vals) for name, vals in values.items() if vals}


def assert_schedules_match(got, expected):
    assert set(got) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-9, atol=1e-15, err_msg=name)


def test_vitl_imagenet_recipe_is_the_legacy_cosine_scheduler():
    """vitl_im1k_lin834 has no `schedules:` block -> CosineScheduler; lr ×4·√(64·32/1024); 100 × 1250 steps."""
    recipe, training = recipe_of("vitl16_imagenet.yaml")
    assert training["per_device_train_batch_size"] == 64
    epoch, total = 1250, 100 * 1250
    lr_table, min_lr = official_legacy(1e-3 * (4 * math.sqrt(64 * 32 / 1024.0)), 1e-6, total, 10 * epoch, 0)
    last_layer_table = lr_table.copy()
    last_layer_table[: 1 * epoch] = 0
    wd_table, wd_end = official_legacy(0.04, 0.4, total)
    momentum_table, momentum_end = official_legacy(0.992, 1.0, total)
    temp_table, temp_end = official_legacy(0.07, 0.07, 30 * epoch, 30 * epoch, 0.04)
    its = [0, 1, 1249, 1250, 6000, 12498, 12499, 12500, 12501, 37498, 37499, 37500, 60000, 124999, 125000, 200000]
    assert_schedules_match(ours(recipe, its), {
        "lr": at(lr_table, its, min_lr), "last_layer_lr": at(last_layer_table, its, min_lr),
        "wd": at(wd_table, its, wd_end), "momentum": at(momentum_table, its, momentum_end),
        "teacher_temp": at(temp_table, its, temp_end), "local": np.ones(len(its)),
    })
    assert ours(recipe, [12499])["lr"][0] == 1e-3 * (4 * math.sqrt(2))  # the peak at W - 1, exactly


def test_vit7b_stage1_recipe_is_schedules_v2():
    recipe, training = recipe_of("vit7b16_stage1.yaml")
    assert training["per_device_train_batch_size"] == 16
    epoch, total = 1000, 1000 * 1000
    lr_peak = 5e-5 * (4 * math.sqrt(16 * 256 / 1024.0))
    lr = official_v2(0, lr_peak, lr_peak, 100 * epoch, total)
    last_layer = lr.copy()
    last_layer[: 5 * epoch] = 0
    its = [0, 1, 4999, 5000, 50000, 99999, 100000, 100001, 500000, 999999, 1000000, 2000000]
    assert_schedules_match(ours(recipe, its), {
        "lr": at(lr, its, lr_peak), "last_layer_lr": at(last_layer, its, lr_peak),
        "wd": at(official_v2(0.04, 0.04, 0.04, 0, total), its, 0.04),
        "momentum": at(official_v2(0.994, 0.994, 0.994, 0, total), its, 0.994),
        "teacher_temp": at(official_v2(0.04, 0.07, 0.07, 100 * epoch, total), its, 0.07), "local": np.ones(len(its)),
    })


def test_vit7b_gram_anchor_recipe_is_schedules_v2_from_iteration_one_million():
    """The official stage resumes stage 1 at iteration 1,000,000 (absolute schedules over 1200 epochs); step s here
    is official iteration 1,000,000 + s."""
    recipe, training = recipe_of("vit7b16_gram_anchor.yaml")
    assert training["per_device_train_batch_size"] == 16 and training["max_steps"] == 200_000
    epoch, total, offset = 1000, 1200 * 1000, 1_000_000
    lr_peak = 3e-5 * (4 * math.sqrt(16 * 256 / 1024.0))
    lr = official_v2(0, lr_peak, lr_peak, 100 * epoch, total)
    last_layer = lr.copy()
    last_layer[: 5 * epoch] = 0
    local = official_v2(1, 1, 0.5, 1000 * epoch, total, 1 * epoch)
    gram = official_v2(0, 0, 2.0, 1000 * epoch, total, 1 * epoch)
    its = [0, 1, 500, 998, 999, 1000, 1001, 10000, 199999, 200000, 250000]
    official_its = [offset + it for it in its]
    assert_schedules_match(ours(recipe, its), {
        "lr": at(lr, official_its, lr_peak), "last_layer_lr": at(last_layer, official_its, lr_peak),
        "wd": at(official_v2(0.04, 0.04, 0.04, 0, total), official_its, 0.04),
        "momentum": at(official_v2(0.999, 0.999, 0.999, 0, total), official_its, 0.999),
        "teacher_temp": at(official_v2(0.04, 0.07, 0.07, 100 * epoch, total), official_its, 0.07),
        "local": at(local, official_its, 0.5), "gram": at(gram, official_its, 2.0),
    })


def test_vit7b_high_res_recipe_is_schedules_v2():
    recipe, training = recipe_of("vit7b16_high_res_adapt.yaml")
    assert training["per_device_train_batch_size"] == 8
    epoch, total = 1000, 30 * 1000
    scale = 4 * math.sqrt(8 * 256 / 1024.0)
    lr = official_v2(0, 0 * scale, 1.25e-5 * scale, 0, total, 10 * epoch)
    its = [0, 1, 2500, 5000, 9998, 9999, 10000, 10001, 29999, 30000, 40000]
    assert_schedules_match(ours(recipe, its), {
        "lr": at(lr, its, 1.25e-5 * scale), "last_layer_lr": at(lr, its, 1.25e-5 * scale),
        "wd": at(official_v2(0.04, 0.04, 0.04, 0, total), its, 0.04),
        "momentum": at(official_v2(0.999, 0.999, 0.999, 0, total), its, 0.999),
        "teacher_temp": at(official_v2(0.07, 0.07, 0.07, 0, total), its, 0.07),
        "local": at(official_v2(0.5, 0.5, 0.5, 0, total, 0), its, 0.5),
        "gram": at(official_v2(1.5, 1.5, 1.5, 0, total, 0), its, 1.5),
    })
