"""MusicGen's autoregressive sampler, every step of a generation in one compiled program.

audiocraft's ``LMModel.generate`` runs a Python loop of one streaming forward per sequence step.
Here the whole generation is one ``jax.jit``: the delay-pattern sequence and a preallocated KV
cache (``MusicGenLM.init_cache``) go through ``lax.fori_loop`` as a ``DecodeState`` dataclass,
a known prompt is written into the cache in one prefill, and the text condition's
cross-attention keys / values are projected once. Same rules as the reference:

- step s's logits predict step s + 1; the sequence starts with a step of special tokens, and
  generation starts at the first step holding a frame the prompt does not know
  (``DelayPattern.first_step_with_frame``);
- CFG: the conditional rows and their null conditions in one batch (the null half skips
  cross-attention: its output is exactly zero), logits = null + (cond - null) * cfg_coef;
  ``two_step_cfg`` runs the halves with separate paddings in audiocraft, and since the null
  condition is all zeros that is the same computation here (accepted, documented);
- sampling: softmax(logits / temperature), then top-p if > 0, else top-k if > 0 (default 250),
  else the full distribution; greedy (argmax) when ``use_sampling`` is False or the
  temperature is 0;
- a sampled token is written only where the pattern holds a code not given by the prompt;
  elsewhere the special token (or the prompt's code) stays.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.sharding import Mesh

from magnet_jax.lm.musicgen import MusicGenLM
from magnet_jax.lm.sampler import kth_largest, run_on_mesh, sample_from_weights, split_placed, top_p_threshold
from magnet_jax.modules.transformer import KVCache
from magnet_jax.train import sharding


@dataclasses.dataclass(frozen=True)
class ARSamplerConfig:
    """Decoding parameters; defaults are audiocraft's ``MusicGen.set_generation_params``."""
    use_sampling: bool = True       # False: greedy (argmax) decoding
    top_k: int = 250
    top_p: float = 0.0              # > 0 takes precedence over top_k
    temperature: float = 1.0
    cfg_coef: float = 3.0
    two_step_cfg: bool = False      # same computation here (see the module docstring)

    def validate(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature {self.temperature} must be a finite number >= 0 (0: greedy)")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p {self.top_p} must be in [0, 1] (0 disables it)")
        if self.top_k < 0:
            raise ValueError(f"top_k {self.top_k} must be >= 0 (0 disables it)")
        if not math.isfinite(self.cfg_coef):
            raise ValueError(f"cfg_coef {self.cfg_coef} must be a finite number")


@struct.dataclass
class DecodeState:
    """What one decoding step hands the next."""
    sequence: jax.Array   # int32 [B, K, S]: the delay-pattern sequence, special where not written
    cache: KVCache        # per layer, self-attention keys and values [R, H, S, Dh] (R = 2B with CFG)
    logits: jax.Array     # float32 [B, K, card]: the guided logits of the next step
    key: jax.Array


def sample_step(logits: jax.Array, key: jax.Array, cfg: ARSamplerConfig) -> jax.Array:
    """One token per codebook from guided logits [B, K, card] -> int32 [B, K]."""
    if not cfg.use_sampling or cfg.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    probs = jax.nn.softmax(logits / cfg.temperature, axis=-1)
    if cfg.top_p > 0.0:
        weights = jnp.where(probs >= top_p_threshold(probs, cfg.top_p)[..., None], probs, 0.0)
    elif cfg.top_k > 0:
        weights = jnp.where(probs >= kth_largest(probs, min(cfg.top_k, probs.shape[-1]))[..., None], probs, 0.0)
    else:
        weights = probs
    return sample_from_weights(key, weights)


def _guide(logits: jax.Array, batch: int, cfg_coef: float, guided: bool) -> jax.Array:
    """[R, K, 1, card] logits of a step -> [B, K, card], with CFG when the rows are doubled."""
    logits = logits[:, :, -1]
    if not guided:
        return logits
    cond, null = logits[:batch], logits[batch:]
    return null + (cond - null) * cfg_coef


def generate_sequence(model: MusicGenLM, cond: jax.Array | None, prompt: jax.Array, key: jax.Array,
                      cfg: ARSamplerConfig, frames: int) -> jax.Array:
    """Codes [B, K, frames] continuing ``prompt`` [B, K, P] (P may be 0) under ``cond`` [B, S, D]
    (None: unconditional, no CFG)."""
    lm = model.cfg
    pattern = lm.pattern
    B, K, P = prompt.shape
    steps = pattern.num_steps(frames)
    start = pattern.first_step_with_frame(P)
    guided = cond is not None
    rows = 2 * B if guided else B
    cross_kv = model.project_condition(cond)
    sequence = pattern.build(prompt, frames, lm.mask_id)
    known = pattern.frame_of_step(steps) < P                      # prompt codes and the start step
    writable = jnp.asarray(pattern.valid(frames) & ~known)        # [K, S]

    weights = model.decode_weights()          # sliced once, outside the loop

    def forward(columns, cache, position):
        both = jnp.concatenate([columns, columns]) if guided else columns
        logits, cache = model.decode(both, cache, position, cross_kv, weights)
        return _guide(logits, B, cfg.cfg_coef, guided), cache

    logits, cache = forward(sequence[..., :start], model.init_cache(rows, steps), 0)   # prefill

    def write(state: DecodeState, column: jax.Array) -> DecodeState:
        key, sub = jax.random.split(state.key)
        token = sample_step(state.logits, sub, cfg)                                    # [B, K]
        current = jax.lax.dynamic_index_in_dim(state.sequence, column, axis=2, keepdims=False)
        here = jax.lax.dynamic_index_in_dim(writable, column, axis=1, keepdims=False)  # [K]
        sequence = jax.lax.dynamic_update_index_in_dim(
            state.sequence, jnp.where(here[None], token, current), column, axis=2)
        return state.replace(sequence=sequence, key=key)

    def step(column, state: DecodeState) -> DecodeState:
        state = write(state, column)
        col = jax.lax.dynamic_slice_in_dim(state.sequence, column, 1, axis=2)
        logits, cache = forward(col, state.cache, column)
        return state.replace(cache=cache, logits=logits)

    state = DecodeState(sequence, cache, logits, key)
    state = jax.lax.fori_loop(start, steps - 1, step, state)
    state = write(state, steps - 1)
    return pattern.revert(state.sequence, frames)


class MusicGenSampler:
    """Compiles ``generate_sequence`` once per (config, batch, frames, prompt length) and runs it
    on a mesh (parameters by the logical-axis rules, the batch over the data axes)."""

    def __init__(self, model: MusicGenLM, mesh: Mesh | None = None):
        self.cfg = model.cfg
        self.mesh = mesh
        self.graphdef, self.state = split_placed(model, mesh)
        self._compiled: dict = {}

    def _function(self, cfg: ARSamplerConfig, frames: int, has_cond: bool):
        sig = (cfg, frames, has_cond)
        if sig not in self._compiled:
            graphdef = self.graphdef

            def run(state, cond, prompt, key):
                return generate_sequence(nnx.merge(graphdef, state), cond, prompt, key, cfg, frames)

            kwargs = {}
            if self.mesh is not None:
                batch = sharding.logical_sharding(self.mesh, "batch", None, None)
                kwargs = dict(in_shardings=(sharding.state_shardings(self.state, self.mesh),
                                            batch if has_cond else None, batch, sharding.logical_sharding(self.mesh)),
                              out_shardings=batch)
            self._compiled[sig] = jax.jit(run, **kwargs)
        return self._compiled[sig]

    def generate(self, key: jax.Array, *, frames: int, cond: jax.Array | None = None,
                 prompt: jax.Array | None = None, num_samples: int | None = None,
                 config: ARSamplerConfig = ARSamplerConfig()) -> jax.Array:
        """Codes [B, K, frames] (the prompt's frames included). ``cond``: the projected, masked
        text condition [B, S, D] (None: unconditional); ``prompt``: codes [B, K, P] to continue."""
        config.validate()
        batch = (cond.shape[0] if cond is not None else prompt.shape[0] if prompt is not None
                 else int(num_samples or 1))
        if num_samples is not None and num_samples != batch:
            raise ValueError(f"num_samples={num_samples} disagrees with the batch of cond/prompt ({batch})")
        prompt_arr = (jnp.zeros((batch, self.cfg.n_q, 0), jnp.int32) if prompt is None
                      else jnp.asarray(prompt, jnp.int32))
        if prompt_arr.shape[:2] != (batch, self.cfg.n_q):
            raise ValueError(f"prompt has shape {tuple(prompt_arr.shape)}; expected [batch={batch}, n_q={self.cfg.n_q}, P]")
        if not 0 <= prompt_arr.shape[-1] < frames:
            raise ValueError(f"a prompt of {prompt_arr.shape[-1]} frames leaves nothing of {frames} frames to generate")
        if cond is not None and (cond.ndim != 3 or cond.shape[0] != batch or cond.shape[2] != self.cfg.dim):
            raise ValueError(f"cond has shape {tuple(cond.shape)}; expected [batch={batch}, S, dim={self.cfg.dim}]")
        if self.mesh is not None:
            sharding.check_batch_divides(batch, self.mesh)
        fn = self._function(config, int(frames), cond is not None)
        cond_arr = None if cond is None else jnp.asarray(cond, jnp.float32)
        return run_on_mesh(self.mesh, fn, self.state, cond_arr, prompt_arr, key)
