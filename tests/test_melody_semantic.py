"""Semantic tokens: k-means on a closed-form case, the built-in log-mel + chroma extractor, the
tokenizer end to end, and the hook for a user's own extractor."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.melody.kmeans import kmeans_assign, kmeans_fit
from magnet_jax.melody.semantic import LogMelChroma, SemanticTokenizer


def test_kmeans_recovers_well_separated_clusters_exactly():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    sizes = [50, 20, 80, 7]
    labels = np.repeat(np.arange(4), sizes)
    x = centres[labels] + rng.uniform(-0.5, 0.5, (len(labels), 3))
    perm = rng.permutation(len(labels))
    x, labels = x[perm].astype(np.float32), labels[perm]
    fit = np.asarray(kmeans_fit(jax.random.key(1), jnp.asarray(x), 4, iters=10))
    ids = np.asarray(kmeans_assign(jnp.asarray(x), jnp.asarray(fit)))
    # each found cluster is exactly one true cluster (a bijection), and its centre is that cluster's mean
    mapping = {int(i): set(labels[ids == i].tolist()) for i in range(4)}
    assert all(len(v) == 1 for v in mapping.values())
    assert sorted(next(iter(v)) for v in mapping.values()) == [0, 1, 2, 3]
    for i, v in mapping.items():
        np.testing.assert_allclose(fit[i], x[labels == next(iter(v))].mean(0), atol=1e-4)


def test_kmeans_bad_inputs():
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans_fit(jax.random.key(0), jnp.zeros((3, 2)), 4)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        kmeans_fit(jax.random.key(0), jnp.zeros((3,)), 1)
    with pytest.raises(ValueError, match="centroids"):
        kmeans_assign(jnp.zeros((3, 2)), jnp.zeros((2, 3)))


def tone(freq, sr=16000, seconds=1.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_log_mel_chroma_frames_and_pitch_class():
    ext = LogMelChroma(sample_rate=16000, hop_length=640, n_fft=2048, n_mels=32)
    feats = np.asarray(ext(np.stack([tone(440.0), tone(261.63)])))
    assert feats.shape == (2, 1 + (16000 - 2048) // 640, 32 + 12) and ext.frame_rate == 25.0
    chroma = feats[:, :, 32:]
    np.testing.assert_allclose(chroma.sum(-1), 1.0, atol=1e-5)
    assert np.all(chroma[0].argmax(-1) == 9)           # A4 = pitch class 9 (C = 0)
    assert np.all(chroma[1].argmax(-1) == 0)           # C4
    with pytest.raises(ValueError, match="mono"):
        ext(np.zeros((1, 1, 16000)))


def test_tokenizer_gives_one_token_per_pitch_and_round_trips(tmp_path):
    ext = LogMelChroma(sample_rate=16000, hop_length=640, n_fft=2048, n_mels=32)
    freqs = [261.63, 329.63, 392.0]                    # C4, E4, G4
    audio = np.stack([tone(f) for f in freqs])
    tok = SemanticTokenizer.fit(jax.random.key(0), ext, audio, num_tokens=3, iters=20)
    codes = np.asarray(tok.encode(audio))
    assert codes.shape[1] > 10
    assert all(len(set(row.tolist())) == 1 for row in codes)           # one token per clip
    assert len({row[0] for row in codes}) == 3                         # a different token per pitch
    tok.save(tmp_path / "tok.npz")
    again = SemanticTokenizer.load(tmp_path / "tok.npz", ext)
    np.testing.assert_array_equal(np.asarray(again.encode(audio)), np.asarray(tok.encode(audio)))
    with pytest.raises(ValueError, match="extractor"):
        SemanticTokenizer(object(), tok.centroids, tok.mean, tok.std)


class MeanPoolExtractor:
    """A user's own extractor through the protocol: 4-dim frame statistics at 10 Hz."""
    sample_rate, frame_rate = 1000, 10.0

    def __call__(self, audio):
        a = jnp.asarray(audio).reshape(audio.shape[0], -1, 100)
        return jnp.stack([a.mean(-1), a.std(-1), a.max(-1), a.min(-1)], -1)


def test_a_users_extractor_plugs_in():
    rng = np.random.default_rng(0)
    quiet, loud = rng.normal(0, 0.01, (2, 1000)), rng.normal(0, 1.0, (2, 1000))
    audio = np.concatenate([quiet, loud]).astype(np.float32)
    tok = SemanticTokenizer.fit(jax.random.key(0), MeanPoolExtractor(), audio, num_tokens=2, iters=10)
    codes = np.asarray(tok.encode(audio))
    assert codes.shape == (4, 10) and tok.frame_rate == 10.0
    assert len(set(codes[:2].ravel())) == 1 and len(set(codes[2:].ravel())) == 1 and codes[0, 0] != codes[2, 0]


def test_a_local_transformers_model_plugs_in(tmp_path):
    """The hook for MERT / wav2vec2 from a local folder: a random tiny wav2vec2 saved to disk
    (strides 5 x 4 = 20, kernels 10, 8: 1000 samples -> 48 frames)."""
    transformers = pytest.importorskip("transformers")
    from magnet_jax.melody.semantic import TransformersExtractor
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                                      num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, vocab_size=10)
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    ext = TransformersExtractor(tmp_path / "w2v", layer=-1, sample_rate=1000)
    assert ext.frame_rate == 48.0                      # ((1000 - 10) // 5 + 1 - 8) // 4 + 1
    audio = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float32)
    assert ext(audio).shape == (2, 48, 16)
    tok = SemanticTokenizer.fit(jax.random.key(0), ext, audio, num_tokens=4, iters=5)
    codes = np.asarray(tok.encode(audio))
    assert codes.shape == (2, 48) and codes.min() >= 0 and codes.max() < 4
    with pytest.raises(ValueError, match="layer 9 out of range"):
        TransformersExtractor(tmp_path / "w2v", layer=9, sample_rate=1000)
    with pytest.raises(ValueError, match="does not exist"):
        TransformersExtractor(tmp_path / "missing", layer=0, sample_rate=1000)
