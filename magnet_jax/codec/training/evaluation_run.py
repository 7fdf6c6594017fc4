"""``eval-codec``: restore a train-codec workdir's codec and evaluate it on the held-out split."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from magnet_jax.codec.training import data as D
from magnet_jax.codec.training.config import load_workdir_config
from magnet_jax.codec.training.evaluate import batched, evaluate, spectrogram_png, token_statistics
from magnet_jax.codec.training.step import build_trainer
from magnet_jax.train.checkpointing import Checkpoints, DamagedCheckpoint, nonfinite_leaf, verify_step
from magnet_jax.train.loop import host, make_run_mesh


def restore_codec_params(workdir: str | Path, step: int | None = None) -> tuple[dict, dict, int, object]:
    """(config, codec params on the host, step, trainer) of a workdir's checkpoint (EMA weights
    when the run kept them and ``train.eval_ema``). The checkpoint is checked against its manifest
    first: a damaged one is ``DamagedCheckpoint`` naming the file (a ValueError)."""
    config = load_workdir_config(workdir)
    ckpt = Checkpoints(Path(workdir).absolute() / "checkpoints", keep=config["train"].keep_checkpoints,
                       asynchronous=False)
    try:
        steps = ckpt.all_steps()
        step = (steps[-1] if steps else None) if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet (train-codec writes one every "
                                    f"train.checkpoint_every steps)")
        if step not in steps:
            raise FileNotFoundError(f"{workdir} has no checkpoint {step}; it has {steps}")
        verify_step(ckpt.step_dir(step), steps)
        mesh = make_run_mesh(config["mesh"])
        trainer = build_trainer(config, mesh)
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                trainer.abstract_state, trainer.state_sh)
        state = ckpt.restore(step, abstract)
    finally:
        ckpt.close()
    params = state["ema"] if (config["train"].eval_ema and "ema" in state) else state["gen"]
    if bad := nonfinite_leaf(params):
        raise DamagedCheckpoint(f"checkpoint {ckpt.step_dir(step)} holds {bad}: pick another step with --step "
                                f"(this run has: {steps})")
    return config, jax.tree.map(host, params), step, trainer


def trained_codec(workdir: str | Path, step: int | None = None):
    """(EncodecConfig, Encodec) of a train-codec workdir's checkpoint: an ordinary codec that
    tokenize, the pipeline and ``export`` use like a converted one."""
    from magnet_jax.codec.encodec import Encodec
    config, params, _, _ = restore_codec_params(workdir, step)
    model = Encodec(config["codec"], rngs=nnx.Rngs(0))
    nnx.update(model, nnx.State(jax.tree.map(np.asarray, params)))
    return config["codec"], model


def evaluate_workdir(workdir: str | Path, out: str | Path, *, step: int | None = None, data_dir: str | None = None,
                     clips: int | None = None, duration: float | None = None, music: bool = True) -> dict:
    """Evaluate and write ``eval.json`` + ``spectrograms.png`` into ``out``; returns the report."""
    config, params, step, trainer = restore_codec_params(workdir, step)
    cc, ec, dc = config["codec"], config["eval"], config["data"]
    directory = data_dir or dc.dir
    files = D.split_files(directory, dc.valid_percent)["valid"][:clips or ec.clips]
    audio = D.load_clips(directory, files, ec.duration if duration is None else duration, cc.sample_rate, cc.channels)
    labels_by_stem = D.read_labels(directory)
    labels = [labels_by_stem.get(Path(f).stem) for f in files]
    labels = labels if labels and all(lab is not None for lab in labels) else None
    rows, recons = evaluate(trainer.reconstruct, params, audio, cc.eval_n_q, cc.sample_rate, config["losses"],
                            ec.batch_size, labels=labels, music=music)
    encode = jax.jit(lambda p, a: nnx.merge(trainer.gen_graphdef, p).encode(a))
    tokens = (token_statistics(batched(lambda a: encode(params, a), audio, ec.batch_size), cc.bins)
              if cc.bottleneck == "rvq" else [])        # a VAE codec has no tokens
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spectrogram_png(audio[0], {k: y[0] for k, y in recons.items()}, cc.sample_rate, out / "spectrograms.png",
                    title=f"{files[0]} (held out), step {step}")
    report = {"workdir": str(workdir), "step": step, "data": str(directory), "clips": len(files),
              "seconds_per_clip": audio.shape[-1] / cc.sample_rate,
              "kbps_per_codebook": float(np.log2(cc.bins) * cc.frame_rate / 1000), "rows": rows, "tokens": tokens,
              "note": "n_q 0 = the original audio (key / tempo agreement of the input itself)"}
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    return report
