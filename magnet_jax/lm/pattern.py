"""MusicGen's delay pattern: codebook k of frame t is modelled at sequence step t + delays[k] + 1.

audiocraft's ``DelayedPatternProvider`` (flatten_first 0, empty_initial 0): the sequence starts
with one step of special tokens, then step s holds, for each codebook k, the code of frame
s - 1 - delays[k], or the special token where that frame is outside [0, T). With delays
[0, 1, 2, 3] and T = 500 the sequence has T + max(delays) + 1 = 504 steps, and an autoregressive
model predicts step s + 1 from steps 0..s, so the codebooks of one frame come out over four
consecutive steps, coarse first. Stereo models use delays [0, 0, 1, 1, 2, 2, 3, 3] over the two
channels' interleaved codebooks.

Pure functions of static shapes, usable inside jit (the index tables are numpy constants).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class DelayPattern:
    delays: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        if not self.delays or min(self.delays) < 0 or list(self.delays) != sorted(self.delays):
            raise ValueError(f"delays {list(self.delays)}: need non-negative, non-decreasing delays, "
                             f"one per codebook (audiocraft asserts the same)")

    @property
    def n_q(self) -> int:
        return len(self.delays)

    def num_steps(self, frames: int) -> int:
        """Sequence steps for ``frames`` frames: one special step, then frames + max delay."""
        return frames + max(self.delays) + 1

    def frame_of_step(self, steps: int) -> np.ndarray:
        """int [K, S]: the frame codebook k holds at step s (negative or >= T where invalid)."""
        return np.arange(steps)[None, :] - 1 - np.asarray(self.delays)[:, None]

    def valid(self, frames: int) -> np.ndarray:
        """bool [K, S]: where the sequence holds a code (elsewhere the special token)."""
        f = self.frame_of_step(self.num_steps(frames))
        return (f >= 0) & (f < frames)

    def first_step_with_frame(self, frame: int) -> int:
        """The first step that holds a code of ``frame`` (audiocraft's get_first_step_with_timesteps):
        a prompt of ``frame`` frames is known up to this step, generation starts there."""
        return frame + min(self.delays) + 1

    def forward_passes(self, frames: int, prompt_frames: int = 0) -> int:
        """LM calls a generation takes (a prefill, then one per step): the paper's latency unit."""
        return self.num_steps(frames) - self.first_step_with_frame(prompt_frames)

    def build(self, codes: jax.Array, frames: int, special: int) -> jax.Array:
        """codes [B, K, P] (P <= frames known frames) -> sequence [B, K, S] with the special token at
        invalid positions and ``special`` also where a frame is not known yet; returns int32."""
        B, K, P = codes.shape
        f = self.frame_of_step(self.num_steps(frames))                      # [K, S]
        known = (f >= 0) & (f < P)
        idx = np.clip(f, 0, max(P - 1, 0))
        gathered = jnp.take_along_axis(codes.astype(jnp.int32), jnp.broadcast_to(idx, (B,) + idx.shape), axis=2) \
            if P else jnp.full((B, K, idx.shape[1]), special, jnp.int32)
        return jnp.where(known[None], gathered, special).astype(jnp.int32)

    def revert(self, sequence: jax.Array, frames: int) -> jax.Array:
        """sequence [B, K, S] -> codes [B, K, frames]: codebook k of frame t from step t + 1 + delays[k]."""
        steps = np.arange(frames)[None, :] + 1 + np.asarray(self.delays)[:, None]       # [K, T]
        B = sequence.shape[0]
        return jnp.take_along_axis(sequence, jnp.broadcast_to(steps, (B,) + steps.shape), axis=2)
