"""MeLoDy's audio VAE-GAN: the Gaussian bottleneck (KL against its closed form and a Monte-Carlo
estimate) and a tiny VAE codec trained through the real ``train-codec`` path."""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.codec import codec_config
from magnet_jax.codec.encodec import Encodec
from magnet_jax.codec.training.config import check_config
from magnet_jax.codec.vae import kl_divergence, reparameterize


def test_kl_matches_hand_computed_values():
    # N(0, 1): 0.  N(1, 4): 0.5 * (1 + 4 - 1 - log 4) = 2 - log 2.  N(-2, e^-1): 0.5 * (4 + e^-1 - 1 + 1)
    mean = jnp.array([0.0, 1.0, -2.0])
    logvar = jnp.array([0.0, math.log(4.0), -1.0])
    per = [0.0, 2.0 - math.log(2.0), 0.5 * (4.0 + math.exp(-1.0))]
    np.testing.assert_allclose(kl_divergence(mean, logvar), np.mean(per), rtol=1e-6)
    np.testing.assert_allclose(kl_divergence(mean[1:2], logvar[1:2]), per[1], rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(mean, logvar[:2])


def test_kl_matches_a_monte_carlo_estimate_and_samples_have_the_right_moments():
    mean = jnp.array([0.5, -1.5, 0.0, 2.0])
    logvar = jnp.array([-1.0, 0.3, 1.2, -2.5])
    n = 200_000
    z = reparameterize(jax.random.key(0), jnp.broadcast_to(mean, (n, 4)), jnp.broadcast_to(logvar, (n, 4)))
    np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(z.var(0), jnp.exp(logvar), rtol=0.02)
    var = jnp.exp(logvar)
    log_q = -0.5 * (jnp.square(z - mean) / var + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (jnp.square(z) + math.log(2 * math.pi))
    per_dim = np.asarray(log_q - log_p)                           # [n, 4]
    mc, se = per_dim.mean(0), per_dim.std(0) / math.sqrt(n)
    closed = np.asarray(0.5 * (mean ** 2 + var - 1 - logvar))
    assert np.all(np.abs(mc - closed) < 4 * se + 1e-4), (mc, closed, se)
    np.testing.assert_allclose(kl_divergence(mean, logvar), closed.mean(), rtol=1e-6)


def tiny_vae_codec(latent_dim=3):
    return codec_config("encodec_16khz", sample_rate=8000, n_filters=2, dimension=8, ratios=(2, 2), lstm=0,
                        n_q=2, bins=8, bottleneck="vae", latent_dim=latent_dim)


def test_vae_codec_shapes_and_errors():
    model = Encodec(tiny_vae_codec(), rngs=nnx.Rngs(0))
    audio = jnp.zeros((2, 1, 100))
    mean, logvar = model.encode_moments(audio)
    assert mean.shape == logvar.shape == (2, 25, 3)
    assert model.decode_vae(mean).shape == (2, 1, 100)
    assert not hasattr(model, "quantizer")
    with pytest.raises(ValueError, match="VAE bottleneck"):
        model.encode(audio)
    with pytest.raises(ValueError, match=r"VAE latents must be \[batch, frames, 3\]"):
        model.decode_vae(jnp.zeros((2, 25, 8)))
    rvq = Encodec(dataclasses.replace(tiny_vae_codec(), bottleneck="rvq"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs a VAE codec"):
        rvq.encode_moments(audio)
    with pytest.raises(ValueError, match="bottleneck='gauss'"):
        codec_config("encodec_16khz", bottleneck="gauss")
    with pytest.raises(ValueError, match="latent_dim=-1"):
        codec_config("encodec_16khz", bottleneck="vae", latent_dim=-1)
    assert codec_config("encodec_16khz", bottleneck="vae").vae_latent_dim == 128


def test_vae_gradients_reach_the_right_parameters():
    """The generator's pullback for a VAE codec: reconstruction gradient reaches encoder, bottleneck
    and decoder; the KL term alone reaches the encoder and the moments projection, not the decoder."""
    from magnet_jax.codec.training import step as S
    model = Encodec(tiny_vae_codec(), rngs=nnx.Rngs(0))
    gdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 1, 96)).astype(np.float32) * 0.3)
    (y, kl), pullback, aux = jax.vjp(lambda p: S._vae_forward(gdef, p, x, jax.random.key(1)), params, has_aux=True)
    assert y.shape == x.shape and aux is None and float(kl) > 0
    g = pullback((jnp.ones_like(y), jnp.float32(0.0)))[0]
    for part in (("encoder", "conv_in", "weight_v"), ("bottleneck", "to_moments"), ("bottleneck", "from_latent"),
                 ("decoder", "conv_out", "bias")):
        leaf = g
        for k in part:
            leaf = leaf[k]
        assert np.any(np.asarray(leaf) != 0), part
    g_kl = pullback((jnp.zeros_like(y), jnp.float32(1.0)))[0]
    assert np.any(np.asarray(g_kl["bottleneck"]["to_moments"]) != 0)
    assert np.any(np.asarray(g_kl["encoder"]["conv_in"]["weight_v"]) != 0)
    assert np.all(np.asarray(g_kl["decoder"]["conv_out"]["weight_v"]) == 0)
    assert np.all(np.asarray(g_kl["bottleneck"]["from_latent"]) == 0)


def micro_vae_run_config(corpus: str) -> dict:
    """test_codec_train's micro codec (RVQ) on ``corpus``, 4 steps of batch 2, half the clips held out;
    the command line turns it into a VAE codec."""
    from test_codec_train import micro_config
    cfg = micro_config()
    cfg["data"] = dataclasses.replace(cfg["data"], dir=corpus, segment_duration=0.1, valid_percent=50.0)
    cfg["train"] = dataclasses.replace(cfg["train"], steps=4, batch_size=2, checkpoint_every=4, log_every=2,
                                       eval_every=0, keep_checkpoints=1, async_checkpoint=False, progress=False)
    return cfg


def test_tiny_vae_codec_trains_through_magnet_jax_train_codec(tmp_path):
    """``magnet-jax train-codec ... codec.bottleneck=vae codec.latent_dim=3`` (the real loop: data,
    trainer, balancer, MS-STFT discriminator, checkpoints, metrics): the KL term is logged, positive
    and finite, the discriminator and generator losses are finite, no step is skipped; then
    ``magnet-jax eval-codec`` reconstructs held-out clips through the posterior mean (one row, no
    token statistics: a VAE has no codes)."""
    import os
    from data_pipelines.synth import write_corpus
    from magnet_jax.cli import run

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 4, duration=0.5, sample_rate=8000, seed=3, progress=False)
    config_file = tmp_path / "micro_vae.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_codec_vae import micro_vae_run_config\n"
        f"def get_config(variant=''):\n    return micro_vae_run_config({str(corpus)!r})\n")
    workdir = tmp_path / "run"
    assert run(None, ["train-codec", "--config", str(config_file), "--workdir", str(workdir),
                      "codec.bottleneck=vae", "codec.latent_dim=3"]) == 0
    saved = json.loads((workdir / "config.json").read_text())["codec"]
    assert saved["bottleneck"] == "vae" and saved["latent_dim"] == 3
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("split") == "train"]
    assert len(train_rows) == 2
    assert all(np.isfinite(r["kl"]) and r["kl"] > 0 and r["skipped"] == 0 for r in train_rows)
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in train_rows)
    assert all("commitment" not in r and "perplexity_q1" not in r for r in train_rows)
    assert run(None, ["eval-codec", "--workdir", str(workdir), "--out", str(tmp_path / "eval"),
                      "--clips", "2", "--duration", "0.2", "--no-music"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [r["n_q"] for r in report["rows"]] == [1] and report["tokens"] == []
    assert np.isfinite(report["rows"][0]["sisnr"])
