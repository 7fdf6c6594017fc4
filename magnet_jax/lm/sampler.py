"""MAGNeT's iterative parallel decoding, every stage and step compiled into one XLA program.

For each stage s (= codebook s, coarse to fine) the stage's tokens start fully masked. Each of the
stage's ``decoding_steps`` steps:

 1. re-masks the least confident spans (the top ``num_masked`` by score; only spans masked at the
    previous step can be chosen, since the others score -1e4),
 2. pins the prompt tokens (continuation),
 3. runs the LM on [conditional; null] rows and mixes them with the annealed CFG scale,
 4. samples (top-p, top-k, plain, or argmax) at masked positions only,
 5. scores spans by the sampled tokens' probabilities ('max': 1 - max p over the span,
    'prod': sum of -log p) for the next step's re-masking.

'stride1' span arrangement scores every length-L window at stride 1 and binary-searches how many
of the worst windows to take so that their union covers about ``num_masked`` tokens.

Compiled structure (big_vision's GIVT ``parallel_decode``): a ``StageState`` dataclass is carried
through ``lax.fori_loop`` with a static trip count per stage; the four stages are unrolled (their
band masks, heads and schedules differ) inside one ``jax.jit``. The step schedule (span counts,
CFG scales, temperatures) is computed on the host once (``schedule.py``). Exact-k selection is by
rank (stable descending argsort), never by a threshold, so ties cannot select more or fewer than k.
Ties themselves are broken by position; torch's CPU sort breaks exact ties in an unspecified order,
which is the one place outputs may legitimately differ from the reference.

Randomness is per row: every row carries its own key (``keys [B]``; a single key gives row r
``fold_in(key, r)``), split per stage and step inside that row only, so a row's draws depend on
its key alone, never on its batch mates or the batch size (the serving engine batches unrelated
requests). ``cond_lengths`` [B] optionally masks each row's text padding in cross-attention
(``CrossAttention``), so a row also computes what it computes alone; None keeps audiocraft's
unmasked padding. Both stay inside the one compiled program.

Work the reference does that this does not: only the active stage's output head is computed; the
text condition's cross-attention keys/values are projected once per generation; the null-condition
rows skip cross-attention (their output is exactly zero); unconditional generation runs one batch,
not two identical ones.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import Mesh

from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.schedule import StageSchedule, stage_schedule
from magnet_jax.train import sharding

DONT_REMASK_ME_SCORE = -1e4

# (step, codes with this stage's tokens, sampled tokens [B, T], MAGNeT's p of them [B, T]) -> the
# probabilities the span scores are computed from (see ``TokenRescorer``).
StageHook = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


class TokenRescorer(Protocol):
    """What ``decode_stage`` asks of a rescorer (``magnet_jax.lm.rescore.Rescorer``): for a
    stage of ``n_steps`` steps, a hook that replaces the sampled tokens' probabilities before
    the span scores are computed from them, or None when this stage is not rescored."""

    def stage_hook(self, stage: int, n_steps: int) -> StageHook | None: ...


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Decoding parameters; defaults are audiocraft's MAGNeT.set_generation_params."""
    decoding_steps: tuple[int, ...] = (20, 10, 10, 10)
    temperature: float = 3.0
    anneal_temp: bool = True
    use_sampling: bool = True       # False: greedy (argmax) decoding
    top_k: int = 0
    top_p: float = 0.9
    max_cfg_coef: float = 10.0
    min_cfg_coef: float = 1.0
    span_scoring: str = "max"       # 'max' or 'prod'
    span_arrangement: str = "nonoverlap"  # 'nonoverlap' or 'stride1'

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoding_steps", tuple(int(s) for s in self.decoding_steps))

    def for_codebooks(self, n_q: int) -> "SamplerConfig":
        """The steps zipped with the codebooks, as audiocraft's ``_generate_magnet`` does
        (``zip(range(n_q), decoding_steps)``): entries beyond n_q are dropped, so the default
        [20, 10, 10, 10] decodes a 3-codebook model with [20, 10, 10]. Fewer entries than codebooks
        stay an error (``validate``): audiocraft would leave the last codebooks masked."""
        if len(self.decoding_steps) <= n_q:
            return self
        return dataclasses.replace(self, decoding_steps=self.decoding_steps[:n_q])

    def validate(self, n_q: int) -> None:
        for name in ("temperature", "top_p", "max_cfg_coef", "min_cfg_coef"):
            if not math.isfinite(getattr(self, name)):    # NaN passes every range check below
                raise ValueError(f"{name} {getattr(self, name)} must be a finite number")
        if len(self.decoding_steps) != n_q:
            raise ValueError(f"decoding_steps {list(self.decoding_steps)} has {len(self.decoding_steps)} entries; "
                             f"the model has {n_q} codebooks, so give one step count per codebook")
        if any(s < 1 for s in self.decoding_steps):
            raise ValueError(f"decoding_steps {list(self.decoding_steps)}: every stage needs at least 1 step "
                             f"(a stage with 0 steps would leave its codebook masked)")
        if self.span_scoring not in ("max", "prod"):
            raise ValueError(f"span_scoring {self.span_scoring!r}: use 'max' or 'prod'")
        if self.span_arrangement not in ("nonoverlap", "stride1"):
            raise ValueError(f"span_arrangement {self.span_arrangement!r}: use 'nonoverlap' or 'stride1'")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p {self.top_p} must be in [0, 1] (0 disables it)")
        if self.top_k < 0:
            raise ValueError(f"top_k {self.top_k} must be >= 0 (0 disables it)")
        if self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature} must be > 0")


@struct.dataclass
class StageState:
    """What one decoding step hands the next."""
    tokens: jax.Array   # int32 [B, T]: this stage's tokens, mask_id where still masked
    scores: jax.Array   # float32 [B, U]: per span (nonoverlap) or per token; high = re-mask first
    key: jax.Array      # [B] keys: row b's draws come from key[b] alone


# -- selection helpers ---------------------------------------------------------------------
def descending_rank(scores: jax.Array) -> jax.Array:
    """rank[j] = position of j when sorting scores high to low (ties: lower index first)."""
    order = jnp.argsort(-scores, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1)  # the inverse permutation


def spans_to_tokens(starts: jax.Array, span_len: int, length: int) -> jax.Array:
    """Boolean span starts [n_spans] -> tokens covered by any span [length] (spans run right)."""
    padded = jnp.zeros((length,), bool).at[: starts.shape[0]].set(starts)
    covered = padded
    for shift in range(1, span_len):
        covered = covered | jnp.concatenate([jnp.zeros((shift,), bool), padded[:-shift]])
    return covered


def _round_half_even_mid(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Python's round(0.5 * (lo + hi)) on integers (banker's rounding of a .5)."""
    s = lo + hi
    half = s // 2
    return half + ((s % 2 == 1) & (half % 2 == 1)).astype(s.dtype)


def least_probable_spans(token_scores: jax.Array, num_masked: jax.Array, span_len: int) -> jax.Array:
    """'stride1' re-masking for one sequence: the union of the u worst overlapping windows whose
    size is closest to num_masked, u found by the reference's binary search. -> bool [T]."""
    T = token_scores.shape[0]
    n_spans = T - span_len + 1
    span_scores = token_scores[:n_spans]
    for l in range(1, span_len):  # ((s0 + s1) + s2): the reference's summation order
        span_scores = span_scores + token_scores[l:l + n_spans]
    rank = descending_rank(span_scores)
    target = jnp.maximum(num_masked, span_len)

    def mask_of(u):
        return spans_to_tokens(rank < u, span_len, T)

    lo, hi = target // span_len, target - span_len + 1
    mid = _round_half_even_mid(lo, hi)

    def searching(c):
        lo, hi, mid, _ = c
        return (mid > lo) & (mid < hi)

    def halve(c):
        lo, hi, mid, mask = c
        too_many = mask.sum() > target
        lo, hi = jnp.where(too_many, lo, mid), jnp.where(too_many, mid, hi)
        new_mid = _round_half_even_mid(lo, hi)
        # the reference returns the mask of the last mid it evaluated inside its loop
        mask = jax.lax.cond((new_mid > lo) & (new_mid < hi), mask_of, lambda _: mask, new_mid)
        return lo, hi, new_mid, mask

    return jax.lax.while_loop(searching, halve, (lo, hi, mid, mask_of(mid)))[3]


# -- sampling --------------------------------------------------------------------------------
# Sorting a [T, card] block every step (what torch's sample_top_p does) dominates a CPU step, so
# the kept sets are found by bisection over float32 bit patterns instead: for non-negative floats
# the int32 bit pattern is ordered like the value, so 31 halvings pin the exact threshold value.
def _as_float(bits: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def top_p_threshold(probs: jax.Array, top_p: float) -> jax.Array:
    """Smallest kept probability of the nucleus: x is kept iff the mass of strictly more
    probable tokens is <= top_p (torch's ``cumsum - p > top_p`` removal rule). -> [...]"""
    hi = jax.lax.bitcast_convert_type(probs.max(-1), jnp.int32)   # mass above max is 0: kept
    lo = jnp.zeros_like(hi)                                       # mass above 0 is ~1 > top_p

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        above = jnp.where(probs > _as_float(mid)[..., None], probs, 0.0).sum(-1)
        ok = above <= top_p
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    return _as_float(jax.lax.fori_loop(0, 31, halve, (lo, hi))[1])


def kth_largest(probs: jax.Array, k: int) -> jax.Array:
    """The k-th largest probability per row (torch.topk(probs, k).values[..., -1]). -> [...]"""
    lo = jnp.zeros(probs.shape[:-1], jnp.int32)                              # count(p >= 0) >= k
    hi = jax.lax.bitcast_convert_type(probs.max(-1), jnp.int32) + 1          # count(p >= above max) = 0

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = (probs >= _as_float(mid)[..., None]).sum(-1) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    return _as_float(jax.lax.fori_loop(0, 32, halve, (lo, hi))[0])


def split_rows(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(next, sub) for each row's key [B]: what ``jax.random.split`` does, row by row."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


def row_keys(key: jax.Array, batch: int) -> jax.Array:
    """Row r's key ``fold_in(key, r)``: a batch's rows drawn from one key, each independent of
    the others and of the batch size."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(batch))


def _uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniforms of ``shape``: from one key, or from per-row keys [shape[0]] (row b from key[b])."""
    if key.ndim == 0:
        return jax.random.uniform(key, shape)
    return jax.vmap(lambda k: jax.random.uniform(k, shape[1:]))(key)


def sample_from_weights(key: jax.Array, weights: jax.Array) -> jax.Array:
    """One draw per row from unnormalised non-negative weights, by inverse CDF (one uniform per
    position instead of a Gumbel variate per token). ``key``: one key, or one per leading row."""
    cdf = jnp.cumsum(weights, axis=-1)
    u = _uniform(key, weights.shape[:-1]) * cdf[..., -1]
    return jnp.minimum((cdf <= u[..., None]).sum(-1), weights.shape[-1] - 1).astype(jnp.int32)


def sample_tokens(logits: jax.Array, probs: jax.Array, key: jax.Array, cfg: SamplerConfig) -> jax.Array:
    """Draw one token per position [B, T] as audiocraft's sample_top_p / sample_top_k / multinomial."""
    if not cfg.use_sampling:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if cfg.top_p > 0.0:
        weights = jnp.where(probs >= top_p_threshold(probs, cfg.top_p)[..., None], probs, 0.0)
    elif cfg.top_k > 0:
        weights = jnp.where(probs >= kth_largest(probs, cfg.top_k)[..., None], probs, 0.0)
    else:
        weights = probs
    return sample_from_weights(key, weights)


# -- one stage ----------------------------------------------------------------------------------
def _guided_logits(model: MagnetLM, seq: jax.Array, stage: int, cross_kv: jax.Array | None,
                   cfg_coef: jax.Array, cond_lengths: jax.Array | None = None) -> jax.Array:
    """Stage logits [B, T, card] with classifier-free guidance on raw logits."""
    if cross_kv is None:  # unconditional: cond and null rows would be identical
        return model.stage_logits(model.hidden(seq, stage, None), stage)
    B = seq.shape[0]
    h = model.hidden(jnp.concatenate([seq, seq]), stage, cross_kv,   # rows >= B: null condition
                     cond_lengths=cond_lengths)
    logits = model.stage_logits(h, stage)
    cond, null = logits[:B], logits[B:]
    return null + (cond - null) * cfg_coef


def decode_stage(model: MagnetLM, codes: jax.Array, cross_kv: jax.Array | None, prompt: jax.Array,
                 stage: int, keys: jax.Array, cfg: SamplerConfig, sched: StageSchedule,
                 prompt_len: int, cond_lengths: jax.Array | None = None,
                 rescore: TokenRescorer | None = None) -> jax.Array:
    """Run one stage's decoding loop (``keys`` [B], one per row); returns codes with row
    ``stage`` filled. ``rescore``: the paper's rescoring, which changes the probabilities the
    span scores are computed from (never the sampled tokens)."""
    lm = model.cfg
    B, _, T = codes.shape
    L = lm.span_len
    chunked = L > 1 and cfg.span_arrangement == "nonoverlap"
    n_units, n_prompt_units = (T // L, prompt_len // L) if chunked else (T, prompt_len)
    num_masked = jnp.asarray(sched.num_masked)
    cfg_coef, temperature = jnp.asarray(sched.cfg_coef), jnp.asarray(sched.temperature)
    prompt_row = prompt[:, stage, :prompt_len]
    hook = None if rescore is None else rescore.stage_hook(stage, len(sched.num_masked))

    def remask(scores, n):
        if chunked or L <= 1:
            units = descending_rank(scores) < n
            return (jnp.repeat(units, L, axis=-1) if chunked else units), units
        return jax.vmap(least_probable_spans, in_axes=(0, None, None))(scores, n, L), None

    def step(i, st: StageState) -> StageState:
        token_mask, unit_mask = remask(st.scores, num_masked[i])
        tokens = jnp.where(token_mask, lm.mask_id, st.tokens).at[:, :prompt_len].set(prompt_row)
        logits = _guided_logits(model, codes.at[:, stage].set(tokens), stage, cross_kv, cfg_coef[i],
                                cond_lengths)
        probs = jax.nn.softmax(logits / temperature[i], axis=-1)
        key, sub = split_rows(st.key)
        sampled = sample_tokens(logits, probs, sub, cfg)
        masked = tokens == lm.mask_id
        tokens = jnp.where(masked, sampled, tokens)
        p = jnp.take_along_axis(probs, sampled[..., None], axis=-1)[..., 0]
        if hook is not None:
            p = hook(i, codes.at[:, stage].set(tokens), sampled, p)
        if chunked:
            p = p.reshape(B, n_units, L)
            scores = 1.0 - p.max(-1) if cfg.span_scoring == "max" else (-jnp.log(p)).sum(-1)
            scores = jnp.where(unit_mask, scores, DONT_REMASK_ME_SCORE)
        else:
            scores = jnp.where(masked, -jnp.log(p), DONT_REMASK_ME_SCORE)
        return StageState(tokens, scores, key)

    scores = jnp.zeros((B, n_units), jnp.float32).at[:, :n_prompt_units].set(DONT_REMASK_ME_SCORE)
    init = StageState(jnp.full((B, T), lm.mask_id, jnp.int32), scores, keys)
    final = jax.lax.fori_loop(0, len(sched.num_masked), step, init)
    return codes.at[:, stage].set(final.tokens)


def output_length(model_cfg, sampler_cfg: SamplerConfig, length: int) -> int:
    """nonoverlap spans trim T to a multiple of span_len (500 -> 498), as the reference does."""
    L = model_cfg.span_len
    return (length // L) * L if (L > 1 and sampler_cfg.span_arrangement == "nonoverlap") else length


def generate_tokens(model: MagnetLM, cond: jax.Array | None, prompt: jax.Array, keys: jax.Array,
                    cfg: SamplerConfig, length: int, prompt_len: int,
                    cond_lengths: jax.Array | None = None, rescore: TokenRescorer | None = None) -> jax.Array:
    """All stages. cond [B, S, D] or None; prompt [B, K, >= prompt_len]; keys [B], one per row;
    cond_lengths [B] or None (see ``CrossAttention``); rescore: see ``decode_stage``.
    -> codes [B, K, T_out]."""
    lm = model.cfg
    B = prompt.shape[0]
    T = output_length(lm, cfg, length)
    codes = jnp.full((B, lm.n_q, T), lm.mask_id, jnp.int32)
    codes = codes.at[:, :, :prompt_len].set(prompt[:, :, :prompt_len].astype(jnp.int32))
    cross_kv = model.project_condition(cond)
    L = lm.span_len
    chunked = L > 1 and cfg.span_arrangement == "nonoverlap"
    units_to_gen = (T // L - prompt_len // L) if chunked else (T - prompt_len)
    for stage, n_steps in enumerate(cfg.decoding_steps):
        sched = stage_schedule(n_steps, units_to_gen, temperature=cfg.temperature,
                               anneal_temp=cfg.anneal_temp, max_cfg_coef=cfg.max_cfg_coef,
                               min_cfg_coef=cfg.min_cfg_coef)
        keys, sub = split_rows(keys)
        codes = decode_stage(model, codes, cross_kv, prompt, stage, sub, cfg, sched, prompt_len, cond_lengths,
                             rescore)
    return codes


# -- the compiled, user-facing sampler ----------------------------------------------------------
def split_placed(model: nnx.Module, mesh: Mesh | None) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, state) of a model, the state placed on ``mesh`` by the logical-axis rules: what
    every compiled sampler holds (split once, merged inside the jitted function)."""
    graphdef, state = nnx.split(model)
    if mesh is not None:
        state = jax.device_put(state, sharding.state_shardings(state, mesh))
    return graphdef, state


def run_on_mesh(mesh: Mesh | None, fn, *args):
    """``fn(*args)``, under ``mesh`` when there is one (activations follow the logical-axis rules)."""
    if mesh is None:
        return fn(*args)
    with jax.set_mesh(mesh):
        return fn(*args)


class MagnetSampler:
    """Compiles ``generate_tokens`` once per (config, batch, lengths) and runs it on a mesh.

    The model is split into (graphdef, state) once; the jitted function merges it inside, so a
    call costs no Python module traversal. With a mesh, parameters are placed by the logical-axis
    rules and the batch is split over the data axes.
    """

    def __init__(self, model: MagnetLM, mesh: Mesh | None = None):
        self.cfg = model.cfg
        self.mesh = mesh
        self.graphdef, self.state = split_placed(model, mesh)
        self._compiled: dict = {}

    def _check(self, cfg: SamplerConfig, batch: int, length: int, prompt_len: int,
               cond: jax.Array | None, keys: jax.Array, cond_lengths: jax.Array | None) -> None:
        cfg.validate(self.cfg.n_q)
        if batch < 1:
            raise ValueError(f"batch size {batch}: need at least one sample")
        if length < self.cfg.span_len or length < 1:
            raise ValueError(f"length {length} frames is shorter than one span ({self.cfg.span_len} frames)")
        if prompt_len >= output_length(self.cfg, cfg, length):
            raise ValueError(f"prompt of {prompt_len} frames is not shorter than the output "
                             f"({output_length(self.cfg, cfg, length)} frames): nothing is left to generate; "
                             f"use a shorter prompt or a longer output")
        if cond is not None and (cond.ndim != 3 or cond.shape[0] != batch or cond.shape[2] != self.cfg.dim):
            raise ValueError(f"cond has shape {tuple(cond.shape)}; expected [batch={batch}, S, dim={self.cfg.dim}]")
        if keys.shape not in ((), (batch,)):
            raise ValueError(f"key has shape {tuple(keys.shape)}; pass one key, or one per row ({batch})")
        if cond_lengths is not None:
            self._check_cond_lengths(cond_lengths, cond, batch)
        if self.mesh is not None:
            sharding.check_batch_divides(batch, self.mesh)

    @staticmethod
    def _check_cond_lengths(cond_lengths: np.ndarray, cond: jax.Array | None, batch: int) -> None:
        if cond is None:
            raise ValueError("cond_lengths without cond: pass the text condition too, or no lengths")
        if cond_lengths.shape != (batch,):
            raise ValueError(f"cond_lengths has shape {cond_lengths.shape}; expected [batch={batch}]")
        if not ((cond_lengths >= 1) & (cond_lengths <= cond.shape[1])).all():
            raise ValueError(f"cond_lengths {cond_lengths.tolist()} must each be in [1, S={cond.shape[1]}] "
                             f"(a row's count of text positions)")

    def _function(self, cfg: SamplerConfig, length: int, prompt_len: int, has_cond: bool,
                  has_lengths: bool):
        sig = (cfg, length, prompt_len, has_cond, has_lengths)
        if sig not in self._compiled:
            graphdef = self.graphdef

            def run(state, cond, prompt, keys, cond_lengths):
                model = nnx.merge(graphdef, state)
                return generate_tokens(model, cond, prompt, keys, cfg, length, prompt_len, cond_lengths)

            kwargs = {}
            if self.mesh is not None:
                batch = sharding.logical_sharding(self.mesh, "batch", None, None)
                rows = sharding.logical_sharding(self.mesh, "batch")
                repl = sharding.logical_sharding(self.mesh)
                kwargs = dict(in_shardings=(sharding.state_shardings(self.state, self.mesh),
                                            batch if has_cond else None, batch, repl,
                                            rows if has_lengths else None),
                              out_shardings=batch)
            self._compiled[sig] = jax.jit(run, **kwargs)
        return self._compiled[sig]

    def forget(self, config: SamplerConfig) -> int:
        """Drop the compiled programs of one sampler config (a server bounding its memory);
        returns how many were dropped. A later call with that config compiles again."""
        dropped = [sig for sig in self._compiled if sig[0] == config]
        for sig in dropped:
            del self._compiled[sig]
        return len(dropped)

    def generate(self, key: jax.Array, *, cond: jax.Array | None = None, prompt: jax.Array | None = None,
                 num_samples: int | None = None, config: SamplerConfig = SamplerConfig(),
                 length: int | None = None, cond_lengths: np.ndarray | jax.Array | None = None) -> jax.Array:
        """Tokens [B, K, T_out]. ``key``: one key (row r draws from ``fold_in(key, r)``) or one key
        per row [B]; ``cond``: projected, masked text condition [B, S, D] (None =
        unconditional); ``cond_lengths``: each row's own count of text positions [B] (its
        cross-attention ignores the padding past it; None = audiocraft's unmasked padding);
        ``prompt``: tokens [B, K, P] to continue from; ``length``: frames (default: the
        model's segment)."""
        call = self._prepare(key, cond, prompt, num_samples, config, length, cond_lengths)
        fn = self._function(config, call.length, call.prompt_len, cond is not None, call.lengths is not None)
        return self._call(fn, (self.state, call.cond, call.prompt, call.keys, call.lengths))

    def _prepare(self, key: jax.Array, cond: jax.Array | None, prompt: jax.Array | None,
                 num_samples: int | None, config: SamplerConfig, length: int | None,
                 cond_lengths: np.ndarray | jax.Array | None) -> "SamplerCall":
        """Check a call's inputs and make its device arrays (what every variant of ``generate``
        shares: ``magnet_jax.lm.rescore.RescoringSampler`` too)."""
        length = int(length or self.cfg.sequence_len)
        prompt_len = 0 if prompt is None else int(prompt.shape[-1])
        batch = (cond.shape[0] if cond is not None else prompt.shape[0] if prompt is not None
                 else int(num_samples or 1))
        if num_samples is not None and num_samples != batch:
            raise ValueError(f"num_samples={num_samples} disagrees with the batch of cond/prompt ({batch})")
        if prompt is not None and (prompt.ndim != 3 or prompt.shape[:2] != (batch, self.cfg.n_q)):
            raise ValueError(f"prompt has shape {tuple(prompt.shape)}; expected [batch={batch}, "
                             f"n_q={self.cfg.n_q}, P]")
        lengths = None if cond_lengths is None else np.asarray(cond_lengths, np.int32)
        self._check(config, batch, length, prompt_len, cond, key, lengths)
        keys = row_keys(key, batch) if key.shape == () else key
        prompt_arr = (jnp.zeros((batch, self.cfg.n_q, 0), jnp.int32) if prompt is None
                      else jnp.asarray(prompt, jnp.int32))
        cond_arr = None if cond is None else jnp.asarray(cond, jnp.float32)
        return SamplerCall(batch, length, prompt_len, cond_arr, prompt_arr, keys,
                           None if lengths is None else jnp.asarray(lengths))

    def _call(self, fn, args: tuple):
        return run_on_mesh(self.mesh, fn, *args)


@dataclasses.dataclass(frozen=True)
class SamplerCall:
    """One checked ``generate`` call: its sizes and device inputs."""
    batch: int
    length: int
    prompt_len: int
    cond: jax.Array | None
    prompt: jax.Array
    keys: jax.Array
    lengths: jax.Array | None
