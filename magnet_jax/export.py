"""Package a model trained with this project into a folder ``magnet_jax.models.load_model`` loads
(``MAGNeT`` or ``MusicGen``, as the run's lm section says: ``magnet.json``'s ``kind``).

``magnet-jax train`` and ``magnet-jax train-codec`` leave workdirs of orbax train states (params,
optimizer, EMA, data position). ``export_trained`` takes the latest (or a chosen) checkpoint of
each and writes the same converted layout a released checkpoint is converted into
(``models.convert``): ``lm/`` (config + params), ``codec/``, ``text/`` (the text projection,
torch layout) and ``magnet.json`` (configs, text settings, provenance). The text encoder itself
is not copied: it is named (``minilm`` or a T5 hub name / folder) and loaded from its own
package at load time, as for the released models.

    magnet-jax export --lm-workdir runs/lm --codec-workdir runs/codec --out my-model/
    magnet-jax generate --model my-model/ --prompt "an organ arpeggio in D minor" --out out/
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from magnet_jax.train.config import lm_family, lm_from_json


class ExportError(ValueError):
    """A workdir that cannot be exported (no checkpoint, not a train workdir, mismatched pair)."""


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ExportError(f"{path.parent} has no {path.name}: it is not a {what} workdir")
    return json.loads(path.read_text())


def restore_lm_params(workdir: str | Path, step: int | None = None, use_ema: bool = True
                      ) -> tuple[dict, dict, int]:
    """(run config as JSON, params ``{"lm": ..., "text": ...}`` on the host, step) of a train workdir.

    The EMA weights when the run kept them and ``use_ema`` (audiocraft evaluates and exports
    the EMA); the raw parameters otherwise. See ``restore_run_params`` for the checks.
    """
    return restore_run_params(workdir, "lm", "`magnet-jax train`", step,
                              lambda state: state["ema"] if use_ema and "ema" in state else state["params"])


def restore_run_params(workdir: str | Path, section: str, verb: str, step: int | None, pick) -> tuple[dict, dict, int]:
    """(run config as JSON, ``pick(state)`` on the host, step) of a finished training workdir whose
    config.json has ``section``: the checkpoint is checked against its manifest and its weights for
    NaN / inf first, so a damaged one is an ``ExportError`` naming the file."""
    import orbax.checkpoint as ocp

    from magnet_jax.train.checkpointing import DamagedCheckpoint, nonfinite_leaf, verify_step

    workdir = Path(workdir).absolute()
    config = _read_json(workdir / "config.json", verb)
    if section not in config:
        raise ExportError(f"{workdir}/config.json has no '{section}' section: not a {verb} workdir")
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
    if not steps:
        raise ExportError(f"{workdir} has no checkpoint yet (it writes one every train.checkpoint_every steps)")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ExportError(f"{workdir} has no checkpoint {step}; it has {steps}")
    step_dir = workdir / "checkpoints" / str(step)
    try:
        verify_step(step_dir, steps)
    except DamagedCheckpoint as err:
        raise ExportError(str(err)) from None
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(step_dir / "state")
    params = pick(state)
    if bad := nonfinite_leaf(params):
        raise ExportError(f"checkpoint {step_dir} holds {bad}: pick another step with --step (this run has: {steps})")
    return config, jax.tree.map(np.asarray, params), step


def text_meta(config: dict) -> dict | None:
    """The text settings recorded in ``magnet.json`` (the pipeline's ``TextSettings`` fields)."""
    text = config.get("text", {})
    if text.get("encoder", "none") == "none":
        return None
    encoder = "minilm" if text["encoder"] == "minilm" else text["path"]
    return {"attribute": "description", "encoder": encoder,
            "word_dropout": text["word_dropout"], "cfg_dropout": text["cfg_dropout"],
            "attribute_dropout": text.get("attribute_dropout", 0.0)}


def export_trained(lm_workdir: str | Path, codec_workdir: str | Path, out: str | Path, *,
                   step: int | None = None, codec_step: int | None = None, use_ema: bool = True,
                   generation: dict[str, Any] | None = None, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write the converted folder of a trained LM + codec pair; returns its path.

    ``generation``: default sampler parameters stored with a MAGNeT (``SamplerConfig`` fields,
    applied by ``MAGNeT.load_converted``) on top of audiocraft's defaults with MAGNeT's step
    schedule (20 steps for the first codebook, 10 for the others) sized to the LM's codebooks.
    A MusicGen keeps audiocraft's generation defaults (its parameters are set per call).

    Checks that the pair belongs together (codebooks, card, frame rate) before writing, so a
    mismatched export is one clear error, not a model that decodes noise.
    """
    from magnet_jax.lm.checkpoint import save_lm
    from magnet_jax.lm.convert import build_lm
    from magnet_jax.models.conversion import _check_compatible, _write_converted
    from magnet_jax.models.errors import PipelineError
    from magnet_jax.models.sources import FORMAT

    config, params, step = restore_lm_params(lm_workdir, step, use_ema)
    lm_cfg = lm_from_json(config["lm"])
    kind = lm_family(lm_cfg)
    if kind == "musicgen" and generation:
        raise ExportError(f"--generation sets MAGNeT's sampler ({sorted(generation)}); a MusicGen takes its "
                          f"parameters at generation time (generate --cfg-coef / --top-k / --duration ...)")
    codec_cfg, codec = _codec_of(codec_workdir, codec_step)
    try:
        _check_compatible(lm_cfg, codec_cfg)
    except PipelineError as err:
        raise ExportError(f"{lm_workdir} and {codec_workdir} do not make one model: {err}") from err
    if lm_cfg.frame_rate != int(codec_cfg.frame_rate):
        raise ExportError(f"the LM was trained at {lm_cfg.frame_rate} Hz frames, the codec makes "
                          f"{codec_cfg.frame_rate} Hz: tokenize with this codec and train again")
    lm = build_lm(lm_cfg.replace(compute_dtype="float32"), params["lm"])
    text = text_meta(config)
    text_params = None
    if text is not None:
        if "text" not in params:
            raise ExportError(f"{lm_workdir} is text-conditioned but its checkpoint has no text projection")
        proj = params["text"]["output_proj"]
        text_params = {"weight": np.asarray(proj["kernel"]).T, "bias": np.asarray(proj["bias"])}
    if kind == "magnet":
        family_meta = {"generation": {"decoding_steps": [20] + [10] * (lm_cfg.n_q - 1), **(generation or {})}}
    else:
        family_meta = {"stereo_interleave": False}      # trained on one codec stream's codebooks
    meta = {"format": FORMAT, "kind": kind,
            "source": f"magnet-jax export of {Path(lm_workdir).absolute()} (step {step})",
            "files": [str(Path(lm_workdir).absolute()), str(Path(codec_workdir).absolute())],
            "lm": dataclasses.asdict(lm.cfg), "codec": dataclasses.asdict(codec_cfg), "text": text,
            "text_encoder": None, "text_max_tokens": config.get("text", {}).get("max_tokens"),
            "xp_cfg": None, "trained": {"lm_step": step, "ema": bool(use_ema)},
            **family_meta, **(extra_meta or {})}
    return _write_converted(Path(out), meta, lm, codec, text_params, save_lm)


def _codec_of(source: str | Path, codec_step: int | None):
    """A ``train-codec`` workdir (at ``codec_step``), or the codec of a converted model folder: the
    one that tokenized the LM's data when it came from ``tokenize --codec-weights FOLDER``."""
    from magnet_jax.train.checkpointing import DamagedCheckpoint
    from magnet_jax.codec.training.evaluation_run import trained_codec
    from magnet_jax.models import META_FILE, PipelineError, load_converted_codec

    try:
        if (Path(source) / META_FILE).is_file():
            if codec_step is not None:
                raise ExportError(f"{source} is a converted model folder with one codec; drop --codec-step")
            return load_converted_codec(source)
        return trained_codec(source, codec_step)
    except (PipelineError, DamagedCheckpoint) as err:     # a damaged codec folder or checkpoint
        raise ExportError(str(err).replace("--step", "--codec-step")) from None


def folder_size_mb(folder: str | Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2 ** 20


def export_melody(vae: str | Path, semantic_lm_workdir: str | Path, dpd_workdir: str | Path, out: str | Path, *,
                  use_ema: bool = True, text_encoder: str | None = None) -> Path:
    """Package MeLoDy's three trained parts as one model folder (``MeLoDy.save``): the VAE-GAN (a
    ``train-codec`` workdir or a model folder), the semantic LM (a ``train`` workdir of a
    one-codebook MusicGen, with its text projection) and the DPD (a ``train-dpd`` workdir; its
    ``melody.latent_scale`` and crop length become the folder's ``latent_scale`` and
    ``window_seconds``). The parts are checked against each other by ``MeLoDy`` before writing."""
    from magnet_jax.lm.convert import build_lm
    from magnet_jax.melody.dpd import DPD, dpd_config_from_json
    from magnet_jax.models.loading import conditioner_from_projection
    from magnet_jax.models.melody import MeLoDy
    from magnet_jax.text.conditioner import TextSettings

    _, codec = _codec_of(vae, None)
    config, params, lm_step = restore_lm_params(semantic_lm_workdir, None, use_ema)
    lm_cfg = lm_from_json(config["lm"])
    if lm_family(lm_cfg) != "musicgen" or lm_cfg.n_q != 1:
        raise ExportError(f"{semantic_lm_workdir} trained a {lm_family(lm_cfg)} LM with {lm_cfg.n_q} codebooks; "
                          f"MeLoDy's semantic LM is a one-codebook MusicGen (configs/melody_tiny.py:semantic_lm)")
    lm = build_lm(lm_cfg.replace(compute_dtype="float32"), params["lm"])
    dpd_json, dpd_params, dpd_step = restore_run_params(dpd_workdir, "dpd", "`magnet-jax train-dpd`", None,
                                                        lambda state: state["params"])
    dpd_cfg = dpd_config_from_json(dpd_json["dpd"])
    dpd = nnx.eval_shape(lambda: DPD(dpd_cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(dpd)
    nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, dpd_params))
    dpd = nnx.merge(graphdef, state)
    settings, conditioner = text_meta(config), None
    if settings is not None:
        proj = params["text"]["output_proj"]
        conditioner = conditioner_from_projection(
            settings, {"weight": np.asarray(proj["kernel"]).T, "bias": np.asarray(proj["bias"])}, lm_cfg.dim,
            text_encoder, max_tokens=config.get("text", {}).get("max_tokens"))
        settings = TextSettings(**settings)
    try:
        model = MeLoDy(lm, dpd, codec, latent_scale=dpd_json["melody"]["latent_scale"], conditioner=conditioner,
                       text_settings=settings, window_seconds=dpd_json["data"]["segment_duration"])
    except ValueError as err:
        raise ExportError(f"these parts do not make one MeLoDy: {err}") from None
    return model.save(out, source=f"magnet-jax export-melody (semantic LM step {lm_step}, DPD step {dpd_step})",
                      text_encoder=text_encoder)
