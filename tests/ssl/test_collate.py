import pytest
import torch
from PIL import Image
from test_augment import UndistortedAugmentation, single_thread  # noqa: F401 (an autouse fixture)

from dinov3_hf.ssl.augment import MultiCropAugmentation
from dinov3_hf.ssl.collate import MultiCropCollator

MEAN = torch.tensor((0.485, 0.456, 0.406))
STD = torch.tensor((0.229, 0.224, 0.225))


def _samples(n: int) -> list[dict]:
    """Constant-colour images: the red channel identifies the sample."""
    return [{"image": Image.new("RGB", (40, 30), (50 * b, 100, 100)), "label": b} for b in range(n)]


def _sample_index(crops: torch.Tensor) -> list[int]:
    red = crops[:, 0].mean(dim=(1, 2)) * STD[0] + MEAN[0]
    return (red * 255 / 50).round().int().tolist()


def test_shapes_order_and_masks():
    aug = UndistortedAugmentation(global_size=32, local_size=16, n_local_crops=3, gram_size=48)
    collator = MultiCropCollator(aug, patch_size=8, mask_probability=0.5, mask_ratio_range=(0.1, 0.5))
    batch = collator(_samples(3))
    assert set(batch) == {"global_crops", "local_crops", "gram_crops", "masks"}
    assert batch["global_crops"].shape == (6, 3, 32, 32)
    assert batch["gram_crops"].shape == (6, 3, 48, 48)
    assert batch["local_crops"].shape == (9, 3, 16, 16)
    # view-major: view 0 of samples 0..2, then view 1 of samples 0..2 (locals: crop index, then sample)
    assert _sample_index(batch["global_crops"]) == [0, 1, 2, 0, 1, 2]
    assert _sample_index(batch["gram_crops"]) == [0, 1, 2, 0, 1, 2]
    assert _sample_index(batch["local_crops"]) == [0, 1, 2] * 3
    masks = batch["masks"]
    assert masks.dtype == torch.bool and masks.shape == (6, 16)
    # int(6 · 0.5) = 3 masked images with int(16 · linspace(0.1, 0.5, 4)[1:]) = 3, 5, 8 patches
    assert sorted(masks.sum(dim=1).tolist()) == [0, 0, 0, 3, 5, 8]


def test_masks_follow_the_global_rng():
    collator = MultiCropCollator(MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=1), patch_size=8)
    torch.manual_seed(0)
    first = collator(_samples(4))
    torch.manual_seed(0)
    second = collator(_samples(4))
    assert torch.equal(first["masks"], second["masks"])
    assert torch.equal(first["global_crops"], second["global_crops"])
    assert "gram_crops" not in first


def test_errors():
    aug = MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=1)
    with pytest.raises(KeyError, match=r"no 'image' key \(keys: \['label', 'pixels'\]\)"):
        MultiCropCollator(aug, patch_size=8)([{"pixels": Image.new("RGB", (8, 8)), "label": 0}])
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MultiCropCollator(aug, patch_size=10)
    with pytest.raises(ValueError, match="empty batch"):
        MultiCropCollator(aug, patch_size=8)([])


def test_seeded_samples_depend_only_on_their_seed_and_leave_the_rngs_alone(monkeypatch):
    """A sample with a `sample_seed` gets the same crops whatever the global RNG state and the rest of the batch; the
    CPU generator is restored afterwards and no accelerator generator is reseeded."""
    collator = MultiCropCollator(MultiCropAugmentation(global_size=32, local_size=16, n_local_crops=2), patch_size=8)
    samples = [{**sample, "sample_seed": 1000 + b} for b, sample in enumerate(_samples(3))]
    torch.manual_seed(0)
    alone = collator(samples[1:2])
    torch.manual_seed(1)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: pytest.fail("reseeded the CUDA generators"))
    state = torch.get_rng_state()
    together = collator(samples)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(together["global_crops"][[1, 4]], alone["global_crops"])
    assert torch.equal(together["local_crops"][[1, 4]], alone["local_crops"])
    other_seed = collator([{**samples[1], "sample_seed": 7}])
    assert not torch.equal(other_seed["global_crops"], alone["global_crops"])
