"""The dino.txt tokenizer: CLIP's byte-level BPE (`dinov3/thirdparty/CLIP/clip/simple_tokenizer.py`).

Per text: ftfy fix + double HTML unescape, white space collapsed, lower-cased; split into words by the CLIP pattern
(the two special tokens literally, contractions, letter runs, single digits, runs of other symbols); each word's UTF-8
bytes are mapped to printable characters and merged by the 48,894 ranked BPE merges of `bpe_simple_vocab_16e6.txt.gz`,
the last symbol of a word carrying `</w>`. Ids: 256 byte symbols, the same 256 with `</w>`, one per merge, then
`<|startoftext|>` = 49406 and `<|endoftext|>` = 49407. A special token typed in a text keeps its id, as in the official
tokenizer, unless a run of other symbols swallows its "<|" (e.g. "cat.<|endoftext|>" gives ".<|", "endoftext", "|>").
A sequence is [SOT] + BPE ids + [EOT]; with truncation it keeps the first `context_length - 2` BPE ids (so the last
id stays EOT), and padding appends id 0.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import ftfy
import regex
from transformers.tokenization_python import PythonBackend

VOCAB_FILES_NAMES = {"merges_file": "bpe_simple_vocab_16e6.txt.gz"}
NUM_MERGES = 49152 - 256 - 2
SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"
PAD_TOKEN = "!"  # id 0: dino.txt pads with zeros
END_OF_WORD = "</w>"
CONTEXT_LENGTH = 77
# the official pattern: the special tokens first (one literal in a text is one word, which the BPE cache maps to itself)
_WORDS = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE
)


def default_merges_file() -> Path:
    """The CLIP BPE file shipped by open-clip-torch (located without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The CLIP BPE vocabulary comes with open-clip-torch; install it (`pip install open-clip-torch`) or pass "
            "merges_file=<path to bpe_simple_vocab_16e6.txt.gz>."
        )
    return Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILES_NAMES["merges_file"]


def byte_symbols() -> dict[int, str]:
    """Byte -> one printable character: the printable Latin-1 bytes stand for themselves, the other 68 bytes for
    chr(256), chr(257), ... in byte order. The insertion order (printable first) is the order of the first ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


def clean_text(text: str) -> str:
    """ftfy fix, HTML unescape (twice), white space collapsed to single spaces, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class Dinov3HfDinoTxtTokenizer(PythonBackend):
    r"""CLIP byte-level BPE tokenizer of dino.txt, with zero padding and a 77-token context.

    Args:
        merges_file: the gzipped BPE file (`bpe_simple_vocab_16e6.txt.gz`); default the copy shipped by open-clip-torch.
        context_length: the text tower's context (`model_max_length`). A text longer than this raises a ValueError
            unless called with `truncation=True`.

    Call as `tokenizer(texts, padding="max_length", truncation=True)` for the official `[B, 77]` ids; `padding=True`
    pads to the longest text instead, which gives the same text embeddings (causal attention, pooling at EOT).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        merges_file: str | os.PathLike | None = None,
        context_length: int = CONTEXT_LENGTH,
        bos_token: str = SOT_TOKEN,
        eos_token: str = EOT_TOKEN,
        pad_token: str = PAD_TOKEN,
        **kwargs: Any,
    ):
        self.merges_file = str(merges_file or default_merges_file())
        with gzip.open(self.merges_file, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : NUM_MERGES + 1]  # the first line is a version header
        merges = [tuple(line.split()) for line in lines]
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.merge_ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = byte_symbols()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self._word_cache: dict[str, list[str]] = {SOT_TOKEN: [SOT_TOKEN], EOT_TOKEN: [EOT_TOKEN]}
        kwargs.setdefault("model_max_length", context_length)
        kwargs.setdefault("split_special_tokens", True)  # literal special tokens are found by `_WORDS`, not by HF
        kwargs.setdefault("special_tokens_pattern", "bos_eos")
        super().__init__(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    def bpe(self, word: str) -> list[str]:
        """Merge the symbols of one word: repeatedly join every occurrence of the best-ranked adjacent pair."""
        if word in self._word_cache:
            return self._word_cache[word]
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            pairs = set(zip(parts, parts[1:]))
            best = min(pairs, key=lambda pair: self.merge_ranks.get(pair, NUM_MERGES))
            if best not in self.merge_ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._word_cache[word] = parts
        return parts

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        tokens: list[str] = []
        for word in _WORDS.findall(clean_text(text)):
            tokens.extend(self.bpe("".join(self.byte_encoder[b] for b in word.encode("utf-8"))))
        return tokens

    def _convert_token_to_id(self, token: str) -> int:
        return self.encoder[token]

    def _convert_id_to_token(self, index: int) -> str:
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Words end at `</w>`; their symbols map back to bytes, decoded as UTF-8, joined by single spaces."""
        words = "".join(tokens).split(END_OF_WORD)
        decoded = (bytearray(self.byte_decoder[c] for c in w).decode("utf-8", errors="replace") for w in words)
        return " ".join(w for w in decoded if w)

    def _eventual_warn_about_too_long_sequence(self, ids: list[int], max_length: int | None, verbose: bool) -> None:
        """Raise (instead of transformers' warning) when a sequence exceeds the text tower's context."""
        if len(ids) > self.model_max_length:
            raise ValueError(
                f"A text has {len(ids)} tokens (with SOT and EOT), more than the context length "
                f"{self.model_max_length} of the dino.txt text tower. Call the tokenizer with truncation=True (the "
                "official behaviour: keep the first tokens and end with EOT), or shorten the text."
            )

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["merges_file"]
        target = Path(save_directory) / name
        if Path(self.merges_file).resolve() != target.resolve():
            shutil.copyfile(self.merges_file, target)
        return (str(target),)
