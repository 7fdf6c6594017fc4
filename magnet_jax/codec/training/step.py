"""The codec train step: generator and discriminator updated in one jitted, sharded program.

One step, in audiocraft's ``CompressionSolver.run_step`` order:

1. generator forward ``y = decode(rvq(encode(x)))`` with the number of active codebooks drawn
   per batch (quantizer dropout), kept as a ``jax.vjp`` closure;
2. discriminator update on ``(stop(y), x)`` (hinge loss; with probability ``1 / adv_every``);
3. the generator's output losses (l1, msspec, adv, feat, sisnr, log_mel) as a function of ``y`` only,
   judged by the *updated* discriminator; their gradients w.r.t. ``y`` are combined by the
   balancer (one backward per loss through the losses only, batched with ``vmap``) or by the
   plain weighted sum, then pulled back through the generator once, together with the
   commitment penalty (outside the balancer, as the reference's ``penalty``);
4. clip + optimizer on the generator (codebooks masked out), then the EMA codebook update and
   dead-code replacement with this batch's statistics.

A non-finite loss or gradient keeps the old state and counts the step as skipped, as LM
training does. Every random draw is ``fold_in(rng, step)``, so a resumed run repeats exactly.

The state is a plain pytree:

    gen, gen_opt            codec parameters (codebooks included) and their optimizer state
    disc, disc_opt          discriminator parameters and optimizer state (absent without one)
    vq                      rvq.VQState: EMA cluster sizes and sums, the k-means flag
    balancer                losses.BalancerState (absent without the balancer)
    ema, ema_count          EMA of the codec parameters (when optim.ema_decay > 0)
    step, rng, nonfinite_total, nonfinite_run
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from magnet_jax.codec.encodec import Encodec
from magnet_jax.codec.training import losses as L
from magnet_jax.codec.training import rvq
from magnet_jax.codec.training.config import check_config
from magnet_jax.codec.training.discriminator import MultiScaleSTFTDiscriminator
from magnet_jax.codec.vae import kl_divergence, reparameterize
from magnet_jax.train import sharding
from magnet_jax.train.optim import effective_lr, ema_update, make_optimizer
from magnet_jax.train.state import commit_if_finite, key_data, like_param_shardings


@dataclasses.dataclass
class CodecTrainer:
    """Everything the loop needs, built once from a config."""
    config: dict
    mesh: Any
    gen_graphdef: Any
    disc_graphdef: Any | None
    gen_tx: Any
    disc_tx: Any | None
    gen_schedule: Callable
    abstract_state: dict
    state_sh: dict
    batch_sh: Any
    init_state: Callable[[], dict]
    train_step: Callable
    kmeans_step: Callable
    reconstruct: Callable        # (gen params, audio [B, C, N], n_q) -> audio [B, C, N]


# ---------------------------------------------------------------- models and state

def build_models(config: dict, seed: int) -> tuple[Encodec, MultiScaleSTFTDiscriminator | None]:
    rngs = nnx.Rngs(seed)
    gen = Encodec(config["codec"], rngs=rngs)
    disc = None
    if config["disc"].filters > 0 and config["losses"].adv + config["losses"].feat > 0:
        disc = MultiScaleSTFTDiscriminator(config["disc"], config["codec"].channels, rngs=nnx.Rngs(seed + 1))
    return gen, disc


def _params(module) -> dict:
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def codebook_mask(params: dict) -> dict:
    """1.0 for every parameter the optimizer trains, 0.0 for the codebooks (EMA-updated)."""
    def mask(path, leaf):
        keys = [getattr(k, "key", k) for k in path]
        return np.float32(0.0 if keys[0] == "quantizer" else 1.0)
    return jax.tree_util.tree_map_with_path(mask, params)


def fresh_state(config: dict, gen_tx, disc_tx) -> dict:
    """A new train state (traceable: call under jit with out_shardings)."""
    tc, lc, qc, oc = config["train"], config["losses"], config["quantizer"], config["optim"]
    gen, disc = build_models(config, tc.seed)
    gp = _params(gen)
    state = {"gen": gp, "gen_opt": gen_tx.init(gp),
             "step": jnp.zeros([], jnp.int32), "rng": jnp.asarray(key_data(tc.seed)),
             "nonfinite_total": jnp.zeros([], jnp.int32), "nonfinite_run": jnp.zeros([], jnp.int32)}
    if config["codec"].bottleneck == "rvq":
        state["vq"] = rvq.init_state(rvq.get_codebooks(gp), qc.kmeans_init)
    if disc is not None:
        dp = _params(disc)
        state["disc"], state["disc_opt"] = dp, disc_tx.init(dp)
    if lc.balancer:
        state["balancer"] = L.balancer_init(len(lc.balanced()))
    if oc.ema_decay > 0:
        state["ema"] = jax.tree.map(jnp.copy, gp)
        state["ema_count"] = jnp.zeros([], jnp.float32)
    return state


def _state_shardings(abstract: dict, gen: Encodec, disc, mesh) -> dict:
    gen_sh = nnx.to_pure_dict(sharding.state_shardings(nnx.state(gen, nnx.Param), mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    out = {}
    for name, sub in abstract.items():
        if name in ("gen", "ema"):
            out[name] = gen_sh
        elif name == "gen_opt":
            out[name] = like_param_shardings(sub, abstract["gen"], gen_sh, mesh)
        elif name in ("disc", "disc_opt"):
            disc_sh = nnx.to_pure_dict(sharding.state_shardings(nnx.state(disc, nnx.Param), mesh))
            out[name] = disc_sh if name == "disc" else like_param_shardings(sub, abstract["disc"], disc_sh, mesh)
        else:
            out[name] = jax.tree.map(lambda _: replicated, sub)
    return out


# ---------------------------------------------------------------- the step

def _generator_forward(gdef, params: dict, x: jax.Array, n_active: jax.Array):
    """((reconstruction [B, C, N], commitment), rvq stats): the function the step differentiates."""
    model = nnx.merge(gdef, params)
    latent = model.encoder(jnp.swapaxes(x, 1, 2))
    q, stats = rvq.quantize(rvq.get_codebooks(params), latent, n_active)
    y = jnp.swapaxes(model.decoder(q), 1, 2)[..., :x.shape[-1]]
    return (y, stats.commit), stats


def _vae_forward(gdef, params: dict, x: jax.Array, key: jax.Array):
    """((reconstruction [B, C, N], KL), None) for a VAE codec: decode a reparameterised sample
    z = mean + exp(logvar / 2) eps of q(z | x); the KL term stands where RVQ's commitment does."""
    model = nnx.merge(gdef, params)
    mean, logvar = model.bottleneck.moments(model.encoder(jnp.swapaxes(x, 1, 2)))
    z = reparameterize(key, mean, logvar)
    y = jnp.swapaxes(model.decoder(model.bottleneck.expand(z)), 1, 2)[..., :x.shape[-1]]
    return (y, kl_divergence(mean, logvar)), None


DISC_LOSSES = ("adv", "feat")


def _output_losses(config: dict, names: list[str], y, x, disc_apply, dparams, real_fmaps) -> jax.Array:
    """The balanced losses of the generator's output ``y``, in ``names`` order."""
    lc, sr = config["losses"], config["codec"].sample_rate
    values = {}
    if "adv" in names or "feat" in names:
        fake_logits, fake_fmaps = disc_apply(dparams, y)
        if "adv" in names:
            values["adv"] = L.generator_adv_loss(fake_logits, lc.adv_loss)
        if "feat" in names:
            values["feat"] = L.feature_matching(fake_fmaps, real_fmaps)
    if "l1" in names:
        values["l1"] = L.l1(y, x)
    if "msspec" in names:
        values["msspec"] = L.multi_scale_mel(y, x, sr, lc)
    if "sisnr" in names:
        values["sisnr"] = -jnp.mean(L.sisnr(y, x))
    if "log_mel" in names:
        values["log_mel"] = L.log_mel(y, x, sr, lc)
    if "pitch" in names:
        values["pitch"] = L.pitch(y, x, sr, lc)
    return jnp.stack([values[n] for n in names])


def _losses_and_grads(config: dict, names: list[str], y, x, disc_apply, dparams, real_fmaps
                      ) -> tuple[jax.Array, jax.Array]:
    """(values ``[n]``, gradients w.r.t. ``y`` ``[n, *y.shape]``) of the balanced losses.

    Why two groups: one ``vmap``-ed pullback over all n losses would carry n cotangents back
    through the discriminator although only adv and feat depend on it; pulling the
    discriminator losses and the signal losses (l1, mel, SI-SNR) back separately halves the
    discriminator's share of the step.
    """
    values, grads = {}, {}
    for group in ([n for n in names if n in DISC_LOSSES], [n for n in names if n not in DISC_LOSSES]):
        if not group:
            continue
        vals, pullback = jax.vjp(lambda y_: _output_losses(config, group, y_, x, disc_apply, dparams,
                                                           real_fmaps), y)
        gs = jax.vmap(pullback)(jnp.eye(len(group), dtype=vals.dtype))[0]
        for i, n in enumerate(group):
            values[n], grads[n] = vals[i], gs[i]
    return jnp.stack([values[n] for n in names]), jnp.stack([grads[n] for n in names])


def make_train_step(config: dict, gdef, ddef, gen_tx, disc_tx, gen_schedule, mask: dict):
    lc, qc, oc = config["losses"], config["quantizer"], config["optim"]
    n_q = config["codec"].n_q
    vae = config["codec"].bottleneck == "vae"
    penalty = lc.kl if vae else lc.commitment
    weights = lc.balanced()
    names = list(weights)
    w = jnp.asarray([weights[n] for n in names], jnp.float32)
    disc_apply = (lambda p, a: nnx.merge(ddef, p)(a)) if ddef is not None else None

    def step(state: dict, x: jax.Array, poison: jax.Array):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        k_nq, k_dead, k_adv = jax.random.split(key, 3)
        n_active = (jax.random.randint(k_nq, (), 1, n_q + 1) if qc.q_dropout else jnp.int32(n_q))
        if vae:   # the reparameterisation draw gets its own stream; RVQ's draws stay as they were
            n_active = jnp.int32(0)
            fwd = lambda p: _vae_forward(gdef, p, x, jax.random.fold_in(key, 7))  # noqa: E731
        else:
            fwd = lambda p: _generator_forward(gdef, p, x, n_active)  # noqa: E731
        (y, commit), pullback, stats = jax.vjp(fwd, state["gen"], has_aux=True)
        new, metrics = {}, {}
        dparams, real_fmaps, d_loss = None, None, jnp.float32(0.0)
        if ddef is not None:
            d_loss, new["disc"], new["disc_opt"] = _disc_update(state, jax.lax.stop_gradient(y), x, disc_apply,
                                                                disc_tx, lc, k_adv)
            dparams = new["disc"]
            real_fmaps = jax.lax.stop_gradient(disc_apply(dparams, x)[1])
        values, grads_y = _losses_and_grads(config, names, y, x, disc_apply, dparams, real_fmaps)
        if lc.balancer:
            out_grad, g_loss, new["balancer"], ratios = L.balance(
                grads_y, values, w, state["balancer"], total_norm=lc.balancer_total_norm,
                ema_decay=lc.balancer_ema_decay, per_batch_item=lc.balancer_per_batch_item)
            metrics.update({f"ratio_{n}": ratios[i] for i, n in enumerate(names)})
        else:
            out_grad, g_loss = jnp.tensordot(w, grads_y, axes=1), jnp.sum(w * values)
        out_grad = out_grad * (1.0 + poison)           # poison = NaN only under fault injection
        grads = pullback((out_grad, jnp.asarray(penalty, commit.dtype)))[0]
        grads = jax.tree.map(lambda g, m: g * m, grads, mask)
        grad_norm = optax.global_norm(grads)
        updates_done = state["step"] - state["nonfinite_total"]
        lr = effective_lr(oc, gen_schedule, state["gen_opt"], updates_done)
        updates, new["gen_opt"] = gen_tx.update(grads, state["gen_opt"], state["gen"])
        gen = optax.apply_updates(state["gen"], jax.tree.map(lambda u, m: u * m, updates, mask))
        if vae:
            new["gen"], vq_metrics = gen, {}
        else:
            embeds, new["vq"], vq_metrics = rvq.ema_update(rvq.get_codebooks(state["gen"]), state["vq"], stats,
                                                           n_active, k_dead, qc)
            new["gen"] = rvq.set_codebooks(gen, embeds)
        if oc.ema_decay > 0:
            ema, count = ema_update(state["ema"], new["gen"], state["ema_count"], oc.ema_decay)
            now = (updates_done + 1) % oc.ema_every == 0
            new["ema"] = jax.tree.map(lambda a, b: jnp.where(now, a, b), ema, state["ema"])
            new["ema_count"] = jnp.where(now, count, state["ema_count"])
        finite = (jnp.isfinite(g_loss * (1.0 + poison)) & jnp.isfinite(grad_norm) & jnp.isfinite(d_loss)
                  & jnp.isfinite(commit))
        out = commit_if_finite(state, new, finite)
        metrics.update({f"loss_{n}": values[i] for i, n in enumerate(names)})
        metrics.update({"g_loss": g_loss, "d_loss": d_loss, "kl" if vae else "commitment": commit,
                        "grad_norm": grad_norm, "lr": lr, "n_q": n_active, "finite": finite,
                        "nonfinite_run": out["nonfinite_run"], "nonfinite_total": out["nonfinite_total"]})
        if not vae:
            metrics.update({"dead_codes": vq_metrics["dead_codes"], "perplexity": vq_metrics["perplexity"]})
        return out, metrics

    return step


def _disc_update(state, y, x, disc_apply, disc_tx, lc, key):
    """One discriminator step on (fake, real), applied with probability 1 / adv_every."""
    def loss_fn(dp):
        fake_logits, _ = disc_apply(dp, y)
        real_logits, _ = disc_apply(dp, x)
        return L.discriminator_loss(fake_logits, real_logits, lc.adv_loss)
    d_loss, d_grads = jax.value_and_grad(loss_fn)(state["disc"])
    updates, opt = disc_tx.update(d_grads, state["disc_opt"], state["disc"])
    params = optax.apply_updates(state["disc"], updates)
    now = jax.random.uniform(key) <= 1.0 / lc.adv_every
    pick = lambda a, b: jax.tree.map(lambda u, v: jnp.where(now, u, v), a, b)  # noqa: E731
    return d_loss, pick(params, state["disc"]), pick(opt, state["disc_opt"])


# ---------------------------------------------------------------- k-means init and reconstruction

def make_kmeans_step(config: dict, gdef):
    """(state, audio batches [n, B, C, N]) -> state with k-means codebooks (once, before step 1)."""
    qc = config["quantizer"]

    def init(state: dict, audio: jax.Array) -> dict:
        model = nnx.merge(gdef, state["gen"])
        latents = jax.lax.map(lambda a: model.encoder(jnp.swapaxes(a, 1, 2)), audio)
        latents = latents.reshape(-1, latents.shape[-1])
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), 2 ** 31 - 1)
        embeds, vq = rvq.kmeans_init(rvq.get_codebooks(state["gen"]), latents, key, qc)
        out = dict(state)
        out["gen"], out["vq"] = rvq.set_codebooks(state["gen"], embeds), vq
        if "ema" in state:
            out["ema"] = rvq.set_codebooks(state["ema"], embeds)
        return out

    return init


def make_reconstruct(gdef):
    def reconstruct(params: dict, audio: jax.Array, n_q: int) -> jax.Array:
        model = nnx.merge(gdef, params)
        if model.cfg.bottleneck == "vae":     # the posterior mean (no codebooks: n_q is ignored)
            mean, _ = model.bottleneck.moments(model.encoder(jnp.swapaxes(audio, 1, 2)))
            return jnp.swapaxes(model.decoder(model.bottleneck.expand(mean)), 1, 2)[..., :audio.shape[-1]]
        codes = model.quantizer.encode(model.encoder(jnp.swapaxes(audio, 1, 2)), n_q)
        return jnp.swapaxes(model.decoder(model.quantizer.decode(codes)), 1, 2)[..., :audio.shape[-1]]
    return reconstruct


# ---------------------------------------------------------------- building

def build_trainer(config: dict, mesh) -> CodecTrainer:
    config = check_config(config)
    tc = config["train"]
    sharding.check_batch_divides(tc.batch_size, mesh)
    abstract_gen, abstract_disc = nnx.eval_shape(lambda: build_models(config, tc.seed))
    gdef = nnx.split(abstract_gen)[0]
    ddef = nnx.split(abstract_disc)[0] if abstract_disc is not None else None
    gen_tx, gen_schedule = make_optimizer(config["optim"], tc.steps)
    disc_tx = make_optimizer(config["disc_optim"], tc.steps)[0] if ddef is not None else None
    abstract = jax.eval_shape(lambda: fresh_state(config, gen_tx, disc_tx))
    state_sh = _state_shardings(abstract, abstract_gen, abstract_disc, mesh)
    mask = codebook_mask(abstract["gen"])
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sh = sharding.logical_sharding(mesh, "batch", None, None)
    train_step = jax.jit(make_train_step(config, gdef, ddef, gen_tx, disc_tx, gen_schedule, mask),
                         in_shardings=(state_sh, batch_sh, replicated), out_shardings=(state_sh, replicated),
                         donate_argnums=(0,))
    kmeans_step = jax.jit(make_kmeans_step(config, gdef),
                          in_shardings=(state_sh, sharding.logical_sharding(mesh, None, "batch", None, None)),
                          out_shardings=state_sh, donate_argnums=(0,))
    reconstruct = jax.jit(make_reconstruct(gdef), static_argnums=(2,))
    init = jax.jit(lambda: fresh_state(config, gen_tx, disc_tx), out_shardings=state_sh)
    return CodecTrainer(config, mesh, gdef, ddef, gen_tx, disc_tx, gen_schedule, abstract, state_sh, batch_sh,
                        init, train_step, kmeans_step, reconstruct)
