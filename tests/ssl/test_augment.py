import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dinov3_hf.ssl.augment import MultiCropAugmentation

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny convolutions (the blur) are ~50x slower with 2 threads on a shared CPU; data workers use 1 thread too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class UndistortedAugmentation(MultiCropAugmentation):
    """Test-only configuration: crops and resizes only (every colour / blur / solarize probability 0)."""

    color_jitter_probability = 0.0
    grayscale_probability = 0.0
    global_blur_probabilities = (0.0, 0.0)
    global_solarize_probabilities = (0.0, 0.0)
    local_blur_probability = 0.0


def _image(size=48, seed=0) -> Image.Image:
    rng = np.random.RandomState(seed)
    ramp = np.linspace(0, 200, size)[None, :, None] + np.linspace(0, 50, size)[:, None, None]
    pixels = ramp + rng.randint(0, 55, (size, size, 3))
    return Image.fromarray(pixels.astype(np.uint8))


def test_shapes_dtypes_and_value_range():
    aug = MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=3, gram_size=64)
    out = aug(_image())
    assert set(out) == {"global_crops", "local_crops", "gram_crops"}
    assert [tuple(t.shape) for t in out["global_crops"]] == [(3, 32, 32)] * 2
    assert [tuple(t.shape) for t in out["local_crops"]] == [(3, 16, 16)] * 3
    assert [tuple(t.shape) for t in out["gram_crops"]] == [(3, 64, 64)] * 2
    low, high = (0 - MEAN) / STD, (1 - MEAN) / STD
    for crop in out["global_crops"] + out["local_crops"] + out["gram_crops"]:
        assert type(crop) is torch.Tensor and crop.dtype == torch.float32
        assert (crop >= low - 1e-5).all() and (crop <= high + 1e-5).all()
    assert "gram_crops" not in MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=1)(_image())


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (40, 30), 128),
        Image.new("RGBA", (40, 30), (10, 20, 30, 0)),
        torch.randint(0, 256, (1, 30, 40), dtype=torch.uint8),
        torch.rand(4, 30, 40),
    ],
    ids=["pil-L", "pil-RGBA", "uint8-gray", "float-rgba"],
)
def test_input_kinds_become_rgb(image):
    out = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=1)(image)
    assert out["global_crops"][0].shape == (3, 16, 16)


def test_bad_inputs_and_arguments():
    aug = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=1)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        aug(torch.rand(30, 40, 3))
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        aug(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="n_local_crops"):
        MultiCropAugmentation(n_local_crops=0)
    with pytest.raises(ValueError, match="global_scale"):
        MultiCropAugmentation(global_scale=(0.5, 0.2))


def test_normalisation_of_a_constant_image():
    color = (124, 116, 104)
    aug = UndistortedAugmentation(global_size=16, local_size=8, n_local_crops=2, gram_size=24)
    out = aug(Image.new("RGB", (40, 30), color))
    expected = (torch.tensor(color, dtype=torch.float32).view(3, 1, 1) / 255 - MEAN) / STD
    for crop in out["global_crops"] + out["local_crops"] + out["gram_crops"]:
        torch.testing.assert_close(crop, expected.expand_as(crop), atol=1e-5, rtol=0)


def test_determinism_under_manual_seed():
    aug = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=2, gram_size=32)
    image = _image()
    torch.manual_seed(3)
    first = aug(image)
    torch.manual_seed(3)
    second = aug(image)
    for name in first:
        for a, b in zip(first[name], second[name]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(first["global_crops"][0], first["global_crops"][1])  # independent views


def _applied_counter(module: torch.nn.Module) -> list[int]:
    """Count the calls of `module` that really transform (for v2's random wrappers: past their p-draw)."""
    calls = [0]
    if isinstance(module, v2.GaussianBlur | v2.ColorJitter):  # wrapped in RandomApply: called only when applied
        module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    else:  # RandomSolarize / RandomGrayscale draw p themselves and call .transform only when applied
        transform = module.transform

        def counting(*args, **kwargs):
            calls[0] += 1
            return transform(*args, **kwargs)

        module.transform = counting
    return calls


def _find(pipeline: torch.nn.Module, kind: type) -> list[torch.nn.Module]:
    return [m for m in pipeline.modules() if isinstance(m, kind)]


def test_effective_probabilities():
    aug = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=2)
    assert aug.global_blur_probabilities == (0.0, 0.9)
    assert aug.global_solarize_probabilities == (0.0, 0.2)
    assert aug.local_blur_probability == 0.5
    assert (aug.color_jitter_probability, aug.grayscale_probability) == (0.8, 0.2)
    global_1, global_2 = aug.global_transforms
    assert _find(global_1, v2.GaussianBlur) == [] and _find(global_1, v2.RandomSolarize) == []  # never blurred
    assert _find(aug.local_transform, v2.RandomSolarize) == []
    (blur_2,) = _find(global_2, v2.GaussianBlur)
    (solarize_2,) = _find(global_2, v2.RandomSolarize)
    (blur_local,) = _find(aug.local_transform, v2.GaussianBlur)
    (jitter_1,) = _find(global_1, v2.ColorJitter)
    (gray_1,) = _find(global_1, v2.RandomGrayscale)
    assert (blur_2.kernel_size, blur_2.sigma, solarize_2.threshold) == ((9, 9), [0.1, 2.0], 128)
    counts = {
        "blur_2": _applied_counter(blur_2),
        "solarize_2": _applied_counter(solarize_2),
        "blur_local": _applied_counter(blur_local),
        "jitter_1": _applied_counter(jitter_1),
        "gray_1": _applied_counter(gray_1),
    }
    n = 400
    trials = {"blur_2": n, "solarize_2": n, "blur_local": 2 * n, "jitter_1": n, "gray_1": n}
    expected_p = {"blur_2": 0.9, "solarize_2": 0.2, "blur_local": 0.5, "jitter_1": 0.8, "gray_1": 0.2}
    image = Image.new("RGB", (24, 24), (90, 140, 200))
    torch.manual_seed(0)
    for _ in range(n):
        aug(image)
    for name, calls in counts.items():
        k, p = trials[name], expected_p[name]
        tolerance = 4 * (p * (1 - p) / k) ** 0.5  # 4 binomial standard deviations
        assert abs(calls[0] / k - p) < tolerance, (name, calls[0] / k)


@pytest.mark.parametrize("global_size, gram_size", [(16, 32), (32, 16)])
def test_gram_crops_are_undistorted_views_of_the_global_base_crop(global_size, gram_size):
    for pipeline in (MultiCropAugmentation(gram_size=gram_size).gram_transform,):
        for kind in (v2.ColorJitter, v2.RandomGrayscale, v2.GaussianBlur, v2.RandomSolarize):
            assert _find(pipeline, kind) == []
    aug = UndistortedAugmentation(global_size=global_size, local_size=8, n_local_crops=1, gram_size=gram_size)
    torch.manual_seed(0)
    out = aug(_image(64))
    for view, (global_crop, gram_crop) in enumerate(zip(out["global_crops"], out["gram_crops"])):
        # rebuild the 8-bit base crop from the larger of the two, resize it to the other size as the pipeline does
        large, small, size = (gram_crop, global_crop, global_size) if gram_size > global_size else (
            global_crop, gram_crop, gram_size
        )
        base = ((large * STD + MEAN) * 255).round().clamp(0, 255).to(torch.uint8)
        resized = TF.resize(TF.to_pil_image(base), size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        expected = (TF.to_dtype(TF.pil_to_tensor(resized), torch.float32, scale=True) - MEAN) / STD
        torch.testing.assert_close(small, expected, atol=1e-5, rtol=0, msg=f"view {view}")
    assert not torch.equal(out["gram_crops"][0], out["gram_crops"][1])


def test_distortion_overrides_change_the_pipelines_and_reject_bad_values():
    """`distortions` overrides per instance; the class keeps the official values."""
    aug = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=2, distortions={
        "global_blur_probabilities": [0, 0], "local_blur_probability": 0, "global_solarize_probabilities": [0, 0.5],
        "color_jitter_probability": 0.3, "blur_sigma": [0.1, 1.0]})
    global_1, global_2 = aug.global_transforms
    assert _find(global_1, v2.GaussianBlur) == _find(global_2, v2.GaussianBlur) == []
    assert _find(aug.local_transform, v2.GaussianBlur) == []
    (solarize_2,) = _find(global_2, v2.RandomSolarize)
    assert solarize_2.p == 0.5 and _find(global_1, v2.RandomSolarize) == []
    assert [t.p for t in global_1 if isinstance(t, v2.RandomApply)] == [0.3]  # the colour jitter
    assert MultiCropAugmentation.global_blur_probabilities == (0.0, 0.9)
    default_2 = MultiCropAugmentation(global_size=16, local_size=8, n_local_crops=2).global_transforms[1]
    assert len(_find(default_2, v2.GaussianBlur)) == 1
    with pytest.raises(ValueError, match=r"Unknown distortion settings \['blur'\]; known: color_jitter_probability"):
        MultiCropAugmentation(distortions={"blur": 0})
    with pytest.raises(ValueError, match=r"local_blur_probability must be probabilities in \[0, 1\], got 1.5"):
        MultiCropAugmentation(distortions={"local_blur_probability": 1.5})
    with pytest.raises(ValueError, match="global_blur_probabilities needs 2 values"):
        MultiCropAugmentation(distortions={"global_blur_probabilities": [0.5]})


def test_recipe_distortions_reach_the_training_crops(tmp_path):
    from test_pretraining import tiny_config

    from dinov3_hf.ssl.pretraining import build_trainer

    config = tiny_config(tmp_path)
    config["recipe"] = {**config["recipe"], "distortions": {"local_blur_probability": 0.0}}
    augmentation = build_trainer(config).data_collator.augmentation
    assert augmentation.local_blur_probability == 0.0 and _find(augmentation.local_transform, v2.GaussianBlur) == []
    assert augmentation.global_blur_probabilities == (0.0, 0.9)
