"""Host-side tokenization (numpy out), matching Hugging Face's tokenizers id for id.

Two backends, chosen the way `transformers` chooses them for a folder:

- `tokenizer.json` present: the Rust `tokenizers` library reads it. This is the file every Hub
  T5 and BERT repo ships, and the same engine `transformers` runs, so ids agree by construction;
  we only undo the file's own fixed padding/truncation (transformers overrides it per call too).
- only `spiece.model` (T5): `sentencepiece` encodes each stretch of text between special tokens
  (`</s>`, `<pad>`, `<unk>`, `<extra_id_N>`), then `</s>` is appended. This is what the slow
  T5 tokenizer did and what transformers' conversion of the same file reproduces.

Batches are padded to the longest row with the pad id and a 0/1 mask, the way the reference
calls `tokenizer(texts, padding=True)`: padding length changes MAGNeT's cross-attention (padded
positions become zero vectors that still take softmax mass), so it is reproduced exactly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from magnet_jax.text.files import ModelFilesError, read_optional_json


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and attention mask, both int32 [B, S], right-padded to the longest row."""
    ids: np.ndarray
    mask: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1)


class TextTokenizer:
    """Base: subclasses implement `encode` for one string (special tokens included)."""

    pad_id: int = 0

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenize a batch and pad it to its longest row (the reference's `padding=True`)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of strings, not a single string")
        rows = self.encode_many(list(texts))
        return pad_rows(rows, self.pad_id)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Right-pad token rows to the longest with `pad_id`; mask is 1 on real tokens."""
    if not rows:
        raise ValueError("cannot tokenize an empty batch: pass at least one text")
    width = max(max(len(r) for r in rows), 1)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return TokenBatch(ids, mask)


class JsonTokenizer(TextTokenizer):
    """A `tokenizer.json` run by the Rust `tokenizers` library (T5, BERT, ...)."""

    def __init__(self, path: Path, pad_token: str, max_length: int | None = None):
        from tokenizers import Tokenizer
        self.backend = Tokenizer.from_file(str(path))
        self.backend.no_padding()
        self.backend.no_truncation()
        if max_length is not None:
            self.backend.enable_truncation(max_length)
        pad_id = self.backend.token_to_id(pad_token)
        if pad_id is None:
            raise ModelFilesError(f"{path} has no pad token {pad_token!r}; check its "
                                  f"tokenizer_config.json / special_tokens_map.json")
        self.pad_id = pad_id
        self.max_length = max_length

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text).ids

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts))]


class SentencePieceT5Tokenizer(TextTokenizer):
    """T5 from `spiece.model`: sentencepiece between special tokens, then `</s>`.

    Sentinel ids follow T5's convention: `<extra_id_i>` is id `vocab + extra_ids - 1 - i`.
    """

    def __init__(self, path: Path, extra_ids: int = 100, max_length: int | None = None,
                 pad_token: str = "<pad>", eos_token: str = "</s>", unk_token: str = "<unk>"):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        size = self.sp.get_piece_size()
        self.special = {tok: self.sp.piece_to_id(tok) for tok in (pad_token, eos_token, unk_token)}
        self.special.update({f"<extra_id_{i}>": size + extra_ids - 1 - i for i in range(extra_ids)})
        self.pad_id = self.special[pad_token]
        self.eos_id = self.special[eos_token]
        self.max_length = max_length
        pattern = "|".join(re.escape(t) for t in sorted(self.special, key=len, reverse=True))
        self._split = re.compile(f"({pattern})")

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._split.split(text):
            if piece in self.special:
                ids.append(self.special[piece])
            elif piece:
                ids.extend(self.sp.encode(piece))
        if self.max_length is not None:
            ids = ids[:self.max_length - 1]
        return ids + [self.eos_id]


def load_tokenizer(folder: Path, default_pad: str, max_length: int | None = None) -> TextTokenizer:
    """The tokenizer of a Hugging Face folder: tokenizer.json first, else spiece.model (T5)."""
    config = read_optional_json(folder / "tokenizer_config.json")
    special = read_optional_json(folder / "special_tokens_map.json")
    pad = _token_text(config.get("pad_token") or special.get("pad_token") or default_pad)
    if (folder / "tokenizer.json").is_file():
        return JsonTokenizer(folder / "tokenizer.json", pad, max_length)
    if (folder / "spiece.model").is_file():
        return SentencePieceT5Tokenizer(folder / "spiece.model",
                                        extra_ids=int(config.get("extra_ids", 100)),
                                        max_length=max_length, pad_token=pad)
    raise ModelFilesError(f"no tokenizer in {folder}: place tokenizer.json "
                          f"(or spiece.model for T5) there")


def _token_text(token: str | dict) -> str:
    """special_tokens_map.json stores a token either as text or as {"content": text, ...}."""
    return token["content"] if isinstance(token, dict) else token
