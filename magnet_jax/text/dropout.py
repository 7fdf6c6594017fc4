"""Training-time condition dropout, with the reference's semantics (host side, on texts).

- CFG dropout (audiocraft `ClassifierFreeGuidanceDropout`): ONE draw per batch; with
  probability p every condition of the batch becomes null, which teaches the LM the
  unconditional distribution that classifier-free guidance subtracts at sampling time.
  MAGNeT uses p = 0.3 (music) and 0.1 (audio). With a single text attribute, audiocraft's
  `AttributeDropout` is the same operation with its own p, so `cfg_dropout` serves both.
- Word dropout (`T5Conditioner.tokenize`, `word_dropout`): each space-separated word is kept
  when a uniform draw is >= p; a text that loses every word becomes "" and so null.

Both work on any list whose None entries mean "null": texts for on-the-fly encoding, or
precomputed per-prompt states (CFG dropout only: word dropout must see the words).
"""
from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

T = TypeVar("T")


class RandomSource(Protocol):
    """Anything with `.random()` returning a float in [0, 1): random.Random, numpy Generator."""

    def random(self) -> float: ...


def _check_p(p: float, what: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} probability must be in [0, 1], got {p}")


def cfg_dropout(conditions: Sequence[T | None], p: float, rng: RandomSource) -> list[T | None]:
    """Null the whole batch with probability p (one draw), else return it unchanged."""
    _check_p(p, "CFG dropout")
    conditions = list(conditions)
    if p > 0 and rng.random() < p:
        return [None] * len(conditions)
    return conditions


def word_dropout(texts: Sequence[str], p: float, rng: RandomSource) -> list[str]:
    """Drop each word independently with probability p (draws in the reference's order).

    Every entry consumes one draw per `split(" ")` piece, "" included, exactly as audiocraft
    does with Python's global `random`: seeding `random.Random(s)` reproduces its choices.
    """
    _check_p(p, "word dropout")
    return [" ".join(w for w in text.split(" ") if rng.random() >= p) for text in texts]
