"""Dinov3HfImageProcessor: sizes, numbers against torchvision, input types, PIL modes, errors, Auto/pipeline loading."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torchvision.transforms import v2
from transformers import AutoImageProcessor, pipeline

import dinov3_hf  # noqa: F401  (registers the models with the Auto classes)
from dinov3_hf import Dinov3HfViTConfig, Dinov3HfViTModel
from dinov3_hf.models.convnext import Dinov3HfConvNextConfig
from dinov3_hf.common import NORMALIZATION

(LVD_MEAN, LVD_STD), (SAT_MEAN, SAT_STD) = NORMALIZATION["lvd1689m"], NORMALIZATION["sat493m"]
from dinov3_hf.processing import Dinov3HfImageProcessor, snap_to_multiple, target_size



@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(61, 90, 3), dtype=np.uint8)


def reference(image_hwc_uint8: np.ndarray, size: tuple[int, int], interpolation, mean=LVD_MEAN, std=LVD_STD):
    """torchvision: to float [0, 1] -> Resize(antialias=True) -> Normalize."""
    x = torch.from_numpy(image_hwc_uint8).permute(2, 0, 1).float() / 255
    x = v2.Resize(size, interpolation=interpolation, antialias=True)(x)
    return v2.Normalize(mean, std)(x)


def test_snap_and_target_size():
    assert [snap_to_multiple(v, 16) for v in (100, 104, 5, 0.4, 224, 232)] == [96, 112, 16, 16, 224, 240]
    assert target_size(512, 683, {"shortest_edge": 448}, 16) == (448, 592)  # 683 * 0.875 = 597.6 -> 592
    assert target_size(683, 512, {"shortest_edge": 448}, 16) == (592, 448)
    assert target_size(400, 600, {"shortest_edge": 224}, 16) == (224, 336)
    assert target_size(999, 3, {"height": 50, "width": 70}, 16) == (48, 64)


@pytest.mark.parametrize(
    "resample, interpolation",
    [
        ("bilinear", v2.InterpolationMode.BILINEAR),
        ("bicubic", v2.InterpolationMode.BICUBIC),
        (3, v2.InterpolationMode.BICUBIC),  # PIL code, as in hub preprocessor configs
    ],
)
def test_shortest_edge_matches_torchvision(rgb, resample, interpolation):
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 40}, size_divisor=8, resample=resample)
    out = processor(rgb, return_tensors="pt").pixel_values
    # 61x90 -> shorter side 40: 40 x 59.02 -> snapped to multiples of 8: 40 x 56
    assert out.shape == (1, 3, 40, 56)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], reference(rgb, (40, 56), interpolation), atol=1e-5, rtol=0)


def test_fixed_size_snapped_and_sat_stats(rgb):
    processor = Dinov3HfImageProcessor(size={"height": 50, "width": 70}, image_mean=SAT_MEAN, image_std=SAT_STD)
    out = processor(Image.fromarray(rgb), return_tensors="pt").pixel_values
    assert out.shape == (1, 3, 48, 64)
    expected = reference(rgb, (48, 64), v2.InterpolationMode.BILINEAR, SAT_MEAN, SAT_STD)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=0)


def test_normalisation_numbers_by_hand():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 51
    out = Dinov3HfImageProcessor(size={"height": 16, "width": 16})(image, return_tensors="pt").pixel_values[0]
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    torch.testing.assert_close(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-6, rtol=0)
    assert out.std(dim=(1, 2)).max() < 1e-6


def test_input_types_agree(rgb):
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 32})
    expected = processor(rgb, return_tensors="pt").pixel_values
    chw = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    inputs = {
        "pil": Image.fromarray(rgb),
        "numpy_chw": rgb.transpose(2, 0, 1).copy(),
        "numpy_float": rgb.astype(np.float32) / 255,
        "torch_chw_uint8": chw,
        "torch_hwc_uint8": torch.from_numpy(rgb),
        "torch_chw_float": chw.float() / 255,
        "torch_chw_float16": (chw.float() / 255).half(),
    }
    for name, image in inputs.items():
        got = processor(image, return_tensors="pt").pixel_values
        atol = 2e-3 if name == "torch_chw_float16" else 1e-5
        torch.testing.assert_close(got, expected, atol=atol, rtol=0, msg=name)

    batches = {
        "list": [rgb, Image.fromarray(rgb)],
        "nested_list": [[rgb], (Image.fromarray(rgb),)],
        "list_of_batches": [np.stack([rgb]), torch.stack([chw])],
        "numpy_bhwc": np.stack([rgb, rgb]),
        "torch_bchw": torch.stack([chw, chw]),
    }
    for name, batch in batches.items():
        got = processor(batch, return_tensors="pt").pixel_values
        torch.testing.assert_close(got, expected.expand(2, -1, -1, -1), atol=1e-5, rtol=0, msg=name)

    as_numpy = processor(rgb, return_tensors="np").pixel_values
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (1, 3, 32, 48)
    as_list = processor([rgb, rgb], return_tensors=None).pixel_values
    assert isinstance(as_list, list) and len(as_list) == 2 and as_list[0].shape == (3, 32, 48)


def test_explicit_channel_layout():
    # 3 x 5 x 3 is ambiguous: numpy defaults to HWC, torch to CHW; input_data_format decides
    image = np.random.default_rng(1).integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    processor = Dinov3HfImageProcessor(do_resize=False, do_normalize=False)
    assert processor(image, return_tensors="pt").pixel_values.shape == (1, 3, 3, 5)
    assert processor(torch.from_numpy(image), return_tensors="pt").pixel_values.shape == (1, 3, 5, 3)
    chw = processor(image, input_data_format="channels_first", return_tensors="pt").pixel_values
    torch.testing.assert_close(chw[0], torch.from_numpy(image).float() / 255)


def test_grayscale_inputs(rgb):
    gray = rgb[..., 0]
    processor = Dinov3HfImageProcessor(size={"height": 32, "width": 48})
    expected = processor(np.repeat(gray[..., None], 3, axis=-1), return_tensors="pt").pixel_values
    for image in (Image.fromarray(gray), gray, gray[..., None], torch.from_numpy(gray)[None]):
        torch.testing.assert_close(processor(image, return_tensors="pt").pixel_values, expected, atol=1e-5, rtol=0)
    pair = processor([gray, torch.from_numpy(gray)], return_tensors="pt").pixel_values  # HW images, not rows
    torch.testing.assert_close(pair, expected.expand(2, -1, -1, -1), atol=1e-5, rtol=0)


def test_alpha_is_composited_over_white(rgb):
    processor = Dinov3HfImageProcessor(do_resize=False, do_normalize=False)
    opaque = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    transparent = opaque.copy()
    transparent[..., 3] = 0
    half = opaque.copy()
    half[..., 3] = 51  # 20 % opacity

    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for image in (Image.fromarray(opaque), opaque):
        torch.testing.assert_close(processor(image, return_tensors="pt").pixel_values[0], expected)
    assert torch.all(processor(Image.fromarray(transparent), return_tensors="pt").pixel_values == 1)
    for image in (half, half.astype(np.float32) / 255):
        torch.testing.assert_close(
            processor(image, return_tensors="pt").pixel_values[0], 0.2 * expected + 0.8, atol=1e-6, rtol=0
        )


def test_pil_modes_convert_to_rgb(rgb):
    processor = Dinov3HfImageProcessor(do_resize=False, do_normalize=False)
    image = Image.fromarray(rgb)
    for mode in ("1", "L", "P", "CMYK", "YCbCr", "LA", "PA", "RGBX"):
        converted = image.convert(mode)
        out = processor(converted, return_tensors="pt").pixel_values
        assert out.shape == (1, 3, 61, 90), mode
        assert 0 <= out.min() and out.max() <= 1, mode
    cmyk = image.convert("CMYK")
    expected = torch.from_numpy(np.array(cmyk.convert("RGB"))).permute(2, 0, 1) / 255
    torch.testing.assert_close(processor(cmyk, return_tensors="pt").pixel_values[0], expected)


def test_sixteen_bit_inputs():
    processor = Dinov3HfImageProcessor(do_resize=False, do_normalize=False)
    values = np.array([[0, 257 * 51, 65535]], dtype=np.uint16)
    expected = torch.tensor([0.0, 0.2, 1.0]).expand(3, 1, 3)
    for image in (Image.fromarray(values), values, Image.fromarray(values.astype(np.int32))):
        got = processor(image, return_tensors="pt").pixel_values[0]
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert Image.fromarray(values).mode == "I;16"


def test_high_bit_depth_and_float_photos_match_8_bit(tmp_path):
    """16-bit, 32-bit-int and float versions of real photos give the 8-bit photo's values (scaled, not clipped)."""
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 64})
    gray = data.camera()  # 512 x 512 uint8
    expected = processor(gray, return_tensors="pt").pixel_values
    sixteen = gray.astype(np.uint16) * 257  # 0..255 -> 0..65535, as libpng widens 8-bit samples
    Image.fromarray(sixteen).save(tmp_path / "camera16.png")
    from_file = Image.open(tmp_path / "camera16.png")
    big_endian = Image.frombytes("I;16B", from_file.size, sixteen.astype(">u2").tobytes())
    assert (from_file.mode, big_endian.mode) == ("I;16", "I;16B")
    gray_inputs = {
        "16-bit PNG": from_file,
        "PIL I;16B": big_endian,
        "PIL I": Image.fromarray(sixteen.astype(np.int32)),
        "PIL F": Image.fromarray(gray.astype(np.float32) / 255),
        "uint16 array": sixteen,
        "uint16 tensor": torch.from_numpy(sixteen),
    }
    for name, image in gray_inputs.items():
        got = processor(image, return_tensors="pt").pixel_values
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=name)

    photo = data.astronaut()  # 512 x 512 x 3 uint8
    expected = processor(photo, return_tensors="pt").pixel_values
    photo16 = photo.astype(np.uint16) * 257
    opaque16 = np.concatenate([photo16, np.full((512, 512, 1), 65535, np.uint16)], axis=-1)
    for name, image in {
        "uint16 HWC": photo16,
        "uint16 CHW tensor": torch.from_numpy(photo16).permute(2, 0, 1),
        "uint16 RGBA": opaque16,
    }.items():
        got = processor(image, return_tensors="pt").pixel_values
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=name)
    # half-transparent 16-bit alpha: 0.2 * colour + 0.8 * white, on the [0, 1] scale
    raw = Dinov3HfImageProcessor(do_resize=False, do_normalize=False)
    translucent = opaque16.copy()
    translucent[..., 3] = 13107  # 0.2 * 65535
    expected_raw = 0.2 * torch.from_numpy(photo).permute(2, 0, 1).float() / 255 + 0.8
    torch.testing.assert_close(raw(translucent, return_tensors="pt").pixel_values[0], expected_raw, atol=1e-6, rtol=0)


def test_max_tokens_refuses_thin_and_wide_images():
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 448})  # the features CLI default for a ViT/16
    assert processor.max_tokens == 16384
    thin = np.zeros((3, 300, 3), np.uint8)  # 300 wide, 3 high: 448 x 44800, a 28 x 2800 grid
    message = (
        r"3x300 pixels \(height x width\) becomes a 448x44800 input of 28x2800 = 78400 patch tokens \(16x16 pixels "
        r"each\), more than max_tokens=16384.*max_tokens=78400 \(or None\).*--max-tokens 78400"
    )
    with pytest.raises(ValueError, match=message):
        processor(thin)
    with pytest.raises(ValueError, match=r"44800x448 input of 2800x28 = 78400 patch tokens"):
        processor(thin.transpose(1, 0, 2))  # 3 wide, 300 high
    panorama = np.zeros((100, 2400, 3), np.uint8)  # 448 x 10752: 28 x 672 = 18816 tokens
    with pytest.raises(ValueError, match=r"100x2400 pixels .* 448x10752 input of 28x672 = 18816 patch tokens"):
        processor(panorama)
    with pytest.raises(ValueError, match="18816 patch tokens .* more than max_tokens=18815"):
        processor(panorama, max_tokens=18815)

    # the limit is inclusive and per call; None lifts it. 3 x 300 at shorter side 32: 32 x 3200, 2 x 200 = 400 tokens
    small = Dinov3HfImageProcessor(size={"shortest_edge": 32}, max_tokens=399)
    with pytest.raises(ValueError, match="400 patch tokens"):
        small(thin)
    with pytest.raises(ValueError, match=r"32x3200 input of 4x400 = 1600 patch tokens \(8x8 pixels each\)"):
        small(thin, size_divisor=8, max_tokens=1599)
    strip = np.random.default_rng(2).integers(0, 256, size=(3, 300, 3), dtype=np.uint8)
    allowed = small(strip, max_tokens=400, return_tensors="pt").pixel_values
    assert allowed.shape == (1, 3, 32, 3200)
    torch.testing.assert_close(allowed, small(strip, max_tokens=None, return_tensors="pt").pixel_values)
    expected = reference(strip, (32, 3200), v2.InterpolationMode.BILINEAR)
    torch.testing.assert_close(allowed[0], expected, atol=1e-5, rtol=0)
    # the tokens counted are those of the model input: after the center crop (2 x 2), or the unresized image
    cropped = small(strip, max_tokens=4, do_center_crop=True, crop_size={"height": 32, "width": 32})
    assert cropped.pixel_values[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"becomes a 40x64 input of 2x4 = 8 patch tokens"):
        small(np.zeros((40, 64), np.uint8), do_resize=False, max_tokens=7)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_tokens must be a positive int or None"):
            Dinov3HfImageProcessor(max_tokens=bad)


def test_center_crop(rgb):
    processor = Dinov3HfImageProcessor(
        size={"shortest_edge": 64}, do_center_crop=True, crop_size={"height": 48, "width": 48}
    )
    cropped = processor(rgb, return_tensors="pt").pixel_values
    full = processor(rgb, do_center_crop=False, return_tensors="pt").pixel_values
    assert full.shape == (1, 3, 64, 96) and cropped.shape == (1, 3, 48, 48)
    torch.testing.assert_close(cropped, full[..., 8:56, 24:72])


def test_errors(rgb):
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 32})
    with pytest.raises(ValueError, match=r"Unsupported PIL image mode 'La'.*convert"):
        processor(Image.new("La", (8, 8)))
    with pytest.raises(TypeError, match=r"str.*PIL.Image.open"):
        processor("photo.jpg")
    with pytest.raises(ValueError, match="1 \\(gray\\), 3 \\(RGB\\) or 4 \\(RGBA\\) channels"):
        processor(np.zeros((10, 12, 2), np.uint8))
    with pytest.raises(ValueError, match=r"Float images must hold values in \[0, 1\]"):
        processor(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="0..255"):
        processor(rgb.astype(np.int32) * 4)
    with pytest.raises(ValueError, match="empty"):
        processor([])
    with pytest.raises(ValueError, match=r"different shapes.*fixed size.*one image at a time"):
        processor([rgb, rgb.transpose(1, 0, 2)], return_tensors="pt")
    with pytest.raises(ValueError, match="shortest_edge"):
        Dinov3HfImageProcessor(size=224)
    with pytest.raises(ValueError, match="resample must be"):
        Dinov3HfImageProcessor(resample="lanczos")
    with pytest.raises(ValueError, match="multiples of size_divisor=16"):
        Dinov3HfImageProcessor(do_center_crop=True, crop_size={"height": 50, "width": 48})
    with pytest.raises(ValueError, match="larger than the resized image"):
        processor(rgb, do_center_crop=True, crop_size={"height": 64, "width": 64})
    with pytest.raises(TypeError, match="Unknown image processor argument"):
        processor(rgb, sise=3)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(rgb, return_tensors="tf")


def test_for_model_config():
    sat = Dinov3HfImageProcessor.for_model_config(Dinov3HfViTConfig.from_preset("vitl16_sat"))
    assert sat.image_mean == list(SAT_MEAN) and sat.image_std == list(SAT_STD) and sat.size_divisor == 16
    p14 = Dinov3HfImageProcessor.for_model_config(Dinov3HfViTConfig(patch_size=14), size={"shortest_edge": 100})
    assert p14.size_divisor == 14 and p14.image_mean == list(LVD_MEAN)
    assert p14(np.zeros((100, 150, 3), np.uint8), return_tensors="pt").pixel_values.shape == (1, 3, 98, 154)
    # ConvNeXt: inputs are multiples of the total stride 32, whatever its patch_size (get_intermediate_layers only)
    convnext = Dinov3HfConvNextConfig.from_preset("convnext_tiny", patch_size=16, pretraining_data="sat493m")
    processor = Dinov3HfImageProcessor.for_model_config(convnext)
    assert processor.size_divisor == 32 and processor.image_std == list(SAT_STD)
    assert Dinov3HfImageProcessor.for_model_config(convnext, size_divisor=64).size_divisor == 64
    with pytest.raises(ValueError, match="pass image_mean=..."):
        Dinov3HfImageProcessor.for_model_config(object())


def test_save_and_auto_load(tmp_path):
    processor = Dinov3HfImageProcessor(size={"shortest_edge": 96}, resample="bicubic", image_mean=SAT_MEAN)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "Dinov3HfImageProcessor"
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is Dinov3HfImageProcessor
    assert loaded.to_dict() == processor.to_dict()
    overridden = AutoImageProcessor.from_pretrained(tmp_path, size={"height": 32, "width": 32})
    assert overridden.size == {"height": 32, "width": 32}

    # max_tokens round-trips, including None (no limit); configs saved without it get the default
    for limit in (None, 100):
        Dinov3HfImageProcessor(max_tokens=limit).save_pretrained(tmp_path / str(limit))
        assert AutoImageProcessor.from_pretrained(tmp_path / str(limit)).max_tokens == limit
    del saved["max_tokens"]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved))
    old = AutoImageProcessor.from_pretrained(tmp_path)
    assert old.max_tokens == 16384 and old.to_dict() == processor.to_dict()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = Dinov3HfViTConfig.from_preset("vits16", hidden_size=64, num_attention_heads=2, num_hidden_layers=2)
    model = Dinov3HfViTModel(config).eval()
    path = tmp_path_factory.mktemp("tiny_vit")
    model.save_pretrained(path)
    Dinov3HfImageProcessor.for_model_config(config, size={"height": 64, "width": 96}).save_pretrained(path)
    return path, model


def test_image_feature_extraction_pipeline(tiny_model_dir, rgb):
    path, model = tiny_model_dir
    extractor = pipeline("image-feature-extraction", model=str(path))
    assert type(extractor.image_processor) is Dinov3HfImageProcessor
    image = Image.fromarray(rgb)

    hidden = extractor(image, return_tensors=True)
    assert hidden.shape == (1, 1 + 4 + (64 // 16) * (96 // 16), 64)
    pooled = extractor(image, return_tensors=True, pool=True)
    assert pooled.shape == (1, 64)

    with torch.no_grad():
        pixel_values = extractor.image_processor(image, return_tensors="pt").pixel_values
        expected = model(pixel_values=pixel_values)
    torch.testing.assert_close(pooled, expected.pooler_output)
    torch.testing.assert_close(hidden, expected.last_hidden_state)
    assert np.asarray(extractor(image)).shape == (1, 29, 64)  # nested lists by default
