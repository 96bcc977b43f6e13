"""E1 / E5: the dino.txt tokenizer gives open_clip's SimpleTokenizer ids, round-trips through AutoTokenizer, and refuses
over-long text without truncation."""

from __future__ import annotations

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from transformers import AutoTokenizer

from dinov3_hf import Dinov3HfDinoTxtTokenizer

TEXTS = [
    "a photo of a cat.",
    "",
    "Ünïcödé — naïve café, 東京タワー and emoji 🐱🚀!!",
    "It's &amp; <b>HTML</b>\n\twith   tabs, 'quotes' and CAPITALS",
    "!",
    "numbers 1234, 5.6e-7 and x^2",
    "don't we'll they've I'm you'd she's",
    " ".join(f"word{i}" for i in range(120)),  # far beyond 77 tokens: truncated, last id EOT
]


@pytest.fixture(scope="module")
def tokenizer() -> Dinov3HfDinoTxtTokenizer:
    return Dinov3HfDinoTxtTokenizer()


def test_ids_equal_open_clip(tokenizer):
    ours = tokenizer(TEXTS, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    reference = SimpleTokenizer()(TEXTS)
    assert ours.shape == (len(TEXTS), 77)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    assert ours[1, :3].tolist() == [49406, 49407, 0]  # empty string: SOT, EOT, zero padding
    assert ours[-1, -1].item() == 49407 and (ours[-1] != 0).all()  # truncated, ends with EOT


def test_special_ids_and_decode(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 0)
    assert len(tokenizer) == tokenizer.vocab_size == 49408
    ids = tokenizer("Naïve café 東京!")["input_ids"]
    assert tokenizer.decode(ids[1:-1]) == "naïve café 東京 !"  # CLIP BPE splits punctuation into its own word


def test_padding_longest_is_a_prefix_of_max_length(tokenizer):
    longest = tokenizer(TEXTS[:3], padding=True)["input_ids"]
    full = tokenizer(TEXTS[:3], padding="max_length")["input_ids"]
    assert all(len(row) == len(longest[0]) < 77 for row in longest)
    assert [row[: len(longest[0])] for row in full] == longest


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "bpe_simple_vocab_16e6.txt.gz").is_file()  # the folder works without open_clip
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, Dinov3HfDinoTxtTokenizer)
    assert loaded(TEXTS, padding="max_length", truncation=True)["input_ids"] == tokenizer(
        TEXTS, padding="max_length", truncation=True
    )["input_ids"]


def test_too_long_without_truncation_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match=r"372 tokens .* context length 77 .* truncation=True"):
        tokenizer(TEXTS[-1])
    with pytest.raises(ValueError, match="truncation=True"):
        tokenizer(TEXTS[-1], padding="max_length", max_length=77)
    assert len(tokenizer(TEXTS[-1], truncation=True)["input_ids"]) == 77
