"""``magnet-jax train-dpd``: MeLoDy's dual-path diffusion trained on a corpus of audio.

Each step reads a batch of audio crops (the codec trainer's loader: grain, exact position in the
checkpoint), turns it into the DPD's two inputs with frozen parts trained before it, and takes one
optimizer step on ``objective.velocity_loss`` (multi-chunk angles, CFG dropout):

- x0: the VAE-GAN's posterior mean (``codec.bottleneck='vae'``; a ``train-codec`` workdir or a
  model folder), divided by ``melody.latent_scale`` (the latents' std: the diffusion assumes x0 of
  about unit scale, and ``MeLoDy(latent_scale=...)`` multiplies it back before decoding);
- the condition: MeLoDy's semantic tokens of the same audio (``fit-semantic``'s tokenizer, one
  token per hop, ``SemanticTokenizer.encode_aligned``); the DPD stretches them to the latent rate.

Infrastructure shared with the LM and codec trainers (imported, not copied): the mesh, the
optimizers and schedules, orbax checkpoints with the data position (resume by re-running the same
command), SIGTERM / SIGINT handling, metrics JSONL + TensorBoard, the refusal to resume a workdir
with another model. Writes ``workdir/losses.png`` (the velocity loss against step).

    magnet-jax train-dpd --config configs/melody_tiny.py:dpd --workdir runs/melody_dpd \\
        melody.vae=runs/melody_vae melody.semantic_tokenizer=data/semantic.npz data.dir=data/synth16k
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

from magnet_jax.codec.training.config import CodecDataConfig
from magnet_jax.config_loader import check_sections
from magnet_jax.melody.dpd import DPD, DPDConfig, LEGACY_DEFAULTS
from magnet_jax.melody.objective import velocity_loss
from magnet_jax.train.config import MeshConfig, TrainConfig, check_schedule
from magnet_jax.train.optim import OptimConfig, make_optimizer
from magnet_jax.train.state import commit_if_finite


@dataclasses.dataclass(frozen=True)
class MelodyPartsConfig:
    """The frozen parts the DPD is trained on: the VAE-GAN (a train-codec workdir or a model
    folder with a VAE codec) and the semantic tokenizer file; ``latent_scale`` divides the latents."""
    vae: str = ""
    semantic_tokenizer: str = ""
    latent_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latent_scale) and self.latent_scale > 0):
            raise ValueError(f"melody.latent_scale must be a positive number, got {self.latent_scale}")


SECTION_TYPES = {"dpd": DPDConfig, "melody": MelodyPartsConfig, "data": CodecDataConfig, "train": TrainConfig,
                 "optim": OptimConfig, "mesh": MeshConfig}


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Every section present with its type; the optimizer schedule fits the steps."""
    check_sections(config, SECTION_TYPES, "train-dpd")
    check_schedule(config["optim"], config["train"].steps, "optim")
    for name in ("vae", "semantic_tokenizer"):
        if not getattr(config["melody"], name):
            raise ValueError(f"melody.{name} is not set: give the trained "
                             f"{'VAE-GAN (a train-codec workdir)' if name == 'vae' else 'fit-semantic file'}")
    return config


def to_json(config: dict[str, Any]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) for k, v in config.items()}


@dataclasses.dataclass
class DPDTrainer:
    """What the loop needs: the compiled step, the initial state, shardings, the frozen parts."""
    config: dict
    mesh: Any
    codec: Any
    tokenizer: Any
    graphdef: Any
    train_step: Callable
    init_state: Callable[[], dict]
    abstract_state: dict
    state_sh: Any
    batch_sh: Any
    schedule: Callable


def load_parts(parts: MelodyPartsConfig):
    """(VAE codec, semantic tokenizer), each checked for what the DPD needs."""
    from magnet_jax.melody.semantic import SemanticTokenizer
    from magnet_jax.models import load_codec_weights
    _, codec = load_codec_weights(parts.vae)
    if codec.cfg.bottleneck != "vae":
        raise ValueError(f"melody.vae={parts.vae} is an RVQ codec; the DPD diffuses VAE latents "
                         f"(train one with codec.bottleneck=vae: configs/melody_tiny.py:codec)")
    if not Path(parts.semantic_tokenizer).is_file():
        raise FileNotFoundError(f"melody.semantic_tokenizer={parts.semantic_tokenizer} does not exist "
                                f"(write it with magnet-jax fit-semantic)")
    tokenizer = SemanticTokenizer.load(parts.semantic_tokenizer)
    if tokenizer.extractor.sample_rate != codec.cfg.sample_rate:
        raise ValueError(f"the semantic tokenizer reads {tokenizer.extractor.sample_rate} Hz audio, the VAE "
                         f"{codec.cfg.sample_rate} Hz: fit-semantic --sample-rate {codec.cfg.sample_rate}")
    return codec, tokenizer


def check_shapes(dpd: DPDConfig, codec, tokenizer, segment_duration: float) -> None:
    """A crop must give whole latent chunks and segments, and the tokens' vocabulary must fit."""
    frames = segment_duration * codec.cfg.sample_rate / codec.cfg.hop_length
    multiple = math.lcm(dpd.num_chunks, dpd.segment_length)
    if abs(frames - round(frames)) > 1e-6 or round(frames) % multiple:
        raise ValueError(f"data.segment_duration={segment_duration} s gives {frames:g} latent frames; the DPD "
                         f"needs a multiple of {multiple} (lcm of num_chunks and segment_length): pick a "
                         f"duration of k * {multiple * codec.cfg.hop_length / codec.cfg.sample_rate:g} s")
    if dpd.latent_dim != codec.cfg.vae_latent_dim:
        raise ValueError(f"dpd.latent_dim={dpd.latent_dim} but the VAE's latents are {codec.cfg.vae_latent_dim} wide")
    if dpd.semantic_vocab != tokenizer.num_tokens:
        raise ValueError(f"dpd.semantic_vocab={dpd.semantic_vocab} but the tokenizer has {tokenizer.num_tokens} tokens")


def build_trainer(config: dict, mesh) -> DPDTrainer:
    """The DPD, its optimizer and the jitted step over the frozen VAE encoder and tokenizer."""
    from magnet_jax.train import sharding
    tc, parts = config["train"], config["melody"]
    codec, tokenizer = load_parts(parts)
    check_shapes(config["dpd"], codec, tokenizer, config["data"].segment_duration)
    tx, schedule = make_optimizer(config["optim"], tc.steps)
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: DPD(config["dpd"], rngs=nnx.Rngs(0))), nnx.Param)
    codec_graph, codec_state = nnx.split(codec)
    scale = np.float32(parts.latent_scale)

    def init_state() -> dict:
        params = nnx.to_pure_dict(nnx.state(DPD(config["dpd"], rngs=nnx.Rngs(tc.seed)), nnx.Param))
        return {"params": params, "opt": tx.init(params), "rng": jax.random.key_data(jax.random.key(tc.seed + 1)),
                "step": jnp.int32(0), "nonfinite_run": jnp.int32(0), "nonfinite_total": jnp.int32(0)}

    def inputs(audio):
        vae = nnx.merge(codec_graph, codec_state)
        mean, _ = vae.bottleneck.moments(vae.encode_latent(audio))
        tokens = tokenizer.encode_aligned(audio.mean(axis=1))          # mono, one token per hop
        return jax.lax.stop_gradient(mean / scale), tokens

    def step(state, audio, poison):
        x0, tokens = inputs(audio)
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

        def loss_fn(params):
            return velocity_loss(nnx.merge(graphdef, params), key, x0, tokens) + poison

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
        updates, opt = tx.update(grads, state["opt"], state["params"])
        new = commit_if_finite(state, {"params": optax.apply_updates(state["params"], updates), "opt": opt}, finite)
        return new, {"loss": loss, "finite": finite, "lr": schedule(state["step"]),
                     "nonfinite_run": new["nonfinite_run"], "nonfinite_total": new["nonfinite_total"]}

    abstract = jax.eval_shape(init_state)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state_sh = jax.tree.map(lambda _: replicated, abstract)
    batch_sh = sharding.logical_sharding(mesh, "batch", "channels", "time")
    train_step = jax.jit(step, in_shardings=(state_sh, batch_sh, None), out_shardings=(state_sh, None),
                         donate_argnums=0)
    return DPDTrainer(config, mesh, codec, tokenizer, graphdef, train_step,
                      lambda: jax.device_put(init_state(), state_sh), abstract, state_sh, batch_sh, schedule)


def train_dpd(config: dict, workdir: str | Path, on_step: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) a DPD in ``workdir``; returns the summary (also written as summary.json)."""
    from tqdm import tqdm

    from magnet_jax.codec.training import data as D
    from magnet_jax.codec.training.loop import AudioBatches, _check_finite
    from magnet_jax.train.checkpointing import Checkpoints, PreemptionGuard, save_when_due
    from magnet_jax.train.loop import check_or_write_run_config, field_defaults, host, make_run_mesh
    from magnet_jax.train.metrics import MetricsWriter

    config = check_config(config)
    tc, dc = config["train"], config["data"]
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    defaults = field_defaults(config)
    defaults["dpd"].update(LEGACY_DEFAULTS)           # a run from before a field existed meant this
    check_or_write_run_config(workdir, to_json(config), ("dpd", "melody", "optim"), defaults)
    mesh = make_run_mesh(config["mesh"])
    trainer = build_trainer(config, mesh)
    files = D.split_files(dc.dir, dc.valid_percent)["train"]
    data = AudioBatches({"data": dc, "codec": trainer.codec.cfg, "train": tc}, files, trainer, tc.seed)
    ckpt = Checkpoints(workdir / "checkpoints", tc.keep_checkpoints, tc.async_checkpoint)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            trainer.abstract_state, trainer.state_sh)
    with jax.set_mesh(mesh):
        resumed = ckpt.restore_latest(abstract, data.iterator)
        if resumed is not None:
            start, state = resumed
            data.set_state(data.iterator.get_state())
        else:
            state, start = trainer.init_state(), 0
    metrics = MetricsWriter(workdir, resume_step=start)
    summary: dict[str, Any] = {"workdir": str(workdir), "resumed_from": start or None, "train_clips": len(files),
                               "devices": jax.device_count(), "mesh": dict(mesh.shape)}
    window: list[dict] = []
    t0, stop_reason, step = time.perf_counter(), "finished", start
    lead = jax.process_index() == 0
    bar = tqdm(total=tc.steps, initial=start, desc="train-dpd", disable=not (tc.progress and lead), dynamic_ncols=True)
    poison_steps = set(tc.inject_nan_steps)
    try:
        with PreemptionGuard() as guard, jax.set_mesh(mesh):
            while step < tc.steps:
                poison = np.float32(np.nan if step + 1 in poison_steps else 0.0)
                state, m = trainer.train_step(state, data.next(), poison)
                step += 1
                m = {k: host(v) for k, v in m.items()}
                window.append(m)
                bar.update(1)
                _check_finite(m, step, tc.max_nonfinite, ckpt, lead)
                if step % tc.log_every == 0 or step == tc.steps:
                    ok = [float(w["loss"]) for w in window if bool(w["finite"])]
                    row = {"loss": float(np.mean(ok)) if ok else None, "skipped": len(window) - len(ok),
                           "lr": float(m["lr"]), "steps_per_s": len(window) / (time.perf_counter() - t0)}
                    metrics.write(step, "train", row)
                    bar.set_postfix(loss=f"{row['loss'] if row['loss'] is not None else float('nan'):.4f}")
                    window, t0 = [], time.perf_counter()
                if on_step is not None:
                    on_step(step)
                stop = save_when_due(ckpt, guard, step, tc.steps, tc.checkpoint_every, state, data.consumed_state)
                if stop:
                    stop_reason = stop
                    break
    finally:
        bar.close()
        ckpt.close()
        metrics.close()
    summary.update({"stopped": stop_reason, "preempted": stop_reason != "finished", "step": step,
                    "nonfinite_total": int(host(state["nonfinite_total"]))})
    if lead:
        plot_loss(workdir / "metrics.jsonl", workdir / "losses.png")
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["state"] = state
    return summary


def plot_loss(jsonl: str | Path, out: str | Path) -> Path:
    """The velocity loss against step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from magnet_jax.train.metrics import read_jsonl
    pts = [(r["step"], r["loss"]) for r in read_jsonl(jsonl) if r["split"] == "train" and r.get("loss") is not None]
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("velocity MSE")
    ax.set_title("train-dpd", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
