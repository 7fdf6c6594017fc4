"""Fréchet distance against its closed form, and the embedders (codec latents, plugged ones)."""
from __future__ import annotations

import numpy as np
import pytest

from magnet_jax.eval import frechet as F


def _closed_form_diagonal(mu_a, var_a, mu_b, var_b) -> float:
    """For diagonal covariances the matrix square root is elementwise."""
    return float(np.sum((mu_a - mu_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b)))


def test_stats_form_equals_the_closed_form_for_diagonal_gaussians():
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    got = F.frechet_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(_closed_form_diagonal(mu_a, var_a, mu_b, var_b), rel=1e-10)
    # a full covariance, rotated: the distance is invariant to rotating both Gaussians
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    rotated = F.frechet_from_stats(q @ mu_a, q @ np.diag(var_a) @ q.T, q @ mu_b, q @ np.diag(var_b) @ q.T)
    assert rotated == pytest.approx(got, rel=1e-8)


def test_sampled_sets_approach_the_closed_form():
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.array([0.0, 2.0]), np.array([1.0, -1.0])
    sd_a, sd_b = np.array([1.0, 3.0]), np.array([2.0, 0.5])
    a = mu_a + sd_a * rng.standard_normal((40000, 2))
    b = mu_b + sd_b * rng.standard_normal((40000, 2))
    want = _closed_form_diagonal(mu_a, sd_a ** 2, mu_b, sd_b ** 2)      # 10 + 2 + 6.25 = 18.25
    assert F.frechet_distance(a, b) == pytest.approx(want, rel=0.02)
    assert F.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_tiny_and_bad_sets_are_refused_and_rank_deficient_ones_stay_finite():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="at least 2"):
        F.frechet_distance(rng.standard_normal((1, 4)), rng.standard_normal((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        F.frechet_distance(np.full((3, 2), np.nan), rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match="sizes differ"):
        F.frechet_distance(rng.standard_normal((3, 2)), rng.standard_normal((3, 3)))
    d = F.frechet_distance(rng.standard_normal((3, 16)), rng.standard_normal((4, 16)) + 1.0)   # 3 rows, 16 dims
    assert np.isfinite(d) and d > 0


def test_codec_latents_are_the_encoder_output_frame_by_frame():
    import jax.numpy as jnp
    from flax import nnx
    from magnet_jax.codec import Encodec, codec_config
    codec = Encodec(codec_config("encodec_16khz", n_filters=2, dimension=6, lstm=0, ratios=(4, 2), n_q=2, bins=8),
                    rngs=nnx.Rngs(0))
    audio = np.random.default_rng(3).uniform(-0.5, 0.5, (3, 800)).astype(np.float32)
    emb = F.CodecLatents(codec, batch_size=2)           # 3 clips: one full batch, one padded
    got = emb(audio)
    want = np.asarray(codec.encode_latent(jnp.asarray(audio[:, None, :])))     # [3, 100, 6]
    assert got.shape == (3 * 100, 6) and emb.sample_rate == 16000
    np.testing.assert_allclose(got, want.reshape(-1, 6), atol=1e-5)
    # resampled when the audio's rate differs: 8 kHz audio becomes 16 kHz, twice the frames
    assert F.embed(emb, audio, 8000).shape == (3 * 200, 6)


class MeanEmbedder:
    """A plugged embedder for the test: per clip, the mean and peak of 100-sample windows."""
    name = "window_stats"
    sample_rate = 8000

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        w = audio[:, : audio.shape[1] // 100 * 100].reshape(-1, 100)
        return np.stack([w.mean(axis=1), np.abs(w).max(axis=1)], axis=1)


def make_embedder() -> MeanEmbedder:
    return MeanEmbedder()


def not_an_embedder() -> object:
    return object()


def test_load_embedder_from_module_function_and_its_errors():
    emb = F.load_embedder("test_eval_frechet:make_embedder")
    assert emb.name == "window_stats" and F.embed(emb, np.zeros((2, 1600)), 16000).shape == (16, 2)
    with pytest.raises(ValueError, match="module:function"):
        F.load_embedder("test_eval_frechet")
    with pytest.raises(ValueError, match="cannot import"):
        F.load_embedder("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="lacks"):
        F.load_embedder("test_eval_frechet:not_an_embedder")
    with pytest.raises(ValueError, match="needs its weights.*vggish=PATH"):
        F.load_embedder("vggish")
    with pytest.raises(ValueError, match="unknown built-in embedding 'openl3'"):
        F.load_embedder("openl3=/tmp/w.pt")
