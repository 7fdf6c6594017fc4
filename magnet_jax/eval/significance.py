"""Chance accuracy, exactly, and a permutation test: is a model's adherence above chance?

Chance is what a model that ignores the text scores on this prompt set: every generation scored
against the *other* prompts' attributes. Both numbers below come from one matrix per attribute
row, ``match[i, j]`` = does generation i match prompt j's attribute (NaN where prompt j does not
state it):

- **chance**, exactly: under a uniformly drawn derangement (no prompt keeps its own), generation
  i meets each other prompt j with probability 1/(n-1). So the expected numbers of correct and
  of scored pairs are the off-diagonal means of ``match``, with no sampling; chance is their
  ratio (exactly the expected accuracy when every prompt states the attribute).
- **p-value**: the share of random derangements that score at least the generated accuracy,
  ``(1 + count) / (1 + permutations)``, the usual Monte Carlo permutation p-value (never 0).
  It answers "could a text-blind model with these very generations score this well by luck?".

Several runs (seeds, or prompt sets) pool: the statistic is the total correct over all runs
and the null draws an independent derangement in each run. This is how the README's 3-seed
table is made (``magnet-jax eval-summary``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from magnet_jax.eval import analysers as A

Run = tuple[Sequence[Mapping[str, Any]], Sequence[A.Analysis]]     # (prompt attributes, analyses)
PERMUTATIONS = 2000
ABOVE_CHANCE_P = 0.01          # the README and reports call a row "above chance" below this p-value


def match_matrix(attributes: Sequence[Mapping[str, Any]], analyses: Sequence[A.Analysis], row: str) -> np.ndarray:
    """``[n, n]``: 1.0 where analysis i matches prompt j on ``row``, 0.0 where not, NaN where prompt
    j does not state the attribute (``report.RULES`` decides what matches)."""
    from magnet_jax.eval.report import RULES
    _, keys, rule = RULES[row]
    out = np.full((len(analyses), len(attributes)), np.nan)
    for j, prompt in enumerate(attributes):
        if all(k in prompt for k in keys):
            out[:, j] = [bool(rule(prompt, a)) for a in analyses]
    return out


def derangements(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[count, n]`` permutations of range(n) without a fixed point, uniform (by rejection)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 prompts, got {n}")
    out = np.empty((count, n), np.int64)
    filled = 0
    while filled < count:
        perms = rng.permuted(np.tile(np.arange(n), (2 * (count - filled) + 8, 1)), axis=1)
        good = perms[~np.any(perms == np.arange(n), axis=1)][:count - filled]
        out[filled:filled + len(good)] = good
        filled += len(good)
    return out


def _off_diagonal_mean(m: np.ndarray) -> float:
    n = m.shape[0]
    return float(m[~np.eye(n, dtype=bool)].mean())


def permutation_test(matrices: Sequence[np.ndarray], permutations: int = PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """Generated accuracy, exact chance and permutation p-value for one attribute row pooled over
    runs (one square ``match`` matrix per run)."""
    rng = np.random.default_rng(seed)
    correct = scored = exp_correct = exp_scored = 0.0
    null_correct = np.zeros(permutations)
    null_scored = np.zeros(permutations)
    for m in matrices:
        n = m.shape[0]
        diag = np.diag(m)
        correct += np.nansum(diag)
        scored += np.sum(~np.isnan(diag))
        hit, stated = np.nan_to_num(m), (~np.isnan(m)).astype(float)
        exp_correct += n * _off_diagonal_mean(hit)
        exp_scored += n * _off_diagonal_mean(stated)
        perms = derangements(n, permutations, rng)
        rows = np.arange(n)[None, :]
        null_correct += hit[rows, perms].sum(1)
        null_scored += stated[rows, perms].sum(1)
    if scored == 0:
        return {"generated": None, "chance": None, "p_value": None, "n": 0}
    generated = correct / scored
    null = null_correct / np.maximum(null_scored, 1)
    return {"generated": float(generated), "chance": float(exp_correct / exp_scored),
            "p_value": float((1 + np.sum(null >= generated - 1e-12)) / (1 + permutations)), "n": int(scored)}


def pooled_accuracy(runs: Sequence[Run], permutations: int = PERMUTATIONS, seed: int = 0) -> dict[str, dict]:
    """Per attribute row of ``report.RULES``: :func:`permutation_test` over ``runs``."""
    from magnet_jax.eval.report import RULES
    return {row: permutation_test([match_matrix(attrs, an, row) for attrs, an in runs], permutations, seed)
            for row in RULES}


def paired_sign_test(baseline: Sequence[bool | None], other: Sequence[bool | None]) -> dict[str, Any]:
    """Is ``other`` right more (or less) often than ``baseline`` on the same generations' prompts?

    Why this test: two models evaluated on the same prompts and seeds make paired outcomes, and
    only the pairs where exactly one is right carry evidence (McNemar's exact form: under "no
    difference" each such pair is a fair coin). Pairs where either side is None (the prompt does
    not state the attribute) are left out. Returns the discordant counts and the exact binomial
    p-values: ``p_better`` (one-sided, other right more often), ``p_worse`` and ``p_two_sided``."""
    import math
    if len(baseline) != len(other):
        raise ValueError(f"paired outcomes differ in length: {len(baseline)} and {len(other)}")
    pairs = [(a, b) for a, b in zip(baseline, other) if a is not None and b is not None]
    only_baseline = sum(1 for a, b in pairs if a and not b)
    only_other = sum(1 for a, b in pairs if b and not a)
    n = only_baseline + only_other

    def tail(k: int) -> float:                                     # P(X >= k), X ~ Binomial(n, 1/2)
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n if n else 1.0

    p_better, p_worse = tail(only_other), tail(only_baseline)
    return {"pairs": len(pairs), "only_baseline": only_baseline, "only_other": only_other,
            "p_better": p_better, "p_worse": p_worse, "p_two_sided": min(1.0, 2 * min(p_better, p_worse))}
