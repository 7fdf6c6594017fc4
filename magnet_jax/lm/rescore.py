"""The MAGNeT paper's rescoring: an external pretrained autoregressive model (a ``MusicGenLM``)
re-scores the tokens MAGNeT samples, and the spans to re-mask are ranked by a blend of both
models' probabilities. Inside the one compiled sampler (``magnet_jax.lm.sampler``).

What the paper says (arXiv 2401.04577, its inference section on rescoring, Eq. (5) and Fig. 4, as
we read them in page images reproduced by a third-party summary, github.com/VachanVY/MAGNeT; the
paper itself could not be fetched here): at iteration i MAGNeT samples a candidate sequence, an
external model (MusicGen for music, AudioGen for sound, used "in a non-autoregressive manner")
gives a second probability of the sampled tokens, and the span scores are computed from their
convex combination. Eq. (5) writes ``p = w * p_theta + (1 - w) * p_rescorer`` (w on MAGNeT); the
algorithm of Fig. 4 writes ``w * rescorer_sampled_probs + (1 - w) * sampled_probs`` (w on the
rescorer), and Fig. 4 also shows the blend used for span scoring only, not for sampling. We follow
Fig. 4, the algorithm:

    p(token) = w * p_rescorer(token) + (1 - w) * p_MAGNeT(token)        w = ``RescoreConfig.weight``

so w = 0 is plain MAGNeT and w = 1 ranks by the rescorer alone. The default w = 0.7 is the value
this project's issue gives; we could not find the number in the parts of the paper we could read
(Eq. (5), Fig. 4, the implementation details), so it is "the paper's value as we read it" only
by that source. ``p_MAGNeT`` is the probability ``decode_stage`` already uses (the softmax at the
step's temperature, of the CFG logits); the blend replaces it before the span aggregation
('max': 1 - max over the span; 'prod': sum of -log p), so the rescorer changes which spans are
re-masked at the next step and never which tokens are drawn.

What the rescorer sees (one teacher-forced forward per rescored step, the whole delay-pattern
sequence at once, causal): the codes of all codebooks laid out by its delay pattern, with the
codebooks of earlier stages as decoded, the current stage's codebook holding this step's tokens
(the sampled ones at the masked positions, the kept ones elsewhere, the prompt's where pinned), and
the codebooks of later stages, which MAGNeT has not decoded yet (its mask id), as the rescorer's
special token (id ``card``), the token MusicGen reads wherever its pattern holds no code. Why
this and not something else: a causal delay-pattern model predicts codebook s of frame t from
every codebook of earlier frames (later codebooks included) and from earlier codebooks a few
frames ahead, so the later codebooks' positions must hold something; the special token is the only input MusicGen was trained to read as "no code here",
whereas any guess (MAGNeT's argmax, a random code) would be a made-up code it trusts. The price:
the mid-sequence special tokens are outside MusicGen's training distribution, most for stage 0
(three of four codebooks unknown) and least for the last stage (none). ``RescoreConfig.stages``
can restrict rescoring to the stages where that matters least.

p_rescorer(token at frame t of codebook s) is read from the rescorer's logits at pattern step
t + delays[s] (the step that predicts step t + delays[s] + 1, where the pattern holds it), with
the rescorer's own classifier-free guidance (``cfg_coef``, MusicGen's default 3) under its own
text condition (its own text encoder and projection), at temperature 1.

Cost: one rescorer forward over T + max(delays) + 1 steps (two row halves with CFG) per rescored
step. The last step of each stage is never rescored: its span scores are not read again.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.musicgen import MusicGenConfig, MusicGenLM
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig, StageHook, generate_tokens, split_placed
from magnet_jax.train import sharding

DEFAULT_WEIGHT = 0.7        # as this project's issue 24 gives it (see the module docstring)
DEFAULT_CFG_COEF = 3.0      # the rescorer's guidance: audiocraft's MusicGen default


@dataclasses.dataclass(frozen=True)
class RescoreConfig:
    """Rescoring options. ``stages`` and ``steps`` shape the compiled program (part of its
    signature); ``weight`` and ``cfg_coef`` are passed in as values, so sweeping them reuses it.

    ``weight``: w in p = w * p_rescorer + (1 - w) * p_MAGNeT, in [0, 1];
    ``stages``: the stages (codebooks) rescored, None = all;
    ``steps``: the step indices (0-based, within each rescored stage) rescored, None = all
    (the last step of a stage is skipped regardless: its scores are never read);
    ``cfg_coef``: the rescorer's classifier-free guidance scale when there is a text condition.
    """
    weight: float = DEFAULT_WEIGHT
    stages: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    cfg_coef: float = DEFAULT_CFG_COEF

    def __post_init__(self) -> None:
        for name in ("stages", "steps"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(sorted({int(v) for v in value})))

    def validate(self, n_q: int) -> None:
        if not (math.isfinite(self.weight) and 0.0 <= self.weight <= 1.0):
            raise ValueError(f"rescore weight {self.weight} must be in [0, 1] (0: MAGNeT alone, 1: the rescorer alone)")
        if not math.isfinite(self.cfg_coef):
            raise ValueError(f"rescore cfg_coef {self.cfg_coef} must be a finite number")
        if self.stages is not None and not all(0 <= s < n_q for s in self.stages):
            raise ValueError(f"rescore stages {list(self.stages)}: each must be a codebook in [0, {n_q})")
        if self.steps is not None and min(self.steps, default=0) < 0:
            raise ValueError(f"rescore steps {list(self.steps)}: step indices start at 0")

    @property
    def program(self) -> tuple:
        """What the compiled program depends on (``weight`` and ``cfg_coef`` are its inputs)."""
        return self.stages, self.steps

    def knobs(self) -> jax.Array:
        """The values passed into the compiled program: float32 [weight, cfg_coef]."""
        return jnp.asarray([self.weight, self.cfg_coef], jnp.float32)

    def active_steps(self, stage: int, n_steps: int) -> np.ndarray:
        """bool [n_steps]: the steps of ``stage`` that are rescored."""
        on = np.zeros(n_steps, bool)
        if self.stages is None or stage in self.stages:
            on[:] = True if self.steps is None else np.isin(np.arange(n_steps), self.steps)
        on[-1] = False      # the last step's span scores are never read
        return on


def check_rescorer(magnet: LMConfig, rescorer: MusicGenConfig) -> None:
    """Refuse a rescorer that does not read MAGNeT's tokens: one line saying what differs."""
    if not isinstance(rescorer, MusicGenConfig):
        raise ValueError(f"the rescorer must be an autoregressive MusicGen LM; got a {type(rescorer).__name__}")
    diffs = [f"{name} {getattr(rescorer, name)} != {getattr(magnet, name)}"
             for name in ("n_q", "card", "frame_rate") if getattr(rescorer, name) != getattr(magnet, name)]
    if diffs:
        raise ValueError(f"the rescorer does not share MAGNeT's codec tokens: {', '.join(diffs)} "
                         f"(rescorer vs MAGNeT)")


def blend(p_magnet: jax.Array, p_rescorer: jax.Array, weight: float | jax.Array) -> jax.Array:
    """The convex combination of Fig. 4: w * p_rescorer + (1 - w) * p_MAGNeT."""
    return weight * p_rescorer + (1.0 - weight) * p_magnet


def rescorer_sequence(codes: jax.Array, magnet_mask_id: int, model: MusicGenLM) -> jax.Array:
    """MAGNeT codes [B, K, T] (mask id where not decoded) -> the rescorer's delay-pattern
    sequence [B, K, T + max(delays) + 1], not-decoded codes as its special token."""
    lm = model.cfg
    codes = jnp.where(codes == magnet_mask_id, lm.mask_id, codes)
    return lm.pattern.build(codes, codes.shape[-1], lm.mask_id)


def rescorer_logits(model: MusicGenLM, codes: jax.Array, stage: int, cross_kv: jax.Array | None,
                    cfg_coef: float | jax.Array, magnet_mask_id: int) -> jax.Array:
    """The rescorer's (guided) logits of codebook ``stage`` at every frame: [B, T, card].
    One causal forward over the pattern; frame t of codebook s is predicted at step t + delays[s]."""
    B, _, T = codes.shape
    seq = rescorer_sequence(codes, magnet_mask_id, model)
    rows = seq if cross_kv is None else jnp.concatenate([seq, seq])      # rows >= B: null condition
    delay = model.cfg.delays[stage]
    hidden = model.hidden(rows, cross_kv)[:, delay:delay + T]
    logits = model.stage_logits(hidden, stage)
    if cross_kv is None:
        return logits
    cond, null = logits[:B], logits[B:]
    return null + (cond - null) * cfg_coef


def token_probability(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """softmax(logits)[tokens]: [B, T, card], [B, T] -> [B, T] (through log-softmax, stable)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.exp(jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0])


@dataclasses.dataclass(frozen=True)
class Rescorer:
    """The ``TokenRescorer`` handed to ``generate_tokens``: the rescorer model, its projected
    condition (None: unconditional, no CFG), the options, MAGNeT's mask id, and optionally
    ``knobs`` = [weight, cfg_coef] as traced values (None: the config's numbers)."""
    model: MusicGenLM
    cross_kv: jax.Array | None
    config: RescoreConfig
    magnet_mask_id: int
    knobs: jax.Array | None = None

    @property
    def weight(self) -> float | jax.Array:
        return self.config.weight if self.knobs is None else self.knobs[0]

    @property
    def cfg_coef(self) -> float | jax.Array:
        return self.config.cfg_coef if self.knobs is None else self.knobs[1]

    def probability(self, codes: jax.Array, stage: int, tokens: jax.Array) -> jax.Array:
        """p_rescorer of ``tokens`` [B, T] as codebook ``stage`` of ``codes``."""
        logits = rescorer_logits(self.model, codes, stage, self.cross_kv, self.cfg_coef, self.magnet_mask_id)
        return token_probability(logits, tokens)

    def stage_hook(self, stage: int, n_steps: int) -> StageHook | None:
        active = self.config.active_steps(stage, n_steps)
        if not active.any():
            return None

        def hook(step: jax.Array, codes: jax.Array, sampled: jax.Array, p: jax.Array) -> jax.Array:
            def rescored() -> jax.Array:
                return blend(p, self.probability(codes, stage, sampled), self.weight)
            return jax.lax.cond(jnp.asarray(active)[step], rescored, lambda: p)

        return hook


class RescoringSampler(MagnetSampler):
    """``MagnetSampler`` with the rescorer inside the same compiled program.

    Shares the MAGNeT sampler's split weights (no copy); the rescorer is split once here and
    placed on the same mesh. Compiles once per (sampler config, rescored stages and steps,
    shapes); the weight and the rescorer's CFG scale are inputs, so a sweep over them reuses it.
    """

    def __init__(self, sampler: MagnetSampler, rescorer: MusicGenLM):
        check_rescorer(sampler.cfg, rescorer.cfg)
        self.cfg, self.mesh = sampler.cfg, sampler.mesh
        self.graphdef, self.state = sampler.graphdef, sampler.state
        self.rescorer_cfg = rescorer.cfg
        self.rescorer_graphdef, self.rescorer_state = split_placed(rescorer, self.mesh)
        self._compiled: dict = {}

    def _rescore_function(self, cfg: SamplerConfig, rcfg: RescoreConfig, length: int, prompt_len: int,
                          has_cond: bool, has_lengths: bool, has_rescore_cond: bool):
        sig = (cfg, rcfg.program, length, prompt_len, has_cond, has_lengths, has_rescore_cond)
        if sig not in self._compiled:
            graphdef, rgraphdef, mask_id = self.graphdef, self.rescorer_graphdef, self.cfg.mask_id

            def run(state, rstate, cond, rescore_cond, prompt, keys, cond_lengths, knobs):
                model: MagnetLM = nnx.merge(graphdef, state)
                rescorer: MusicGenLM = nnx.merge(rgraphdef, rstate)
                rescore = Rescorer(rescorer, rescorer.project_condition(rescore_cond), rcfg, mask_id, knobs)
                return generate_tokens(model, cond, prompt, keys, cfg, length, prompt_len, cond_lengths, rescore)

            self._compiled[sig] = jax.jit(run, **self._shardings(has_cond, has_lengths, has_rescore_cond))
        return self._compiled[sig]

    def _shardings(self, has_cond: bool, has_lengths: bool, has_rescore_cond: bool) -> dict:
        if self.mesh is None:
            return {}
        batch = sharding.logical_sharding(self.mesh, "batch", None, None)
        rows = sharding.logical_sharding(self.mesh, "batch")
        repl = sharding.logical_sharding(self.mesh)
        return dict(in_shardings=(sharding.state_shardings(self.state, self.mesh),
                                  sharding.state_shardings(self.rescorer_state, self.mesh),
                                  batch if has_cond else None, batch if has_rescore_cond else None, batch,
                                  repl, rows if has_lengths else None, repl),
                    out_shardings=batch)

    def generate(self, key: jax.Array, *, cond: jax.Array | None = None, prompt: jax.Array | None = None,
                 num_samples: int | None = None, config: SamplerConfig = SamplerConfig(),
                 length: int | None = None, cond_lengths: np.ndarray | jax.Array | None = None,
                 rescore_cond: jax.Array | None = None,
                 rescore_config: RescoreConfig = RescoreConfig()) -> jax.Array:
        """``MagnetSampler.generate`` with rescoring. ``rescore_cond``: the rescorer's own
        projected text condition [B, S', D_rescorer] (None: the rescorer runs unconditional)."""
        call = self._prepare(key, cond, prompt, num_samples, config, length, cond_lengths)
        rescore_config.validate(self.cfg.n_q)
        if rescore_cond is not None and (rescore_cond.ndim != 3 or rescore_cond.shape[0] != call.batch
                                         or rescore_cond.shape[2] != self.rescorer_cfg.dim):
            raise ValueError(f"rescore_cond has shape {tuple(rescore_cond.shape)}; expected "
                             f"[batch={call.batch}, S, dim={self.rescorer_cfg.dim}]")
        fn = self._rescore_function(config, rescore_config, call.length, call.prompt_len, call.cond is not None,
                                    call.lengths is not None, rescore_cond is not None)
        rcond = None if rescore_cond is None else jnp.asarray(rescore_cond, jnp.float32)
        return self._call(fn, (self.state, self.rescorer_state, call.cond, rcond, call.prompt, call.keys,
                               call.lengths, rescore_config.knobs()))
