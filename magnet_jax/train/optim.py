"""The reference's optimisation recipe in optax: schedules, D-Adapt Adam, AdamW, clipping, EMA.

Read from audiocraft 1.3.0 (``optim/cosine_lr_scheduler.py``, ``optim/inverse_sqrt_lr_scheduler.py``,
``optim/dadam.py``, ``optim/ema.py``, ``solvers/magnet.py``):

- cosine: linear warmup ``lr * step / warmup``, then ``lr_min_ratio + 0.5 (1 - lr_min_ratio)
  (1 + cos(pi s / cycle_length))`` with ``s = (step - warmup) / (total - warmup)``; evaluated at
  torch's ``last_epoch`` (0 for the first update).
- inverse_sqrt: ``warmup_init_lr + step (lr - warmup_init_lr) / warmup`` during warmup, then
  ``lr sqrt(warmup) / sqrt(step)``; evaluated at torch's ``_step_count`` (1 for the first update).
- ``dadam``: audiocraft's own D-Adaptation Adam (no bias correction, decoupled weight decay
  scaled by d*lr, an update that does nothing while lr = 0). ``optax.contrib.dadapt_adamw`` is a
  later variant of the method (bias-corrected, sqrt(beta2) for the gradient sum) and gives
  different steps; it is offered as ``dadapt_adamw``, and ``dadam`` is the recipe's.
- gradients are clipped to ``max_norm`` (global L2 norm, before the optimizer) as the solver's
  ``clip_grad_norm_`` does; weight decay applies to every parameter (audiocraft's LM puts all
  parameters in one group).
- EMA: ``ModuleDictEMA`` with ``unbias=True``: ``count = count * decay + 1``, ``w = 1 / count``,
  ``ema = (1 - w) ema + w param``, stepped every ``ema_every`` updates, starting from a copy of
  the initial parameters.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("dadam", "adamw", "dadapt_adamw")
SCHEDULES = ("cosine", "inverse_sqrt", "constant")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule, clipping and EMA (audiocraft's ``optim`` / ``schedule`` sections)."""
    optimizer: str = "dadam"        # dadam (audiocraft's DAdaptAdam) | adamw | dadapt_adamw (optax.contrib)
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    schedule: str = "cosine"        # cosine | inverse_sqrt | constant
    warmup: int = 4000
    total_steps: int = 0            # cosine length; 0 = the run's train.steps
    lr_min_ratio: float = 0.0       # cosine
    cycle_length: float = 1.0       # cosine
    warmup_init_lr: float = 0.0     # inverse_sqrt
    max_norm: float = 1.0           # gradient clipping; 0 disables
    ema_decay: float = 0.99         # 0 disables the EMA
    ema_every: int = 10             # EMA step every this many updates
    d0: float = 1e-6                # dadam: initial D estimate
    growth_rate: float = 0.0        # dadam: max growth of D per step; 0 = unrestricted (inf)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optim.optimizer {self.optimizer!r}: use one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule {self.schedule!r}: use one of {SCHEDULES}")
        if self.lr <= 0 or self.warmup < 0 or self.max_norm < 0 or self.ema_every < 1:
            raise ValueError(f"optim: need lr > 0, warmup >= 0, max_norm >= 0, ema_every >= 1 "
                             f"(got {self.lr}, {self.warmup}, {self.max_norm}, {self.ema_every})")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay {self.ema_decay} must be in [0, 1)")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """The remaining numbers in their sane ranges (a NaN fails every comparison here)."""
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError(f"optim.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        positive = ("lr", "eps", "cycle_length", "d0")
        non_negative = ("weight_decay", "total_steps", "warmup_init_lr", "growth_rate")
        for name in positive:
            if not 0.0 < getattr(self, name) < math.inf:
                raise ValueError(f"optim.{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in non_negative:
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"optim.{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not self.max_norm < math.inf:
            raise ValueError(f"optim.max_norm must be finite (0 disables clipping), got {self.max_norm}")


# ---------------------------------------------------------------- schedules

def cosine_schedule(lr: float, warmup: int, total: int, lr_min_ratio: float = 0.0,
                    cycle_length: float = 1.0) -> optax.Schedule:
    """audiocraft CosineLRScheduler; ``count`` = optimizer updates done (torch's last_epoch)."""
    if total <= warmup:
        raise ValueError(f"cosine schedule: total steps {total} must exceed warmup {warmup}")

    def schedule(count):
        step = jnp.asarray(count, jnp.float32)
        warm = lr * step / max(warmup, 1)
        s = (step - warmup) / (total - warmup)
        cos = lr * (lr_min_ratio + 0.5 * (1 - lr_min_ratio) * (1.0 + jnp.cos(jnp.pi * s / cycle_length)))
        return jnp.where(step < warmup, warm, jnp.where(step <= total, cos, lr * lr_min_ratio))
    return schedule


def inverse_sqrt_schedule(lr: float, warmup: int, warmup_init_lr: float = 0.0) -> optax.Schedule:
    """audiocraft InverseSquareRootLRScheduler; torch evaluates it at ``_step_count`` = count + 1."""
    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0
        warm = warmup_init_lr + step * (lr - warmup_init_lr) / max(warmup, 1)
        return jnp.where(step < warmup, warm, lr * math.sqrt(warmup) * jax.lax.rsqrt(step))
    return schedule


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    if cfg.schedule == "cosine":
        return cosine_schedule(cfg.lr, cfg.warmup, cfg.total_steps or total_steps, cfg.lr_min_ratio,
                               cfg.cycle_length)
    if cfg.schedule == "inverse_sqrt":
        return inverse_sqrt_schedule(cfg.lr, cfg.warmup, cfg.warmup_init_lr)
    return lambda count: jnp.asarray(cfg.lr, jnp.float32)


# ---------------------------------------------------------------- audiocraft's DAdaptAdam

class DAdamState(NamedTuple):
    exp_avg: Any
    exp_avg_sq: Any
    s: Any
    d: jax.Array              # the D estimate (float32 scalar)
    gsq_weighted: jax.Array
    count: jax.Array          # scheduler steps taken (int32)


def _tree_sum(fn, *trees) -> jax.Array:
    return sum(jnp.sum(x) for x in jax.tree.leaves(jax.tree.map(fn, *trees)))


def dadapt_adam(learning_rate: optax.ScalarOrSchedule = 1.0, betas=(0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.0, d0: float = 1e-6,
                growth_rate: float = float("inf")) -> optax.GradientTransformation:
    """audiocraft ``optim.DAdaptAdam`` (decouple=True), step for step.

    One update: with ``lr`` the scheduled value and ``dlr = d lr``,
    ``m = b1 m + dlr (1-b1) g``, ``v = b2 v + (1-b2) g^2``, ``s = b2 s + dlr (1-b2) g``,
    ``gsq_w = b2 gsq_w + dlr^2 (1-b2) sum(g^2 / (sqrt v + eps))``,
    ``d = max(d, min((sum(s^2/(sqrt v+eps))/(1-b2) - gsq_w) / |s|_1, d growth))``, and
    ``p <- p (1 - wd dlr) - m / (sqrt v + eps)`` (dlr from before d changes). While lr = 0
    (the first cosine warmup step) or |s|_1 = 0 the reference returns before touching anything.
    Sums run over the global (sharded) arrays, which is what its FSDP all-reduce does.
    """
    b1, b2 = betas
    sched = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

    def init_fn(params):
        zeros = lambda: jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)  # noqa: E731
        return DAdamState(zeros(), zeros(), zeros(), jnp.asarray(d0, jnp.float32),
                          jnp.zeros([], jnp.float32), jnp.zeros([], jnp.int32))

    def update_fn(grads, state: DAdamState, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG if hasattr(optax, "NO_PARAMS_MSG") else "params needed")
        lr = jnp.asarray(sched(state.count), jnp.float32)
        dlr = state.d * lr
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        m = jax.tree.map(lambda m, g: b1 * m + dlr * (1 - b1) * g, state.exp_avg, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, grads)
        denom = jax.tree.map(lambda v: jnp.sqrt(v) + eps, v)
        s = jax.tree.map(lambda s, g: b2 * s + dlr * (1 - b2) * g, state.s, grads)
        g_sq = _tree_sum(lambda g, dn: g * g / dn, grads, denom)
        sksq = _tree_sum(lambda s, dn: s * s / dn, s, denom)
        sk_l1 = _tree_sum(jnp.abs, s)
        gsq_weighted = b2 * state.gsq_weighted + g_sq * dlr ** 2 * (1 - b2)
        d_hat = (sksq / (1 - b2) - gsq_weighted) / jnp.where(sk_l1 > 0, sk_l1, 1.0)
        d = jnp.maximum(state.d, jnp.minimum(d_hat, state.d * growth_rate))
        updates = jax.tree.map(lambda p, m, dn: -weight_decay * dlr * p.astype(jnp.float32) - m / dn,
                               params, m, denom)
        active = (lr > 0) & (sk_l1 > 0)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)  # noqa: E731
        new_state = DAdamState(keep(m, state.exp_avg), keep(v, state.exp_avg_sq), keep(s, state.s),
                               jnp.where(active, d, state.d),
                               jnp.where(active, gsq_weighted, state.gsq_weighted),
                               state.count + 1)
        updates = jax.tree.map(lambda u, p: jnp.where(active, u, 0.0).astype(p.dtype), updates, params)
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- the whole transformation

def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(clip -> optimizer, schedule). The schedule is also returned for logging."""
    schedule = make_schedule(cfg, total_steps)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "dadam":
        opt = dadapt_adam(schedule, betas, cfg.eps, cfg.weight_decay, cfg.d0,
                          cfg.growth_rate if cfg.growth_rate > 0 else float("inf"))
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, cfg.beta1, cfg.beta2, cfg.eps, weight_decay=cfg.weight_decay)
    else:
        opt = optax.contrib.dadapt_adamw(schedule, betas, cfg.eps, weight_decay=cfg.weight_decay)
    parts = [optax.clip_by_global_norm(cfg.max_norm)] if cfg.max_norm > 0 else []
    return optax.chain(*parts, opt), schedule


def effective_lr(cfg: OptimConfig, schedule: optax.Schedule, opt_state: Any, count: jax.Array) -> jax.Array:
    """The learning rate of the update just taken (times D for the D-Adaptation optimizers)."""
    lr = jnp.asarray(schedule(count), jnp.float32)
    for part in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, DAdamState)):
        if isinstance(part, DAdamState):
            return lr * part.d
    if cfg.optimizer == "dadapt_adamw":
        for part in jax.tree.leaves(opt_state, is_leaf=lambda x: type(x).__name__ == "DAdaptAdamWState"):
            if type(part).__name__ == "DAdaptAdamWState":
                return lr * part.estim_lr
    return lr


# ---------------------------------------------------------------- EMA

def ema_update(ema: Any, params: Any, count: jax.Array, decay: float) -> tuple[Any, jax.Array]:
    """One ModuleDictEMA.step (unbias=True): returns (new ema, new count)."""
    count = count * decay + 1.0
    w = 1.0 / count
    return jax.tree.map(lambda e, p: (e * (1 - w) + p * w).astype(e.dtype), ema, params), count
