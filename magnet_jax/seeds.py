"""User seeds -> JAX PRNG keys, for every seed in [0, 2**64).

``jax.random.key(seed)`` keeps only the low 32 bits of a seed unless 64-bit mode is on, so seeds 0
and 2**32 gave the same samples, and a seed of 2**63 or more raised an OverflowError deep in JAX.
``seed_key`` keeps ``jax.random.key(seed)`` for seeds below 2**32 (so results stay what they were)
and folds the high 32 bits in for larger ones; anything outside [0, 2**64) is refused.
"""
from __future__ import annotations

import jax

SEED_LIMIT = 2**64


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2**64), or a ValueError that says what was wrong."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name}={seed!r}: expected an integer in [0, 2**64)")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name}={seed}: outside [0, 2**64)")
    return seed


def seed_key(seed: int) -> jax.Array:
    """A PRNG key for any seed in [0, 2**64); distinct seeds give distinct keys."""
    seed = check_seed(seed)
    low, high = seed & 0xFFFF_FFFF, seed >> 32
    key = jax.random.key(low)
    return jax.random.fold_in(key, high) if high else key
