"""The token LMs' training loop, top to bottom: mesh -> model -> state -> jitted step -> loop.

    family     the lm section's type picks the model and its objective (``objective``): an
               LMConfig trains MAGNeT (masked stages, metrics per stage), a MusicGenConfig
               MusicGen (next step over the delay pattern, metrics per codebook); everything
               else (data, state, step, checkpoints, mesh, logging) is the same code
    mesh       make_mesh(mesh.data, mesh.fsdp, mesh.tensor) over every process's devices
    model      MagnetLM or MusicGenLM (+ TextConditioner when text-conditioned), from scratch or
               finetune.init_from; float32 master weights, compute in lm.compute_dtype
    state      params / optimizer / EMA / step / rng / non-finite counters, sharded by the
               rules table (FSDP: 'embed' over 'fsdp'; Megatron: heads / mlp / vocab over 'tensor')
    step       one jax.jit over the state with in/out shardings and the state donated:
               grad_accum micro-batches (lax.scan) -> masked mean of gradients -> frozen parts
               zeroed -> global norm -> clip + optimizer -> EMA every ema_every updates; a
               non-finite loss or gradient keeps the old state and counts the step as skipped
    loop       batches from the grain loader (per process, then one global array), metrics every
               log_every steps (JSONL + TensorBoard + progress bar), validation every eval_every,
               orbax checkpoints every checkpoint_every and on SIGTERM / SIGINT

Every random draw is a function of (seed, step): the step key is fold_in(rng, step) and the text
dropouts are seeded by (seed, step, process), and the data position is checkpointed, so a run
resumed from a checkpoint ends bit-identical to one that was never interrupted.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from magnet_jax.lm.ar_objective import musicgen_loss
from magnet_jax.lm.objective import magnet_loss, restricted_stage, span_count_lut
from magnet_jax.train import sharding
from magnet_jax.train.checkpointing import Checkpoints, PreemptionGuard
from magnet_jax.train.config import FAMILY_KEY, check_config, lm_family, to_json
from magnet_jax.train.data import Batches, check_model_matches_data, load_text_encoder, split_exists
from magnet_jax.train.metrics import MetricsWriter, device_peak_flops, plot_losses, train_step_flops
from magnet_jax.train.optim import effective_lr, ema_update, make_optimizer
from magnet_jax.train.state import (build_model, commit_if_finite, init_state, param_shardings, state_shardings,
                                    trainable_mask)


_STEP_CACHE: dict = {}


class NonFiniteError(RuntimeError):
    """Too many non-finite steps in a row: the run stopped."""


@dataclasses.dataclass
class Trainer:
    """Everything the loop needs, built once from a config (tests drive the pieces directly)."""
    config: dict
    mesh: Any
    graphdef: Any
    encoder: Any
    text_width: int | None
    tx: Any
    schedule: Callable
    mask: dict
    param_sh: dict
    state_sh: dict
    abstract_state: dict
    init_params: Callable[[], dict]
    init_info: dict
    train_step: Callable
    eval_step: Callable
    objective: Objective


# ---------------------------------------------------------------- the family's objective

@dataclasses.dataclass(frozen=True)
class Objective:
    """How one model family trains; ``objective(config)`` picks it from the lm section's type.

    loss(lm, codes, cond, key, padding_mask): the training loss, a NamedTuple whose fields are
        the step's metrics (``loss`` and ``accuracy`` first; MAGNeT adds its stage and masked
        fraction, MusicGen its cross-entropy and accuracy per codebook)
    evaluate(lm, codes, cond, key, padding_mask): (cross-entropy [n_q], accuracy [n_q]) with CFG
        dropout off, per stage (MAGNeT: one masked pass per stage) or per codebook (MusicGen)
    part: what those n_q entries are named after in metrics.jsonl ('stage' or 'codebook')
    per_part(metrics): (index, loss, accuracy) per part, from one step's host metrics
    route(key): None, or a traced bool the step branches on (``lax.cond``) before the loss, each
        branch calling ``loss(..., route=True/False)`` (static): MAGNeT's restricted stage
        (stage > 0 computes only the self-attention band, stage 0 full attention)
    """
    family: str
    loss: Callable
    evaluate: Callable
    part: str
    per_part: Callable[[dict], list[tuple[int, float, float]]]
    route: Callable | None = None


def objective(config: dict, mask_rate: float | None = None) -> Objective:
    """The objective of the config's model family (``mask_rate``: MAGNeT's diagnostic validation)."""
    if lm_family(config["lm"]) == "musicgen":
        if mask_rate is not None:
            raise ValueError("mask_rate is MAGNeT's; MusicGen masks nothing")
        return _musicgen_objective(config)
    return _magnet_objective(config, mask_rate)


def _magnet_objective(config: dict, mask_rate: float | None) -> Objective:
    lm_cfg, tc, txc = config["lm"], config["train"], config["text"]
    lut = jnp.asarray(span_count_lut(lm_cfg.sequence_len, lm_cfg.span_len))
    probs = (jnp.asarray(tc.stage_weights, jnp.float32) / sum(tc.stage_weights)) if tc.stage_weights else None

    def loss(lm, codes, cond, key, padding_mask, route=None):
        return magnet_loss(lm, codes, cond, key, lut=lut, cfg_dropout=txc.cfg_dropout,
                           padding_mask=padding_mask, remat=tc.remat, stage_probs=probs, restricted=route)

    def route(key):
        return restricted_stage(lm_cfg, key, probs)

    def evaluate(lm, codes, cond, key, padding_mask):
        def one_stage(s):   # lax.map: one compiled stage body instead of n_q unrolled copies
            out = magnet_loss(lm, codes, cond, jax.random.fold_in(key, s), lut=lut, cfg_dropout=0.0,
                              padding_mask=padding_mask, stage=s, mask_rate=mask_rate)
            return out.loss, out.accuracy
        return jax.lax.map(one_stage, jnp.arange(lm_cfg.n_q, dtype=jnp.int32))

    def per_part(m: dict) -> list[tuple[int, float, float]]:
        return list(zip(m["stage"].tolist(), m["loss"].tolist(), m["accuracy"].tolist()))
    return Objective("magnet", loss, evaluate, "stage", per_part,
                     route if (tc.band_attention and lm_cfg.subcodes_context >= 0) else None)


def _musicgen_objective(config: dict) -> Objective:
    tc, txc = config["train"], config["text"]

    def loss(lm, codes, cond, key, padding_mask):
        return musicgen_loss(lm, codes, cond, key, cfg_dropout=txc.cfg_dropout, padding_mask=padding_mask,
                             remat=tc.remat)

    def evaluate(lm, codes, cond, key, padding_mask):
        out = musicgen_loss(lm, codes, cond, key, cfg_dropout=0.0, padding_mask=padding_mask)
        return out.ce_per_codebook, out.accuracy_per_codebook

    def per_part(m: dict) -> list[tuple[int, float, float]]:     # [micro-batches, K] each
        return [(k, float(ce), float(acc)) for ces, accs in zip(m["ce_per_codebook"], m["accuracy_per_codebook"])
                for k, (ce, acc) in enumerate(zip(ces, accs))]
    return Objective("musicgen", loss, evaluate, "codebook", per_part)


# ---------------------------------------------------------------- the step functions

def _split_micro(x: jax.Array, accum: int) -> jax.Array:
    """[B, ...] -> [accum, B/accum, ...]; micro-batch j = rows j, j+accum, ... so each device's
    contiguous block of the batch stays on that device (no resharding)."""
    x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    return sharding.constrain(x, None, "batch", *([None] * (x.ndim - 2)))


def make_loss_fn(graphdef, config: dict, text: bool):
    """(params, batch, key, poison) -> (loss, the objective's output): text projection, then the
    loss of the config's family (``objective``)."""
    family_loss = objective(config).loss

    def loss_fn(params, mb, key, poison, route=None):
        model = nnx.merge(graphdef, params)
        cond = model.text(mb["text_hidden"], mb["text_mask"]) if text else None
        extra = {} if route is None else {"route": route}
        out = family_loss(model.lm, mb["codes"], cond, key, mb["padding_mask"], **extra)
        loss = out.loss * (1.0 + poison)        # poison = NaN only under fault injection
        return loss, out._replace(loss=loss)
    return loss_fn


def make_train_step(graphdef, config: dict, tx, schedule, mask: dict, text: bool):
    tc, oc = config["train"], config["optim"]
    accum, use_ema = tc.grad_accum, oc.ema_decay > 0
    value_and_grad = jax.value_and_grad(make_loss_fn(graphdef, config, text), has_aux=True)
    route = objective(config).route

    def grad_fn(params, mb, key, poison):
        if route is None:
            return value_and_grad(params, mb, key, poison)
        # one branch per static route (MAGNeT: band-only attention for stages > 0), the
        # gradient taken inside each so neither branch carries the other's residuals
        return jax.lax.cond(route(key), lambda *a: value_and_grad(*a, route=True),
                            lambda *a: value_and_grad(*a, route=False), params, mb, key, poison)

    def step(state, batch, poison):
        params = state["params"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        if accum == 1:
            (_, out), grads = grad_fn(params, batch, key, poison)
            outs = jax.tree.map(lambda x: x[None], out)
        else:
            micro = jax.tree.map(lambda x: _split_micro(x, accum), batch)

            def body(acc, inputs):
                mb, k = inputs
                (_, out), g = grad_fn(params, mb, k, poison)
                return jax.tree.map(jnp.add, acc, g), out
            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, outs = jax.lax.scan(body, zeros, (micro, jax.random.split(key, accum)))
            grads = jax.tree.map(lambda g: g / accum, grads)
        grads = jax.tree.map(lambda g, m: g * m, grads, mask)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        loss = jnp.mean(outs.loss)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates_done = state["step"] - state["nonfinite_total"]     # successful updates so far
        lr = effective_lr(oc, schedule, state["opt_state"], updates_done)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        updates = jax.tree.map(lambda u, m: u * m, updates, mask)
        new = {"params": optax.apply_updates(params, updates), "opt_state": opt_state}
        if use_ema:
            ema, count = ema_update(state["ema"], new["params"], state["ema_count"], oc.ema_decay)
            now = (updates_done + 1) % oc.ema_every == 0
            new["ema"] = jax.tree.map(lambda a, b: jnp.where(now, a, b), ema, state["ema"])
            new["ema_count"] = jnp.where(now, count, state["ema_count"])
        out_state = commit_if_finite(state, new, finite)     # a non-finite step keeps the old state
        metrics = {**outs._asdict(), "grad_norm": grad_norm, "lr": lr,     # the objective's fields first
                   "finite": finite, "nonfinite_run": out_state["nonfinite_run"],
                   "nonfinite_total": out_state["nonfinite_total"]}
        return out_state, metrics

    return step


def make_eval_step(graphdef, config: dict, text: bool, mask_rate: float | None = None):
    """Cross-entropy and accuracy [n_q] on one batch, conditional: of every stage (MAGNeT: fixed
    masks, mask rates from the cosine schedule or all ``mask_rate``) or every codebook (MusicGen)."""
    evaluate = objective(config, mask_rate).evaluate

    def step(params, batch, key):
        model = nnx.merge(graphdef, params)
        cond = model.text(batch["text_hidden"], batch["text_mask"]) if text else None
        return evaluate(model.lm, batch["codes"], cond, key, batch["padding_mask"])

    return step


# ---------------------------------------------------------------- building a trainer

def make_run_mesh(mc) -> Any:
    devices = None
    if mc.devices:
        if jax.process_count() > 1:
            raise ValueError("mesh.devices selects devices of a single process; leave it 0 with "
                             "several processes")
        if mc.devices > jax.device_count():
            raise ValueError(f"mesh.devices={mc.devices} but only {jax.device_count()} devices exist")
        devices = jax.devices()[:mc.devices]
    return sharding.make_mesh(mc.data, mc.fsdp, mc.tensor, devices=devices)


def build_trainer(config: dict, encoder: Any = "load") -> Trainer:
    config = check_config(config)
    lm_cfg, tc, oc, mc, txc, fc = (config[k] for k in ("lm", "train", "optim", "mesh", "text", "finetune"))
    if txc.encoder != "none" and not lm_cfg.cross_attention:
        raise ValueError("text.encoder is set but lm.cross_attention is false; use text.encoder=none")
    mesh = make_run_mesh(mc)
    micro = tc.batch_size // tc.grad_accum
    sharding.check_batch_divides(micro, mesh)
    if tc.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size {tc.batch_size} is not divisible by the "
                         f"{jax.process_count()} processes")
    if encoder == "load":
        encoder = load_text_encoder(txc) if lm_cfg.cross_attention else None
    text_width = encoder.width if encoder is not None else None

    abstract_model = nnx.eval_shape(lambda: build_model(lm_cfg, text_width, tc.seed))
    graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
    abstract_params = nnx.to_pure_dict(abstract_params)
    param_sh = param_shardings(abstract_model, mesh)
    _check_params_divide(abstract_params, param_sh)
    tx, schedule = make_optimizer(oc, tc.steps)
    mask = trainable_mask(abstract_params, fc.freeze, lm_cfg.num_layers)
    abstract_state = jax.eval_shape(lambda p: init_state(p, tx, oc.ema_decay > 0, tc.seed), abstract_params)
    state_sh = state_shardings(abstract_state, param_sh, mesh)

    init_info: dict = {"init_from": None}
    if fc.init_from:
        from magnet_jax.train.finetune import load_pretrained
        loaded, init_info = load_pretrained(fc.init_from, lm_cfg, text_width)
        fresh = None
        if text_width and "text" not in loaded:   # projection not in the checkpoint: fresh init
            fresh = jax.jit(lambda: nnx.to_pure_dict(nnx.state(build_model(lm_cfg, text_width, tc.seed),
                                                                nnx.Param))["text"])()
            loaded["text"] = jax.tree.map(np.asarray, fresh)

        def init_params():
            return place(loaded, param_sh)
    elif tc.jit_init:   # parameters are born sharded on their devices (large models)
        create = jax.jit(lambda: nnx.to_pure_dict(nnx.state(build_model(lm_cfg, text_width, tc.seed), nnx.Param)),
                         out_shardings=param_sh)

        def init_params():
            return create()
    else:               # eager on the host, then placed (small models: no init program to compile)
        def init_params():
            with jax.default_device(jax.local_devices(backend="cpu")[0]):
                fresh = nnx.to_pure_dict(nnx.state(build_model(lm_cfg, text_width, tc.seed), nnx.Param))
            return place(jax.tree.map(np.asarray, fresh), param_sh)

    text = text_width is not None
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sh = {"codes": sharding.logical_sharding(mesh, "batch", None, None),
                "padding_mask": sharding.logical_sharding(mesh, "batch", None)}
    if text:
        batch_sh["text_hidden"] = sharding.logical_sharding(mesh, "batch", None, None)
        batch_sh["text_mask"] = sharding.logical_sharding(mesh, "batch", None)
    # the same config on the same mesh reuses the compiled step (a resumed run, repeated runs
    # in one process); everything the step closes over is a function of this key
    cosine_len = (oc.total_steps or tc.steps) if oc.schedule == "cosine" else 0
    what = {"lm": to_json(config)["lm"], "optim": to_json(config)["optim"], "text": to_json(config)["text"],
            "freeze": fc.freeze, "grad_accum": tc.grad_accum, "remat": tc.remat, "band_attention": tc.band_attention, "cosine_len": cosine_len,
            "stage_weights": tc.stage_weights}
    key = (json.dumps(what, sort_keys=True), tuple(d.id for d in mesh.devices.flat),
           tuple(mesh.shape.items()), text_width)
    if key not in _STEP_CACHE:
        _STEP_CACHE[key] = (
            jax.jit(make_train_step(graphdef, config, tx, schedule, mask, text),
                    in_shardings=(state_sh, batch_sh, replicated),
                    out_shardings=(state_sh, replicated), donate_argnums=(0,)),
            jax.jit(make_eval_step(graphdef, config, text),
                    in_shardings=(param_sh, batch_sh, replicated), out_shardings=replicated))
    train_step, eval_step = _STEP_CACHE[key]
    return Trainer(config, mesh, graphdef, encoder, text_width, tx, schedule, mask, param_sh, state_sh,
                   abstract_state, init_params, init_info, train_step, eval_step, objective(config))


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays (the same on every process) -> global arrays with the given shardings; each
    process fills only its own devices' slices, so this works across hosts."""
    def one(x, sh):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda index: x[index])
    return jax.tree.map(one, tree, shardings)


def _check_params_divide(abstract_params: dict, param_sh: dict) -> None:
    """Name the parameter a mesh cannot split (instead of an XLA error deep in the first step)."""
    flat_p = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    for (path, leaf), sh in zip(flat_p, jax.tree.leaves(param_sh)):
        for dim, (size, axes) in enumerate(zip(leaf.shape, tuple(sh.spec) + (None,) * leaf.ndim)):
            names = axes if isinstance(axes, tuple) else (axes,)
            ways = math.prod(sh.mesh.shape[a] for a in names if a is not None)
            if size % ways:
                name = "/".join(str(getattr(k, "key", k)) for k in path)
                raise ValueError(f"parameter {name} {tuple(leaf.shape)}: axis {dim} of size {size} cannot be "
                                 f"split {ways} ways over mesh axes {names} (mesh {dict(sh.mesh.shape)}); "
                                 f"pick mesh sizes that divide the model's heads / dims")


def initial_state(trainer: Trainer) -> dict:
    tc, oc = trainer.config["train"], trainer.config["optim"]
    init = jax.jit(lambda p: init_state(p, trainer.tx, oc.ema_decay > 0, tc.seed),
                   in_shardings=(trainer.param_sh,), out_shardings=trainer.state_sh)
    with jax.set_mesh(trainer.mesh):
        return init(trainer.init_params())


def host(x: jax.Array) -> np.ndarray:
    """A replicated (or fully addressable) array's value on this host."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def abstract_with_shardings(trainer: Trainer) -> dict:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        trainer.abstract_state, trainer.state_sh)


# ---------------------------------------------------------------- validation

def validate(trainer: Trainer, state: dict, data: Batches, batches: int) -> dict:
    """Mean cross-entropy / accuracy per stage (MAGNeT) or codebook (MusicGen) over the first
    ``batches`` validation batches (the same batches and masks every time: a low-noise curve)."""
    tc = trainer.config["train"]
    params = state["ema"] if (tc.eval_ema and "ema" in state) else state["params"]
    data.restart()
    key = jax.random.key(tc.seed + 1_000_003)
    losses, accs = [], []
    with jax.set_mesh(trainer.mesh):
        for i in range(batches):
            try:
                batch = data.next(i)
            except StopIteration:
                break
            l, a = trainer.eval_step(params, batch, jax.random.fold_in(key, i))
            losses.append(host(l))
            accs.append(host(a))
    if not losses:
        return {}
    loss, acc, part = np.mean(losses, axis=0), np.mean(accs, axis=0), trainer.objective.part
    row = {f"ce_{part}{s}": float(v) for s, v in enumerate(loss)}
    row.update({f"accuracy_{part}{s}": float(v) for s, v in enumerate(acc)})
    row["ce"] = float(loss.mean())
    row["batches"] = len(losses)
    row["weights"] = "ema" if (tc.eval_ema and "ema" in state) else "params"
    return row


# ---------------------------------------------------------------- the loop

class _Window:
    """Running sums of the train metrics between two log rows; per stage or codebook as the
    objective reports them (``Objective.per_part``)."""

    def __init__(self, n_q: int, per_part: Callable[[dict], list[tuple[int, float, float]]]):
        self.n_q = n_q
        self.per_part = per_part
        self.reset()

    def reset(self) -> None:
        self.loss, self.acc, self.gnorm, self.steps = [], [], [], 0
        self.stage_loss = [[] for _ in range(self.n_q)]
        self.stage_acc = [[] for _ in range(self.n_q)]
        self.skipped = 0
        self.t0 = time.perf_counter()

    def add(self, m: dict) -> None:
        self.steps += 1
        if not bool(m["finite"]):
            self.skipped += 1
            return
        self.loss.extend(m["loss"].tolist())
        self.acc.extend(m["accuracy"].tolist())
        self.gnorm.append(float(m["grad_norm"]))
        for s, l, a in self.per_part(m):
            self.stage_loss[s].append(l)
            self.stage_acc[s].append(a)


def train(config: dict, workdir: str | Path, *, encoder: Any = "load",
          on_step: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) in ``workdir``; returns the run summary (also written as summary.json).

    ``on_step(step)`` runs on the host after each step is dispatched (tests use it to send a
    signal at a chosen step).
    """
    from tqdm import tqdm

    config = check_config(config)
    lm_cfg, tc, dc, txc = config["lm"], config["train"], config["data"], config["text"]
    check_model_matches_data(lm_cfg, dc)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    _check_or_write_config(workdir, config)
    trainer = build_trainer(config, encoder)
    mesh, T = trainer.mesh, lm_cfg.sequence_len
    lead = jax.process_index() == 0

    train_data = Batches(dc, txc, trainer.encoder, mesh, batch_size=tc.batch_size, frames=T,
                         seed=tc.seed, split=dc.train_split, train=True, prefetch=dc.prefetch)
    valid_data = None
    if tc.eval_every and split_exists(dc.dir, dc.valid_split):
        valid_data = Batches(dc, txc, trainer.encoder, mesh, batch_size=tc.batch_size, frames=T,
                             seed=tc.seed, split=dc.valid_split, train=False)

    ckpt = Checkpoints(workdir / "checkpoints", tc.keep_checkpoints, tc.async_checkpoint)
    resumed = ckpt.restore_latest(abstract_with_shardings(trainer), train_data.iterator)   # newest intact
    if resumed is not None:
        start, state = resumed
        train_data.set_state(train_data.iterator.get_state())
    else:
        state, start = initial_state(trainer), 0
    metrics = MetricsWriter(workdir, resume_step=start)

    S = txc.max_tokens if trainer.text_width else 0
    step_flops = train_step_flops(lm_cfg, tc.batch_size, T, S, trainer.text_width or 0)
    peak = device_peak_flops(tc.peak_tflops)
    tokens_per_step = tc.batch_size * lm_cfg.n_q * T
    poison_steps = set(tc.inject_nan_steps)
    window, part = _Window(lm_cfg.n_q, trainer.objective.per_part), trainer.objective.part
    summary = {"workdir": str(workdir), "family": trainer.objective.family, "resumed_from": start or None,
               "devices": jax.device_count(),
               "processes": jax.process_count(), "mesh": dict(mesh.shape), **trainer.init_info,
               "train_step_flops": step_flops, "flop_formula": "3 x forward_flops (magnet_jax/train/metrics.py)"}
    stop_reason, step, pending, first_loss, last_loss = "finished", start, None, None, None
    last_valid: dict = {}

    def handle(done_step: int, m: dict) -> None:
        nonlocal first_loss, last_loss
        m = {k: host(v) for k, v in m.items()}
        window.add(m)
        if bool(m["finite"]):
            loss = float(np.mean(m["loss"]))
            first_loss = loss if first_loss is None else first_loss
            last_loss = loss
        elif lead:
            tqdm.write(f"step {done_step}: non-finite loss or gradient, update skipped "
                       f"({int(m['nonfinite_run'])} in a row, {int(m['nonfinite_total'])} in all)")
        if int(m["nonfinite_run"]) >= tc.max_nonfinite:
            raise NonFiniteError(
                f"stopped at step {done_step}: {int(m['nonfinite_run'])} non-finite steps in a row "
                f"(train.max_nonfinite={tc.max_nonfinite}); the last checkpoint is step "
                f"{ckpt.latest_step()}. Lower optim.lr, check the data, or try lm.compute_dtype=float32")
        if done_step % tc.log_every == 0 or done_step == tc.steps:
            dt = time.perf_counter() - window.t0
            row = {"loss": _mean(window.loss), "accuracy": _mean(window.acc),
                   "grad_norm": _mean(window.gnorm), "lr": float(m["lr"]),
                   "skipped": window.skipped, "nonfinite_total": int(m["nonfinite_total"]),
                   "steps_per_s": window.steps / dt, "tokens_per_s": window.steps * tokens_per_step / dt,
                   "mfu": (window.steps * step_flops / dt / (peak * jax.device_count())) if peak else None}
            for s in range(lm_cfg.n_q):
                row[f"loss_{part}{s}"] = _mean(window.stage_loss[s])
                row[f"accuracy_{part}{s}"] = _mean(window.stage_acc[s])
            metrics.write(done_step, "train", row)
            bar.set_postfix(loss=f"{row['loss']:.3f}" if row["loss"] is not None else "nan",
                            tok_s=f"{row['tokens_per_s']:.0f}")
            window.reset()

    bar = tqdm(total=tc.steps, initial=start, desc="train", disable=not (tc.progress and lead),
               dynamic_ncols=True)
    try:
        with PreemptionGuard() as guard, jax.set_mesh(mesh):
            while step < tc.steps:
                batch = train_data.next(step)
                poison = np.float32(np.nan if step + 1 in poison_steps else 0.0)
                state, m = trainer.train_step(state, batch, poison)
                step += 1
                if pending is not None:
                    handle(*pending)          # the previous step's metrics: no stall on this one
                pending = (step, m)
                bar.update(1)
                if on_step is not None:
                    on_step(step)
                if step % tc.checkpoint_every == 0 or step == tc.steps:
                    ckpt.save(step, state, train_data.consumed_state, force=step == tc.steps)
                if valid_data is not None and (step % tc.eval_every == 0 or step == tc.steps):
                    handle(*pending)
                    pending = None
                    last_valid = validate(trainer, state, valid_data, tc.eval_batches)
                    metrics.write(step, "valid", last_valid)
                if guard.requested() and step < tc.steps:
                    if pending is not None:
                        handle(*pending)
                        pending = None
                    ckpt.save(step, state, train_data.consumed_state, force=True)
                    stop_reason = f"signal {guard.signum or 'on another process'}: saved step {step}"
                    break
            if pending is not None:
                handle(*pending)
                pending = None
    finally:
        train_data.close()
        bar.close()
        ckpt.close()
        metrics.close()
    summary.update({"stopped": stop_reason, "preempted": stop_reason != "finished", "step": step,
                    "first_loss": first_loss, "last_loss": last_loss,
                    "nonfinite_total": int(host(state["nonfinite_total"])), "valid": last_valid or None})
    if lead:
        plot_losses(workdir / "metrics.jsonl", workdir / "loss.png",
                    title=f"{'MusicGen' if trainer.objective.family == 'musicgen' else 'MAGNeT'} training")
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["state"] = state
    return summary


def _mean(xs: list) -> float | None:
    return float(np.mean(xs)) if xs else None


def _check_or_write_config(workdir: Path, config: dict) -> None:
    """A workdir belongs to one model: resuming with another lm / optim config is refused."""
    check_or_write_run_config(workdir, to_json(config), ("lm", "optim"), field_defaults(config))


def field_defaults(config: dict) -> dict[str, dict]:
    """Per dataclass section of ``config``, the JSON of each field's default value; a train
    config's ``lm.family`` defaults to 'magnet' (config.json had no family before MusicGen)."""
    defaults = json.loads(json.dumps({name: {f.name: f.default for f in dataclasses.fields(obj)
                                             if f.default is not dataclasses.MISSING}
                                      for name, obj in config.items() if dataclasses.is_dataclass(obj)}))
    if "lm" in defaults:
        defaults["lm"][FAMILY_KEY] = "magnet"
    return defaults


def has_checkpoints(directory: Path) -> bool:
    """Whether a run's checkpoint folder holds any step, finished or not, or one moved aside into
    a sub-folder (orbax names a step's folder and its temporary folder after the step number)."""
    if not directory.is_dir():
        return False
    entries = list(directory.iterdir())
    inner = [q for p in entries if p.is_dir() and not p.name[:1].isdigit() for q in p.iterdir()]
    return any(p.name[:1].isdigit() for p in entries + inner)


def check_or_write_run_config(workdir: Path, now: dict, sections: tuple[str, ...],
                              defaults: dict[str, dict] | None = None) -> None:
    """Refuse to resume ``workdir`` when one of ``sections`` of its config.json differs from ``now``
    (the config as JSON), naming the fields; otherwise (re)write config.json. Shared by ``train``
    and ``train-codec``: a workdir holds one model.

    A field the stored config.json lacks was added to the code after that run began; resuming is
    fine while it keeps its default (``defaults``, from ``field_defaults``), which is how the
    run was trained. A workdir without any checkpoint holds no trained state (its first run
    failed before its first save, e.g. on a bad setting): any config is accepted there."""
    path = workdir / "config.json"
    now = json.loads(json.dumps(now))
    defaults = defaults or {}
    if path.exists() and has_checkpoints(workdir / "checkpoints"):
        before = json.loads(path.read_text())
        for section in sections:
            old, new, default = before.get(section, {}), now[section], defaults.get(section, {})
            diff = {k: (old.get(k), v) for k, v in new.items()
                    if (old[k] != v if k in old else (k not in default or default[k] != v))}
            if diff:
                raise ValueError(f"{workdir} holds a run with a different {section} config "
                                 f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in diff.items())}); "
                                 f"use a new --workdir or the original settings")
    if jax.process_index() == 0:
        path.write_text(json.dumps(now, indent=1))
