"""configs/melody_tiny.py and the MeLoDy pipeline (magnet_jax.models.melody) on random weights."""
import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.codec.encodec import Encodec
from magnet_jax.codec.training.config import check_config
from magnet_jax.config_loader import load_config
from magnet_jax.melody.dpd import DPD
from magnet_jax.melody.sampler import DiffusionSamplerConfig
from magnet_jax.melody.semantic_lm import semantic_lm
from magnet_jax.models.melody import MeLoDy


def test_codec_variant_is_a_valid_train_codec_config():
    cfg = check_config(load_config("configs/melody_tiny.py:codec"))
    assert cfg["codec"].bottleneck == "vae" and cfg["codec"].vae_latent_dim == 8 and cfg["losses"].kl == 0.01
    with pytest.raises(ValueError, match="unknown variant"):
        load_config("configs/melody_tiny.py:nope")


def test_phase_blind_variants_pair_the_oscillator_vae_with_a_dpd_of_its_width():
    """codec_osc is configs/codec_oscillators.py (its encoder, decoder, losses and frame rate) under
    the Gaussian bottleneck, and dpd_osc diffuses latents of exactly that width: a DPD of another
    width could not be trained on that VAE (train-dpd refuses the pair)."""
    vae = check_config(load_config("configs/melody_tiny.py:codec_osc"))
    osc = load_config("configs/codec_oscillators.py")
    assert vae["codec"].replace(bottleneck="rvq", latent_dim=0) == osc["codec"]
    assert vae["codec"].bottleneck == "vae" and vae["losses"].kl == 0.01
    assert dataclasses.replace(vae["losses"], kl=osc["losses"].kl) == osc["losses"]
    assert load_config("configs/melody_tiny.py:dpd_osc")["dpd"].latent_dim == vae["codec"].vae_latent_dim == 16
    assert vae["codec"].frame_rate == load_config("configs/melody_tiny.py")["codec"].frame_rate   # same DPD crops


def _param_millions(build) -> float:
    """Parameter count of a module built abstractly (nnx.eval_shape: no weights allocated)."""
    state = nnx.state(nnx.eval_shape(build), nnx.Param)
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state)) / 1e6


def test_paper_sized_recipe_has_the_papers_shapes_and_passes_each_verbs_checks():
    """configs/melody_paper.py against MeLoDy's section 5.1 figures (as its docstring cites them):
    250 Hz latents 16 wide from 24 kHz audio, 1024 semantic tokens at 25 Hz, a semantic LM of
    429.5M parameters (within 3 %), a DPD of width 768 and 8 blocks with segments of 64 and
    M = 4; every variant passes the checks its verb runs, and the DPD's training crop gives
    whole chunks and segments of the VAE's frames (train-dpd's own shape check)."""
    from magnet_jax.codec.training.config import check_config as check_codec
    from magnet_jax.melody.training import check_config as check_dpd, check_shapes
    from magnet_jax.train.config import check_config as check_train

    cfg = load_config("configs/melody_paper.py")
    codec, dpd, lm = cfg["codec"], cfg["dpd"], cfg["semantic_lm"]
    assert (codec.sample_rate, codec.frame_rate, codec.vae_latent_dim) == (24000, 250, 16)
    assert (lm.card, lm.frame_rate, dpd.semantic_vocab) == (1024, 25, 1024)
    assert (dpd.dim, dpd.num_blocks, dpd.segment_length, dpd.num_chunks, dpd.cond_dropout) == (768, 8, 64, 4, 0.1)
    assert cfg["diffusion"].cfg_scale == 2.5
    assert abs(_param_millions(lambda: semantic_lm(lm, rngs=nnx.Rngs(0))) / 429.5 - 1) < 0.03
    assert cfg["tokenizer"]["sample_rate"] / cfg["tokenizer"]["hop_length"] == lm.frame_rate

    check_codec(load_config("configs/melody_paper.py:codec"))
    run = load_config("configs/melody_paper.py:semantic_lm")
    check_train(run)
    assert run["lm"] == lm.replace(compute_dtype="bfloat16")
    run = load_config("configs/melody_paper.py:dpd")
    run["melody"] = dataclasses.replace(run["melody"], vae="runs/vae", semantic_tokenizer="runs/semantic.npz")
    check_dpd(run)
    assert run["dpd"] == dpd
    # train-dpd's shape check reads only the VAE's config and the tokenizer's vocabulary
    check_shapes(dpd, SimpleNamespace(cfg=codec), SimpleNamespace(num_tokens=1024), run["data"].segment_duration)
    with pytest.raises(ValueError, match="unknown variant"):
        load_config("configs/melody_paper.py:nope")


def test_pipeline_generates_and_extends_chunk_by_chunk():
    cfg = load_config("configs/melody_tiny.py")
    codec_cfg = cfg["codec"].replace(n_filters=2, ratios=(2, 2), lstm=0, sample_rate=1000)   # fast to build
    dpd_cfg = dataclasses.replace(cfg["dpd"], dim=16, num_heads=2, ffn_dim=32, num_blocks=1)
    lm_cfg = cfg["semantic_lm"].replace(dim=16, num_heads=2, num_layers=1, ffn_dim=32)
    pipe = MeLoDy(semantic_lm(lm_cfg, rngs=nnx.Rngs(1)), DPD(dpd_cfg, rngs=nnx.Rngs(0)),
                  Encodec(codec_cfg, rngs=nnx.Rngs(2)))
    dc = DiffusionSamplerConfig(num_steps=3, cfg_scale=2.5)
    out = pipe.generate_window(jax.random.key(0), duration=0.1, num_samples=2, diffusion_config=dc)
    T = pipe.latent_frames(0.1)                         # 250 Hz latent: 25 frames -> 40 (lcm(4, 5) = 20)
    assert T == 40 and out["latents"].shape == (2, T, 8) and out["audio"].shape == (2, 1, 100)
    assert out["semantic"].shape == (2, 3) and bool(jnp.all(jnp.isfinite(out["audio"])))
    long = pipe.generate_long(jax.random.key(0), duration=0.1, extra_chunks=2, num_samples=2, diffusion_config=dc)
    assert long["latents"].shape == (2, T + 2 * (T // 4), 8)
    assert long["audio"].shape == (2, 1, 4 * (T + 2 * (T // 4)))
    assert bool(jnp.all(jnp.isfinite(long["latents"])))
    # mismatched parts are refused before anything compiles (abstract modules: nothing is drawn)
    lm, dpd = nnx.eval_shape(lambda: semantic_lm(lm_cfg, rngs=nnx.Rngs(1))), nnx.eval_shape(lambda: DPD(dpd_cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="VAE latents"):
        MeLoDy(lm, dpd, nnx.eval_shape(lambda: Encodec(codec_cfg.replace(bottleneck="rvq"), rngs=nnx.Rngs(2))))
    with pytest.raises(ValueError, match="semantic_vocab"):
        MeLoDy(nnx.eval_shape(lambda: semantic_lm(lm_cfg.replace(card=7), rngs=nnx.Rngs(1))), dpd,
               nnx.eval_shape(lambda: Encodec(codec_cfg, rngs=nnx.Rngs(2))))
    with pytest.raises(ValueError, match="extra_chunks"):
        pipe.generate_long(jax.random.key(0), duration=0.1, extra_chunks=-1)
