"""The codec training loop, on LM training's infrastructure.

Shared with ``magnet_jax.train`` (imported, not copied): the mesh (``loop.make_run_mesh``), the
optimizers and schedules (``optim.make_optimizer``), orbax checkpoints of state + grain
iterator position (``checkpointing.Checkpoints``), SIGTERM / SIGINT handling
(``PreemptionGuard``), metrics JSONL + TensorBoard (``metrics.MetricsWriter``) and the
``TrainConfig`` / ``OptimConfig`` / ``MeshConfig`` sections. Codec-specific here: the audio
loader, k-means initialisation before the first step, held-out evaluation per number of
codebooks with a spectrogram PNG, and a PNG of the codec's loss curves.

    workdir/config.json       the run's config (eval-codec reads it)
    workdir/checkpoints/N     state + data position (resume by re-running the same command)
    workdir/metrics.jsonl     train rows every log_every steps, valid rows every eval_every
    workdir/tensorboard/      the same numbers
    workdir/losses.png        loss curves; workdir/spectrograms_<step>.png at each evaluation
    workdir/summary.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from magnet_jax.codec.training import data as D
from magnet_jax.codec.training.config import check_config, to_json
from magnet_jax.codec.training.evaluate import evaluate, spectrogram_png
from magnet_jax.codec.training.step import CodecTrainer, build_trainer
from magnet_jax.train.checkpointing import Checkpoints, PreemptionGuard, save_when_due
from magnet_jax.train.loop import NonFiniteError, check_or_write_run_config, field_defaults, host, make_run_mesh
from magnet_jax.train.metrics import MetricsWriter, read_jsonl


class AudioBatches:
    """Global ``[B, C, N]`` arrays from this process's grain iterator; remembers the consumed position."""

    def __init__(self, config: dict, files: list[str], trainer: CodecTrainer, seed: int):
        dc, cc, tc = config["data"], config["codec"], config["train"]
        self.sharding = trainer.batch_sh
        self.iterator = D.make_audio_loader(
            dc.dir, files, batch_size=tc.batch_size, duration=dc.segment_duration, sample_rate=cc.sample_rate,
            channels=cc.channels, seed=seed, process_index=jax.process_index(),
            process_count=jax.process_count(), worker_count=dc.worker_count)
        self.consumed_state = self.iterator.get_state()

    def set_state(self, state: dict) -> None:
        self.iterator.set_state(state)
        self.consumed_state = state

    def next(self) -> jax.Array:
        batch = next(self.iterator)["audio"]
        self.consumed_state = self.iterator.get_state()
        return jax.make_array_from_process_local_data(self.sharding, batch)


def kmeans_batches(config: dict, files: list[str], trainer: CodecTrainer) -> jax.Array:
    """The first ``quantizer.kmeans_batches`` training batches, read by a separate iterator so the
    training iterator's position is untouched (they are the same crops training starts with)."""
    batches = AudioBatches(config, files, trainer, config["train"].seed)
    stacked = np.stack([np.asarray(next(batches.iterator)["audio"]) for _ in range(config["quantizer"].kmeans_batches)])
    sh = jax.sharding.NamedSharding(trainer.mesh, jax.sharding.PartitionSpec(None, *trainer.batch_sh.spec))
    return jax.make_array_from_process_local_data(sh, stacked)


# ---------------------------------------------------------------- evaluation in the loop

def validate(trainer: CodecTrainer, state: dict, clips: np.ndarray, workdir: Path, step: int) -> dict:
    """Per-n_q held-out metrics (flattened into one row) and a spectrogram PNG of the first clip."""
    config = trainer.config
    params = state["ema"] if (config["train"].eval_ema and "ema" in state) else state["gen"]
    params = jax.tree.map(host, params)
    rows, recons = evaluate(trainer.reconstruct, params, clips, config["codec"].eval_n_q, config["codec"].sample_rate,
                            config["losses"], config["eval"].batch_size)
    out = {}
    for r in rows:
        for k, v in r.items():
            if k != "n_q":
                out[f"{k}_q{r['n_q']}"] = v
    if jax.process_index() == 0:
        spectrogram_png(clips[0], {k: y[0] for k, y in recons.items()}, config["codec"].sample_rate,
                        workdir / f"spectrograms_{step}.png", title=f"held-out clip, step {step}")
    return out


# ---------------------------------------------------------------- the loop

def train_codec(config: dict, workdir: str | Path, on_step: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) a codec in ``workdir``; returns the summary (also written as summary.json)."""
    from tqdm import tqdm

    config = check_config(config)
    tc, dc = config["train"], config["data"]
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    _check_or_write_config(workdir, config)
    mesh = make_run_mesh(config["mesh"])
    trainer = build_trainer(config, mesh)
    splits = D.split_files(dc.dir, dc.valid_percent)
    train_data = AudioBatches(config, splits["train"], trainer, tc.seed)
    clips = None
    if tc.eval_every and splits["valid"]:
        ec = config["eval"]
        clips = D.load_clips(dc.dir, splits["valid"][:ec.clips], ec.duration, config["codec"].sample_rate,
                             config["codec"].channels)

    ckpt = Checkpoints(workdir / "checkpoints", tc.keep_checkpoints, tc.async_checkpoint)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            trainer.abstract_state, trainer.state_sh)
    with jax.set_mesh(mesh):
        resumed = ckpt.restore_latest(abstract, train_data.iterator)      # the newest intact checkpoint
        if resumed is not None:
            start, state = resumed
            train_data.set_state(train_data.iterator.get_state())
        else:
            state, start = trainer.init_state(), 0
            if "vq" in state and not bool(host(state["vq"].inited)):
                state = trainer.kmeans_step(state, kmeans_batches(config, splits["train"], trainer))
    metrics = MetricsWriter(workdir, resume_step=start)
    cc = config["codec"]
    audio_s_per_step = tc.batch_size * dc.segment_duration
    summary: dict[str, Any] = {"workdir": str(workdir), "resumed_from": start or None, "devices": jax.device_count(),
                               "processes": jax.process_count(), "mesh": dict(mesh.shape),
                               "train_clips": len(splits["train"]), "valid_clips": len(splits["valid"]),
                               "bits_per_codebook_kbps": float(np.log2(cc.bins) * cc.frame_rate / 1000)}
    window: list[dict] = []
    t0, stop_reason, step, last_valid = time.perf_counter(), "finished", start, {}
    lead = jax.process_index() == 0
    bar = tqdm(total=tc.steps, initial=start, desc="train-codec", disable=not (tc.progress and lead),
               dynamic_ncols=True)
    poison_steps = set(tc.inject_nan_steps)
    try:
        with PreemptionGuard() as guard, jax.set_mesh(mesh):
            while step < tc.steps:
                x = train_data.next()
                poison = np.float32(np.nan if step + 1 in poison_steps else 0.0)
                state, m = trainer.train_step(state, x, poison)
                step += 1
                m = {k: host(v) for k, v in m.items()}
                window.append(m)
                bar.update(1)
                _check_finite(m, step, tc.max_nonfinite, ckpt, lead)
                if step % tc.log_every == 0 or step == tc.steps:
                    row = _train_row(window, time.perf_counter() - t0, audio_s_per_step, cc.frame_rate, cc.bins)
                    metrics.write(step, "train", row)
                    bar.set_postfix(mel=f"{row.get('loss_msspec', float('nan')):.3f}",
                                    audio_s_per_s=f"{row['audio_seconds_per_s']:.1f}")
                    window, t0 = [], time.perf_counter()
                if on_step is not None:
                    on_step(step)
                if clips is not None and (step % tc.eval_every == 0 or step == tc.steps):
                    last_valid = validate(trainer, state, clips, workdir, step)
                    metrics.write(step, "valid", last_valid)
                    t0 = time.perf_counter()
                stop = save_when_due(ckpt, guard, step, tc.steps, tc.checkpoint_every, state,
                                     train_data.consumed_state)
                if stop:
                    stop_reason = stop
                    break
    finally:
        bar.close()
        ckpt.close()
        metrics.close()
    summary.update({"stopped": stop_reason, "preempted": stop_reason != "finished", "step": step,
                    "nonfinite_total": int(host(state["nonfinite_total"])), "valid": last_valid or None})
    if lead:
        plot_codec_losses(workdir / "metrics.jsonl", workdir / "losses.png")
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["state"] = state
    return summary


def _check_finite(m: dict, step: int, limit: int, ckpt: Checkpoints, lead: bool) -> None:
    if not bool(m["finite"]) and lead:
        from tqdm import tqdm
        tqdm.write(f"step {step}: non-finite loss or gradient, update skipped "
                   f"({int(m['nonfinite_run'])} in a row, {int(m['nonfinite_total'])} in all)")
    if int(m["nonfinite_run"]) >= limit:
        raise NonFiniteError(f"stopped at step {step}: {int(m['nonfinite_run'])} non-finite steps in a row "
                             f"(train.max_nonfinite={limit}); the last checkpoint is step {ckpt.latest_step()}. "
                             f"Lower optim.lr or check the audio")


def _train_row(window: list[dict], seconds: float, audio_per_step: float, frame_rate: float, bins: int) -> dict:
    ok = [m for m in window if bool(m["finite"])]
    row: dict[str, Any] = {"skipped": len(window) - len(ok), "nonfinite_total": int(window[-1]["nonfinite_total"]),
                           "steps_per_s": len(window) / seconds,
                           "audio_seconds_per_s": len(window) * audio_per_step / seconds, "lr": float(window[-1]["lr"])}
    if not ok:
        return row
    scalars = [k for k, v in ok[0].items() if np.ndim(v) == 0 and k not in ("finite", "nonfinite_run",
                                                                              "nonfinite_total", "lr")]
    row.update({k: float(np.mean([m[k] for m in ok])) for k in scalars})
    if "dead_codes" not in ok[0]:        # a VAE codec: no codebooks, no bandwidth
        return row
    row["bandwidth_kbps"] = row["n_q"] * np.log2(bins) * frame_rate / 1000
    for k in ("dead_codes", "perplexity"):
        per_layer = np.mean([m[k] for m in ok], axis=0)
        row.update({f"{k}_q{i + 1}": float(v) for i, v in enumerate(per_layer)})
    return row


def plot_codec_losses(jsonl: str | Path, out: str | Path) -> Path:
    """Train losses (and held-out mel distance per n_q) against step, one panel per quantity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_jsonl(jsonl)
    train = [r for r in rows if r["split"] == "train"]
    valid = [r for r in rows if r["split"] == "valid"]
    keys = [k for k in ("loss_msspec", "loss_l1", "loss_adv", "loss_feat", "d_loss", "commitment", "kl")
            if any(r.get(k) is not None for r in train)]
    vkeys = sorted(k for r in valid for k in r if k.startswith("mel_distance_q"))
    panels = keys + (["held-out mel distance"] if vkeys else [])
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.2 * max(len(panels), 1), 3))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, keys):
        pts = [(r["step"], r[k]) for r in train if r.get(k) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if vkeys:
        ax = axes[len(keys)]
        for k in sorted(set(vkeys)):
            pts = [(r["step"], r[k]) for r in valid if r.get(k) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k.replace("mel_distance_", ""))
        ax.set_title("held-out mel distance", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def _check_or_write_config(workdir: Path, config: dict) -> None:
    """A workdir holds one codec: resuming with another codec / losses / quantizer / optim config is refused."""
    check_or_write_run_config(workdir, to_json(config), ("codec", "optim", "disc_optim", "disc", "losses", "quantizer"),
                              field_defaults(config))
