"""The codebook LMs' shared body, and the MAGNeT language model.

``CodebookLM`` holds what MAGNeT and MusicGen (``magnet_jax.lm.musicgen``) share, in one place:
K codebook embeddings, a pre-norm transformer, an output norm and K heads. MAGNeT's model:

    x = sum_k emb[k](codes[:, k]) + sinusoidal(positions)        (mask id = card: one extra row;
                                                                  RoPE configs rotate q, k instead)
    h = out_norm(Transformer(x, band bias for stages > 0, text condition))
    logits[:, k] = h @ linears[k]                                  [B, K, T, card]

Stage s predicts codebook s; for s > 0 self-attention is restricted to a band of
``subcodes_context`` frames (codebooks above the first are local refinements). The sampler and
the loss only need the head of the active stage, so ``stage_logits`` computes just that one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.lm.config import LMConfig, TokenLMConfig
from magnet_jax.modules.attention import LocalBand, band_bias
from magnet_jax.modules.embedding import sinusoidal_embedding
from magnet_jax.modules.layers import LayerNorm, gaussian_std, param, truncated_normal
from magnet_jax.modules.transformer import Transformer
from magnet_jax.train.sharding import constrain


class CodebookLM(nnx.Module):
    """Embeddings, transformer, out_norm and heads; the parameter names map 1:1 to audiocraft's
    (emb.k, transformer.layers.i, out_norm, linears.k)."""

    def __init__(self, cfg: TokenLMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        std = gaussian_std(cfg.dim)
        self.emb = param(rngs, truncated_normal(std), (cfg.n_q, cfg.card + 1, cfg.dim),
                         ("codebooks", "emb_vocab", "embed"))
        self.transformer = Transformer(cfg, rngs=rngs)
        self.out_norm = LayerNorm(cfg.dim, cfg.norm_eps)
        self.linears = param(rngs, truncated_normal(std), (cfg.n_q, cfg.dim, cfg.card),
                             ("codebooks", "embed", "vocab"))

    # -- pieces ---------------------------------------------------------------------------
    def embed(self, codes: jax.Array, offset: int | jax.Array = 0, max_positions: int | None = None) -> jax.Array:
        """codes [B, K, T] -> summed codebook embeddings plus positions [B, T, D] (compute dtype).
        ``offset``: the position of the first frame (a decoding step's, with a KV cache); a traced
        offset reads rows of the host-computed table of ``max_positions`` positions, so decoding
        steps get exactly the sinusoid a full forward gets. With ``positional_embedding="rope"``
        positions enter in self-attention instead."""
        cfg = self.cfg
        B, K, T = codes.shape
        if K != cfg.n_q:
            raise ValueError(f"codes have {K} codebooks, the model expects n_q={cfg.n_q}")
        tables = self.emb[...]
        x = sum(jnp.take(tables[k], codes[:, k], axis=0) for k in range(K))
        if cfg.uses_sin:
            if isinstance(offset, int):
                pos = sinusoidal_embedding(np.arange(T) + offset, cfg.dim, cfg.max_period)
            else:
                table = sinusoidal_embedding(np.arange(max_positions), cfg.dim, cfg.max_period)
                pos = jax.lax.dynamic_slice_in_dim(table, offset, T, axis=0)
            x = x + cfg.sinusoid_scale * pos[None]
        return constrain(x.astype(cfg.dtype), "batch", "length", "act_embed")

    def project_condition(self, cond: jax.Array | None) -> jax.Array | None:
        """Text condition [B, S, D] (already projected and masked) -> per-layer keys/values."""
        if cond is None:
            return None
        if not self.cfg.cross_attention:
            raise ValueError("this LM was built without cross-attention; pass cond=None")
        return self.transformer.project_cross_kv(cond.astype(self.cfg.dtype))

    def stage_logits(self, hidden: jax.Array, stage: int | jax.Array) -> jax.Array:
        """Logits of one codebook's head only: [B, T, card] in float32."""
        w = self.linears[...][stage].astype(hidden.dtype)
        logits = jnp.einsum("btd,dc->btc", hidden, w, preferred_element_type=jnp.float32)
        return constrain(logits, "batch", "length", "act_vocab")

    def all_logits(self, hidden: jax.Array) -> jax.Array:
        """Every head: [B, T, D] -> logits [B, K, T, card] (float32)."""
        w = self.linears[...].astype(hidden.dtype)
        return jnp.einsum("btd,kdc->bktc", hidden, w, preferred_element_type=jnp.float32)


class MagnetLM(CodebookLM):
    """MAGNeT: stage s predicts codebook s with a band-restricted self-attention for s > 0."""
    cfg: LMConfig

    def attention_bias(self, stage: int | jax.Array, length: int,
                       restricted: bool | None = None) -> "jax.Array | LocalBand | None":
        """The self-attention restriction of a stage: None (full) for stage 0 or
        subcodes_context = -1; for stages > 0 a static ``LocalBand`` when the stage is a Python
        int (the sampler: only the band is computed), else an additive band bias selected by
        the traced stage. ``restricted`` (static) says whether a traced stage is > 0 (the train
        step branches on it: ``objective.restricted_stage``): True gives the ``LocalBand``,
        False full attention.
        """
        if self.cfg.subcodes_context < 0:
            return None
        if restricted is not None:
            return LocalBand(self.cfg.subcodes_context) if restricted else None
        if isinstance(stage, int):
            return LocalBand(self.cfg.subcodes_context) if stage > 0 else None
        band = band_bias(length, self.cfg.subcodes_context)
        return jnp.where(stage > 0, band, jnp.zeros_like(band))

    def hidden(self, codes: jax.Array, stage: int | jax.Array, cross_kv: jax.Array | None,
               remat: bool = False, cond_lengths: jax.Array | None = None,
               restricted: bool | None = None) -> jax.Array:
        """Final normalised hidden states [B, T, D]. Rows past cross_kv's batch are null-conditioned.
        ``cond_lengths`` [n_cond]: each conditioned row's own text length (its cross-attention
        ignores the batch's padding past it); None is audiocraft's unmasked cross-attention.
        ``restricted``: see ``attention_bias``."""
        x = self.embed(codes)
        x = self.transformer(x, self.attention_bias(stage, codes.shape[-1], restricted), cross_kv, remat=remat,
                             cond_lengths=cond_lengths)
        return self.out_norm(x)

    # -- the whole model --------------------------------------------------------------------
    def __call__(self, codes: jax.Array, stage: int | jax.Array, cond: jax.Array | None = None) -> jax.Array:
        """All heads, as audiocraft's forward: logits [B, K, T, card] (float32)."""
        return self.all_logits(self.hidden(codes, stage, self.project_condition(cond)))
