"""Converting an audiocraft MAGNeT export (torch pickles) into a folder that loads without torch:
orbax arrays for the LM, the codec and the text projection, ``magnet.json`` (configs, text
settings, provenance) and ``integrity.json`` (written last). The only part of loading that needs torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from flax import nnx

from magnet_jax import integrity
from magnet_jax.codec import Encodec, EncodecConfig
from magnet_jax.lm.config import TokenLMConfig
from magnet_jax.lm.model import CodebookLM
from magnet_jax.models.errors import PipelineError
from magnet_jax.models.sources import FORMAT, META_FILE, CheckpointFiles, _hub_snapshot, cache_folder, locate

# -- conversion (the only part that needs torch) ----------------------------------------------------
def _read_codec(path: Path, codec_folder: str | os.PathLike | None) -> tuple[EncodecConfig, Encodec]:
    """compression_state_dict.bin -> our Encodec; a hub redirect is fetched (or read from the cache)."""
    from magnet_jax.codec.convert import load_audiocraft_codec
    from magnet_jax.lm.convert import read_torch_checkpoint
    pkg = read_torch_checkpoint(path)
    if isinstance(pkg, Mapping) and "pretrained" in pkg and codec_folder is None:
        codec_folder = _hub_snapshot(str(pkg["pretrained"]))
    return load_audiocraft_codec(path, hf_folder=codec_folder)


def codec_streams(meta_or_stereo: Mapping | bool) -> int:
    """How many codec streams the LM's codebooks interleave: 2 for audiocraft's
    ``interleave_stereo_codebooks`` (stereo MusicGen: each channel coded by the mono codec, the
    codebooks interleaved L0 R0 L1 R1 ...), else 1."""
    stereo = meta_or_stereo.get("stereo_interleave", False) if isinstance(meta_or_stereo, Mapping) else meta_or_stereo
    return 2 if stereo else 1


def _check_compatible(lm: TokenLMConfig, codec: EncodecConfig, streams: int = 1) -> None:
    if lm.n_q > streams * codec.n_q or lm.n_q % streams or lm.card != codec.bins:
        raise PipelineError(f"the LM models {lm.n_q} codebooks of {lm.card} codes but the codec has "
                            f"{codec.n_q} of {codec.bins}{' per channel' if streams > 1 else ''}: the two "
                            f"files are not from one model")
    if codec.frame_rate != int(codec.frame_rate):
        raise PipelineError(f"codec frame rate {codec.frame_rate} Hz is not a whole number")


def _stereo_interleave(xp: Mapping) -> bool:
    """audiocraft's ``get_wrapped_compression_model`` reads ``interleave_stereo_codebooks`` from the
    LM's xp.cfg (genmodel.py wraps the codec with it); the per-timestep variant is refused."""
    from magnet_jax import xp_cfg
    if not xp_cfg.setting(xp, "interleave_stereo_codebooks.use", False):
        return False
    if xp_cfg.setting(xp, "interleave_stereo_codebooks.per_timestep", False):
        raise PipelineError("xp.cfg interleaves stereo codebooks per timestep, which no released model does "
                            "and this version does not implement")
    return True


def convert(name_or_path: str | os.PathLike | CheckpointFiles, out: str | os.PathLike, *,
            text_encoder: str | os.PathLike | None = None,
            codec: str | os.PathLike | None = None) -> Path:
    """Convert an audiocraft MAGNeT or MusicGen export to an orbax folder that loads without torch
    (the family read from xp.cfg's lm_model, recorded as magnet.json's ``kind``).

    Written to a temporary sibling and renamed, so an interrupted conversion never leaves a folder
    that looks complete. ``text_encoder`` (a local T5 folder) is recorded so later loads find it.
    """
    from magnet_jax.lm.checkpoint import save_lm
    from magnet_jax.lm.convert import (CONDITION_PREFIX, config_from_xp, lm_from_state, model_kind,
                                       read_torch_checkpoint, split_checkpoint)
    from magnet_jax.text import output_proj_from_torch, text_settings_from_xp

    files = name_or_path if isinstance(name_or_path, CheckpointFiles) else locate(name_or_path)
    if isinstance(files, Path):
        raise PipelineError(f"{files} is already converted (it holds {META_FILE})")
    codec_cfg, codec_model = _read_codec(files.codec, codec)
    state, xp = split_checkpoint(read_torch_checkpoint(files.lm))
    if xp is None:
        raise PipelineError(f"{files.lm} has no 'xp.cfg': not an audiocraft export")
    kind, stereo = model_kind(xp), _stereo_interleave(xp)
    lm_cfg = config_from_xp(xp, frame_rate=int(codec_cfg.frame_rate))
    _check_compatible(lm_cfg, codec_cfg, codec_streams(stereo))
    lm_cfg, lm = lm_from_state(state, lm_cfg)
    meta: dict[str, Any] = {
        "format": FORMAT, "kind": kind, "source": files.source, "files": [str(files.lm), str(files.codec)],
        "lm": dataclasses.asdict(lm_cfg), "codec": dataclasses.asdict(codec_cfg), "stereo_interleave": stereo,
        "text": None, "text_encoder": str(Path(text_encoder).absolute()) if text_encoder else None, "xp_cfg": xp}
    text_params = None
    if lm_cfg.cross_attention:
        settings = text_settings_from_xp(xp)
        prefix = f"{CONDITION_PREFIX}conditioners.{settings.attribute}.output_proj"
        proj = output_proj_from_torch({k: v for k, v in state.items() if k.startswith(CONDITION_PREFIX)}, prefix)
        text_params = {"weight": proj["kernel"].T, "bias": proj["bias"]}   # torch layout
        meta["text"] = dataclasses.asdict(settings)
    return _write_converted(Path(out), meta, lm, codec_model, text_params, save_lm)


def converted_folder(name_or_path: str | os.PathLike, *, text_encoder: str | os.PathLike | None = None,
                     codec: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted folder of a released name, an audiocraft folder (converted once into the
    cache, keyed by the files) or an already converted folder (as it is)."""
    import logging
    found = locate(name_or_path)
    if isinstance(found, Path):
        return found
    folder = cache_folder(found, cache_dir)
    if not (folder / META_FILE).is_file():
        logging.getLogger(__name__).info("converting %s into %s (once)", found.source, folder)
        convert(found, folder, text_encoder=text_encoder, codec=codec)
    return folder


def _write_converted(out: Path, meta: dict, lm: CodebookLM, codec: Encodec, text_params: dict | None,
                     save_lm, extra: dict[str, Any] | None = None) -> Path:
    """Write a model folder atomically (a temporary sibling renamed into place, the manifest
    last); ``extra``: more parameter trees, each saved as its own orbax folder (MeLoDy's dpd/)."""
    import orbax.checkpoint as ocp
    out = out.expanduser().absolute()
    if out.exists() and not (out / META_FILE).is_file() and any(out.iterdir()):
        raise PipelineError(f"{out} exists and is not a converted MAGNeT folder; pick an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_lm(lm, tmp / "lm")
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp / "codec", nnx.to_pure_dict(nnx.state(codec)), force=True)
            if text_params is not None:
                ckpt.save(tmp / "text", text_params, force=True)
            for name, tree in (extra or {}).items():
                ckpt.save(tmp / name, tree, force=True)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        integrity.write_manifest(tmp)   # last: a folder with a manifest is complete
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
