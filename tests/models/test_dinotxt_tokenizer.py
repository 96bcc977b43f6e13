"""The dino.txt tokenizer gives open_clip's SimpleTokenizer ids (also for special tokens typed in a
text), round-trips through AutoTokenizer, and refuses over-long text without truncation; the text tower pools at the
first EOT, as the official one."""

from __future__ import annotations

import re

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from transformers import AutoTokenizer

from dinov3_hf import Dinov3HfDinoTxtConfig, Dinov3HfDinoTxtTokenizer, Dinov3HfViTConfig
from dinov3_hf.models.dinotxt.text_tower import TextTransformer

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


# -- special tokens typed in a text ---------------------------------------------------------------------------------

# The official tokenizer (`dinov3/thirdparty/CLIP/clip/simple_tokenizer.py`, OpenAI CLIP's) names its special tokens
# "<|startoftext|>" / "<|endoftext|>"; open_clip's copy names the same ids "<start_of_text>" / "<end_of_text>" and
# otherwise works alike (special names first in the word pattern, mapped to themselves by the BPE cache). Renaming the
# literals (case-insensitively: texts are lower-cased first) turns open_clip into an independent oracle.
RECOGNISED = [
    "<|startoftext|>a photo of a cat",
    "a photo <|endoftext|> of a cat",
    "a photo of a cat<|endoftext|>",
    "<|endoftext|>",
    "a<|endoftext|>b <|startoftext|><|endoftext|> c",
    "<|EndOfText|> capitals <|STARTOFTEXT|>",
    " ".join(f"word{i}" for i in range(40)) + " <|endoftext|> tail",  # truncated after the literal
    "a " * 74 + "<|endoftext|> more",  # truncated to SOT, 74 x a, EOT (the literal), EOT (for "more")
]
# a run of other symbols before it swallows "<|": the official pattern then sees no special token, like open_clip
SWALLOWED = ["a cat.<|endoftext|>dog", "!!<|startoftext|>", "(<|endoftext|>)"]


def open_clip_ids(texts: list[str], rename: bool) -> torch.Tensor:
    if rename:
        texts = [
            re.sub(r"<\|endoftext\|>", "<end_of_text>", re.sub(r"<\|startoftext\|>", "<start_of_text>", t, flags=re.I),
                   flags=re.I)
            for t in texts
        ]
    return SimpleTokenizer()(texts)


def test_literal_special_tokens_get_the_official_ids(tokenizer):
    ours = tokenizer(RECOGNISED, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    torch.testing.assert_close(ours, open_clip_ids(RECOGNISED, rename=True), rtol=0, atol=0)
    a, cat = tokenizer.convert_tokens_to_ids(["a</w>", "cat</w>"])
    hand = tokenizer("a <|startoftext|> cat<|endoftext|>")["input_ids"]  # by hand: SOT a SOT cat EOT EOT
    assert hand == [49406, a, 49406, cat, 49407, 49407]
    assert ours[1].tolist().index(49407) == 3  # SOT a photo EOT(literal)
    assert ours[-1, 75:].tolist() == [49407, 49407] and ours[-1, 1:75].tolist() == [a] * 74

    swallowed = tokenizer(SWALLOWED, padding="max_length", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(swallowed, open_clip_ids(SWALLOWED, rename=False), rtol=0, atol=0)
    assert [(row >= 49406).sum().item() for row in swallowed] == [2, 2, 2]  # only the SOT and EOT added around


def test_text_tower_pools_at_the_first_eot(tokenizer):
    vit = Dinov3HfViTConfig.from_preset("vits16", hidden_size=32, num_attention_heads=2, num_hidden_layers=1)
    config = Dinov3HfDinoTxtConfig(
        backbone_config=vit, text_hidden_size=16, text_num_hidden_layers=2, text_num_attention_heads=2
    )
    torch.manual_seed(0)
    tower = TextTransformer(config).eval()
    with torch.no_grad():
        tower.positional_embedding.normal_()
    texts = ["a cat <|endoftext|> on a mat", "<|endoftext|> a dog", "a bird"]
    ids = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    first_eot = [3, 1, 3]  # by hand: SOT a cat EOT ... / SOT EOT ... / SOT a bird EOT (its only EOT)
    assert ids[0, -1].item() == 49407 and ids[2, 3].item() == 49407 and ids[2, 4].item() == 0  # second EOT; padding
    hidden = {}
    tower.ln_final.register_forward_hook(lambda module, args, out: hidden.update(all=out))
    with torch.no_grad():
        pooled = tower(ids)
        torch.testing.assert_close(pooled, hidden["all"][torch.arange(3), first_eot], rtol=0, atol=0)
        assert not torch.allclose(pooled[0], hidden["all"][0, -1])  # not the last EOT
        # causal attention: the tokens after the first EOT do not change the embedding
        changed = ids.clone()
        changed[0, 4:-1] = torch.randint(1, 49406, (changed.shape[1] - 5,), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(tower(changed)[0], pooled[0], rtol=0, atol=0)
