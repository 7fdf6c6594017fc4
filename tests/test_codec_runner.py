"""Jitted batch runner: whole-signal vs chunked processing at the seams, length buckets, mesh sharding.

Uses a tiny random codec (with the 2-layer LSTM whose state is what chunking can disturb); the
runner's numerics against the reference are covered by tests/test_codec_parity.py.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from magnet_jax.codec import Encodec, EncodecConfig
from magnet_jax.codec.runner import CodecRunner, Window, plan_windows
from magnet_jax.train.sharding import make_mesh

CFG = EncodecConfig(sample_rate=8000, dimension=16, n_filters=4, ratios=(4, 3, 2), n_q=3, bins=64)
HOP = 24
FRAMES = 150


@pytest.fixture(scope="module")
def runner():
    return CodecRunner(Encodec(CFG, rngs=nnx.Rngs(3)))


@pytest.fixture(scope="module")
def signal():
    return (0.3 * np.random.default_rng(0).standard_normal((2, 1, FRAMES * HOP))).astype(np.float32)


@pytest.fixture(scope="module")
def whole(runner, signal):
    with jax.default_matmul_precision("highest"):
        codes = runner.encode(signal)
        return codes, runner.decode(codes)


def test_plan_windows():
    size, windows = plan_windows(100, 30, 10)
    assert size == 50
    assert windows == [Window(0, 0, 30), Window(20, 30, 60), Window(50, 60, 90), Window(50, 90, 100)]
    assert plan_windows(40, 30, 10) == (40, [Window(0, 0, 40)])  # short signal: one whole window
    with pytest.raises(ValueError, match="chunk_frames"):
        plan_windows(10, 0, 1)


def test_chunked_encode_matches_whole_signal(runner, signal, whole):
    codes, _ = whole
    with jax.default_matmul_precision("highest"):
        chunked = runner.encode_chunked(signal, chunk_frames=30, context_frames=20, windows_per_call=2)
    assert chunked.shape == codes.shape == (2, 3, FRAMES)
    # frames owned by the first window see exactly what whole-signal processing sees
    np.testing.assert_array_equal(chunked[..., :30], codes[..., :30])
    agree = float(np.mean(np.asarray(chunked) == np.asarray(codes)))
    print(f"chunked encode: {agree:.4f} of codes equal to whole-signal encoding")
    assert agree >= 0.99


def test_chunked_decode_seams(runner, whole):
    codes, audio = whole
    with jax.default_matmul_precision("highest"):
        chunked = runner.decode_chunked(codes, chunk_frames=30, context_frames=20)
    assert chunked.shape == audio.shape == (2, 1, FRAMES * HOP)
    err = np.abs(np.asarray(chunked) - np.asarray(audio))[:, 0].max(axis=0).reshape(FRAMES, HOP).max(axis=1)
    seams = err[[29, 30, 59, 60, 89, 90, 119, 120]]
    print(f"chunked decode: max abs error {err.max():.2e} (audio peak {np.abs(audio).max():.2f}), "
          f"at seams {seams.max():.2e}, in the first window {err[:30].max():.2e}")
    assert err[:30].max() <= 1e-5  # the first window is whole-signal processing
    assert err.max() <= 1e-4


def test_length_buckets(runner, signal, whole):
    codes, _ = whole
    n = FRAMES * HOP - 50
    bucketed = runner.encode(signal[..., :n], bucket_frames=64)  # padded to 192 frames, trimmed back to 148
    exact = runner.encode(signal[..., :n])
    assert bucketed.shape == exact.shape == (2, 3, 148)
    # only the last frames can see the bucket's zero padding (non-causal convolutions)
    np.testing.assert_array_equal(bucketed[..., :144], exact[..., :144])


def test_mesh_shards_batch(runner, signal, whole):
    assert len(jax.devices()) == 8, "conftest sets 8 virtual CPU devices"
    codes, audio = whole
    mesh = make_mesh(data=2, fsdp=2, tensor=2)  # batch splits 4 ways over (data, fsdp)
    sharded = CodecRunner(runner.model, mesh=mesh)
    batch = np.concatenate([signal, signal])
    with jax.default_matmul_precision("highest"):
        out_codes = sharded.encode(batch)
        out_audio = sharded.decode(out_codes)
    assert out_codes.sharding.spec[0] == ("data", "fsdp")
    assert out_audio.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_array_equal(out_codes, np.concatenate([codes, codes]))
    np.testing.assert_allclose(out_audio, np.concatenate([audio, audio]), atol=1e-6)
    with pytest.raises(ValueError, match="batch size 2 is not divisible by the mesh's data-parallel size 4"):
        sharded.encode(signal)
    with pytest.raises(ValueError, match="not divisible"):
        sharded.decode(codes)
