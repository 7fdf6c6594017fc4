"""Converted LM weights on disk: an orbax checkpoint of the parameters plus ``lm_config.json``.

Converting a released ``state_dict.bin`` needs torch once; the orbax copy loads without it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from magnet_jax.lm.config import LMConfig, TokenLMConfig
from magnet_jax.lm.convert import build_lm
from magnet_jax.lm.model import CodebookLM
from magnet_jax.lm.musicgen import MusicGenConfig

CONFIG_FILE = "lm_config.json"
PARAMS_DIR = "params"


FAMILY_KEY = "family"             # lm_config.json: "magnet" (absent in older folders) or "musicgen"


def config_to_json(cfg: TokenLMConfig) -> dict:
    """An LM config as JSON, with the family it belongs to."""
    return {FAMILY_KEY: "musicgen" if isinstance(cfg, MusicGenConfig) else "magnet", **dataclasses.asdict(cfg)}


def config_from_json(data: dict) -> TokenLMConfig:
    """``config_to_json``'s inverse (a folder without the family key is MAGNeT's, as all were)."""
    data = dict(data)
    family = data.pop(FAMILY_KEY, "magnet")
    if family not in ("magnet", "musicgen"):
        raise ValueError(f"lm_config.json names family {family!r}; this version reads 'magnet' and 'musicgen'")
    return (MusicGenConfig if family == "musicgen" else LMConfig)(**data)


def save_lm(model: CodebookLM, directory: str | Path) -> Path:
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_json(model.cfg), indent=2))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / PARAMS_DIR, params, force=True)
    return directory


def load_lm(directory: str | Path) -> CodebookLM:
    directory = Path(directory).absolute()
    missing = [n for n in (CONFIG_FILE, PARAMS_DIR) if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a converted LM (missing {missing}); "
                                f"write one with `magnet-jax convert-lm --checkpoint state_dict.bin --out {directory}`")
    cfg = config_from_json(json.loads((directory / CONFIG_FILE).read_text()))
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(directory / PARAMS_DIR)
    return build_lm(cfg, jax.tree.map(np.asarray, params))
