"""Loading a converted model folder (orbax + JSON, no torch): its integrity check, the LM, the
codec, the text conditioner, and the device mesh a model runs on."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from magnet_jax import integrity
from magnet_jax.codec import Encodec, EncodecConfig
from magnet_jax.lm.model import MagnetLM
from magnet_jax.models.errors import PipelineError
from magnet_jax.models.sources import FORMAT, META_FILE, MINILM
from magnet_jax.text import Conditioner

# -- loading a converted folder (no torch) ---------------------------------------------------------
def _restore(path: Path) -> Any:
    import orbax.checkpoint as ocp
    try:
        with ocp.StandardCheckpointer() as ckpt:
            return jax.tree.map(np.asarray, ckpt.restore(path.absolute()))
    except Exception as err:  # noqa: BLE001 - any failure to read weights: one line naming the folder
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> PipelineError:
    """A weights folder that orbax cannot read (damaged or truncated files in a folder without a
    manifest, or loaded with verify=False): the first line of the cause, not orbax's traceback."""
    from magnet_jax.train.checkpointing import root_cause
    return PipelineError(f"cannot read the weights in {path} ({root_cause(err)}): the folder is damaged or "
                         f"incomplete; write it again")


def load_converted_codec(folder: str | os.PathLike, *, verify: bool = True) -> tuple[EncodecConfig, Encodec]:
    """The codec of a converted model folder (the shipped default model included): what
    ``tokenize --codec-weights`` needs to make tokens a converted LM can be fine-tuned on.
    ``verify``: check the folder's files against its manifest first (see ``verify_model_folder``)."""
    folder = Path(folder).absolute()
    if verify:
        verify_model_folder(folder)
    meta = _read_meta(folder)
    cfg = EncodecConfig(**meta["codec"])
    return cfg, _load_codec(folder, cfg)


def load_codec_weights(path: str | os.PathLike, **kwargs: Any) -> tuple[EncodecConfig, Encodec]:
    """Any codec a user can name: a converted model folder (magnet.json, e.g. the shipped default
    model, whose codec made its LM's tokens) or whatever ``codec.convert.load_codec`` takes (a
    train-codec workdir, a Hugging Face folder, an audiocraft export)."""
    from magnet_jax.codec.convert import load_codec
    if Path(path).is_dir() and (Path(path) / META_FILE).is_file():
        return load_converted_codec(path)
    return load_codec(path, **kwargs)


def verify_model_folder(folder: Path) -> None:
    """Check every file of a model folder against its manifest (``magnet_jax.integrity``) before
    anything is read from it: a damaged weight file is one error naming it, never a generation
    from damaged weights. A folder without a manifest (older versions, by hand) loads with a warning."""
    remedy = ("Write it again (convert or export it again; delete a cached conversion to redo it; reinstall "
              "magnet-jax for the shipped model), or pass --no-verify (verify=False) to load it as it is")
    try:
        integrity.verify(folder, what="model folder", remedy=remedy)
    except integrity.IntegrityError as err:
        raise PipelineError(str(err)) from None


def _read_meta(folder: Path) -> dict:
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise PipelineError(f"{folder} was converted by another magnet-jax version (format "
                            f"{meta.get('format')}, this one reads {FORMAT}); convert it again")
    return meta


def _load_codec(folder: Path, cfg: EncodecConfig) -> Encodec:
    abstract = nnx.eval_shape(lambda: Encodec(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, _restore(folder / "codec")))
    return nnx.merge(graphdef, state)


def _load_lm(folder: Path, compute_dtype: str) -> MagnetLM:
    from magnet_jax.lm.checkpoint import load_lm
    from magnet_jax.lm.convert import build_lm
    try:
        lm = load_lm(folder / "lm")
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - see _unreadable
        raise _unreadable(folder / "lm", err) from err
    if lm.cfg.compute_dtype == compute_dtype:
        return lm
    return build_lm(lm.cfg.replace(compute_dtype=compute_dtype), nnx.to_pure_dict(nnx.state(lm, nnx.Param)))


def _load_conditioner(folder: Path, meta: dict, dim: int,
                      text_encoder: str | os.PathLike | None, mesh: Mesh | None) -> Conditioner | None:
    """T5 (override > the folder recorded at conversion > xp.cfg's hub name) + output_proj."""
    if meta["text"] is None:
        return None
    recorded = meta.get("text_encoder")
    if meta["text"]["encoder"] != MINILM and not text_encoder and recorded and Path(recorded).is_dir():
        text_encoder = recorded
    return conditioner_from_projection(meta["text"], _restore(folder / "text"), dim, text_encoder,
                                       max_tokens=meta.get("text_max_tokens"), mesh=mesh)


def conditioner_from_projection(text: dict, proj: dict, dim: int, text_encoder: str | os.PathLike | None = None,
                                *, max_tokens: int | None = None, mesh: Mesh | None = None) -> Conditioner:
    """The text path of a model: the encoder its settings name (MiniLM, or a T5 hub name / folder;
    ``text_encoder`` overrides where it is read from) and the trained projection ``proj``
    (torch layout: ``weight`` [dim, width], ``bias`` [dim]), checked against the encoder's width."""
    from magnet_jax.text import TextEncoder, TextSettings
    from magnet_jax.text.conditioner import TextConditioner, load_output_proj
    settings = TextSettings(**text)
    if settings.encoder == MINILM:      # a model trained by this project (magnet_jax.export)
        path = text_encoder or None
        encoder = TextEncoder.minilm(path, max_length=max_tokens, mesh=mesh)
    else:
        path = text_encoder or settings.encoder
        encoder = TextEncoder.t5(path, mesh=mesh)
    conditioner = TextConditioner(encoder.width, dim, nnx.Rngs(0))
    width = proj["weight"].shape[1]
    if width != encoder.width:
        raise PipelineError(f"text encoder {path} gives {encoder.width}-wide states but the checkpoint's "
                            f"output_proj expects {width} ({settings.encoder}); pass the right T5")
    load_output_proj(conditioner, {"p.weight": proj["weight"], "p.bias": proj["bias"]}, "p")
    return Conditioner(encoder, conditioner)


def auto_mesh() -> Mesh | None:
    """A data-parallel mesh over every accelerator; None on one device or on CPU (virtual CPU
    devices share the same cores, so splitting a batch over them gains nothing)."""
    from magnet_jax.train.sharding import make_mesh
    devices = jax.devices()
    if len(devices) < 2 or devices[0].platform == "cpu":
        return None
    return make_mesh(data=-1, devices=devices)
