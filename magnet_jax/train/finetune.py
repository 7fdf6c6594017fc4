"""Starting weights for fine-tuning: a converted LM folder (orbax, ``magnet-jax convert-lm``) or
an audiocraft ``state_dict.bin`` (the released export, or a bare state dict).

The checkpoint's architecture must equal the run's ``lm`` config (model family, dim, heads, layers,
FFN, n_q, card, cross-attention; MusicGen's delays); training-only fields (compute_dtype, span_len, segment length) come from
the run. From an audiocraft file the text projection (``condition_provider...output_proj``) is
loaded too when the run is text-conditioned; a converted folder holds the LM only, so the
projection starts fresh (reported in the run summary).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from magnet_jax.lm.config import TokenLMConfig
from magnet_jax.lm.musicgen import MusicGenConfig

ARCH_FIELDS = ("dim", "num_heads", "num_layers", "ffn_dim", "n_q", "card", "cross_attention")


def check_architecture(have: TokenLMConfig, want: TokenLMConfig, source: str) -> None:
    if type(have) is not type(want):     # same shapes, another model: MAGNeT weights in a MusicGen run
        raise ValueError(f"{source} holds a {type(have).__name__} LM but the run's lm config is a "
                         f"{type(want).__name__}; fine-tune a checkpoint of the run's model family")
    fields = ARCH_FIELDS + (("delays",) if isinstance(want, MusicGenConfig) else ())
    diff = [f"{f}: checkpoint {getattr(have, f)}, config {getattr(want, f)}"
            for f in fields if getattr(have, f) != getattr(want, f)]
    if diff:
        raise ValueError(f"{source} does not fit the run's lm config ({'; '.join(diff)}); "
                         f"use the config of the released model (e.g. configs/magnet_small.py) "
                         f"or override lm.* to match")


def load_pretrained(path: str, lm_cfg: TokenLMConfig, text_width: int | None) -> tuple[dict, dict]:
    """(pure params {"lm": ..., "text"?: ...} as numpy, info). ``text`` only when it was loaded."""
    p = Path(path)
    info: dict = {"init_from": str(p)}
    text_params = None
    if p.is_dir():
        from magnet_jax.lm.checkpoint import load_lm
        model = load_lm(p)
        check_architecture(model.cfg, lm_cfg, str(p))
        info["text_proj"] = "fresh (a converted LM folder holds no output_proj)" if text_width else "none"
    elif p.is_file():
        from magnet_jax.lm.convert import CheckpointError, load_audiocraft_lm
        from magnet_jax.text.conditioner import TextConditioner, load_output_proj
        try:
            ckpt_cfg, model, cond = load_audiocraft_lm(p)
        except CheckpointError as err:
            if "bare state dict" not in str(err):
                raise
            ckpt_cfg, model, cond = load_audiocraft_lm(p, cfg=lm_cfg)   # no xp.cfg: the run's
        check_architecture(ckpt_cfg, lm_cfg, str(p))
        if text_width:
            proj = TextConditioner(text_width, lm_cfg.dim, nnx.Rngs(0))
            prefixes = sorted({k.rsplit(".output_proj.", 1)[0] for k in cond if ".output_proj." in k})
            if not prefixes:
                info["text_proj"] = "fresh (no output_proj in the checkpoint)"
            else:
                try:
                    load_output_proj(proj, cond, prefixes[0] + ".output_proj")
                except ValueError as err:
                    raise ValueError(f"{p}: {err}; the run's text encoder must be the one the "
                                     f"checkpoint was trained with (text.encoder / text.path)") from None
                text_params = nnx.to_pure_dict(nnx.state(proj, nnx.Param))
                info["text_proj"] = f"loaded from {prefixes[0]}.output_proj"
        else:
            info["text_proj"] = "none"
    else:
        raise FileNotFoundError(f"finetune.init_from {p} does not exist (a converted LM folder or an "
                                f"audiocraft state_dict.bin)")
    params = {"lm": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    if text_params is not None:
        params["text"] = text_params
    return _numpy(params), info


def _numpy(tree):
    import jax
    return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)
