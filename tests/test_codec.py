"""EnCodec API, configs, building blocks against hand-computed values, input validation, axis names."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.codec import Encodec, EncodecConfig, codec_config
from magnet_jax.codec.quantizer import ResidualVectorQuantizer
from magnet_jax.codec.runner import CodecRunner
from magnet_jax.modules.conv import StreamableConv1d, StreamableConvTranspose1d, pad1d, weight_norm_kernel
from magnet_jax.modules.lstm import StreamableLSTM
from magnet_jax.train.sharding import LOGICAL_AXIS_RULES

TINY = EncodecConfig(sample_rate=8000, dimension=16, n_filters=4, ratios=(4, 3, 2), n_q=3, bins=64)


@pytest.fixture(scope="module")
def tiny():
    return Encodec(TINY, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name, sr, hop, rate, n_q, bins, pad, causal", [
    ("encodec_32khz", 32000, 640, 50.0, 4, 2048, "reflect", False),
    ("encodec_16khz", 16000, 320, 50.0, 4, 2048, "constant", False),
    ("encodec_24khz", 24000, 320, 75.0, 32, 1024, "reflect", True),
])
def test_presets(name, sr, hop, rate, n_q, bins, pad, causal):
    cfg = codec_config(name)
    assert (cfg.sample_rate, cfg.hop_length, cfg.frame_rate, cfg.n_q, cfg.bins, cfg.pad_mode, cfg.causal) == \
        (sr, hop, rate, n_q, bins, pad, causal)
    model = nnx.eval_shape(lambda: Encodec(cfg, rngs=nnx.Rngs(0)))
    assert (model.sample_rate, model.channels, model.hop_length, model.frame_rate, model.n_q, model.cardinality) == \
        (sr, 1, hop, rate, n_q, bins)


def test_config_errors():
    with pytest.raises(KeyError, match="known codecs"):
        codec_config("encodec_48khz")
    with pytest.raises(TypeError, match="no field"):
        codec_config("encodec_32khz", pad_mod="constant")
    with pytest.raises(ValueError, match="pad_mode='replicate'"):
        EncodecConfig(pad_mode="replicate")
    with pytest.raises(ValueError, match="trim_right_ratio"):
        EncodecConfig(trim_right_ratio=0.5)
    assert codec_config("encodec_32khz", pad_mode="constant").pad_mode == "constant"


def test_weight_norm_kernel_by_hand():
    v = jnp.array([[[3.0, 4.0]], [[0.0, 2.0]]])  # [O=2, I=1, K=2]: norms 5 and 2
    g = jnp.array([[[10.0]], [[1.0]]])
    np.testing.assert_allclose(weight_norm_kernel(g, v), [[[6.0, 8.0]], [[0.0, 1.0]]])


def test_pad1d_reflect_on_short_input_by_hand():
    x = jnp.array([1.0, 2.0])[None, :, None]
    # audiocraft: zero-extend to length 4 ([1, 2, 0, 0]), reflect-pad 3 each side
    # ([0, 0, 2, 1, 2, 0, 0, 0, 2, 1]), drop the 2 extra samples at the end
    np.testing.assert_array_equal(pad1d(x, 3, 3, "reflect")[0, :, 0], [0, 0, 2, 1, 2, 0, 0, 0])
    np.testing.assert_array_equal(pad1d(x, 1, 2, "constant")[0, :, 0], [0, 1, 2, 0, 0])


def test_strided_conv_by_hand():
    conv = StreamableConv1d(1, 1, 4, stride=2, norm="none", pad_mode="constant", rngs=nnx.Rngs(0))
    conv.weight[...] = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4)
    conv.bias[...] = jnp.array([0.5])
    x = jnp.arange(1.0, 6.0)[None, :, None]  # 1..5; padding (1, 1 + extra 1): [0, 1, 2, 3, 4, 5, 0, 0]
    y = conv(x)[0, :, 0]
    np.testing.assert_allclose(y, [0 + 2 + 6 + 12 + 0.5, 2 + 6 + 12 + 20 + 0.5, 4 + 10 + 0 + 0 + 0.5])


def test_transposed_conv_by_hand():
    conv = StreamableConvTranspose1d(1, 1, 4, stride=2, norm="none", rngs=nnx.Rngs(0))
    conv.weight[...] = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4)
    conv.bias[...] = jnp.zeros(1)
    # full transposed conv of [1, 10]: [1, 2, 3+10, 4+20, 30, 40]; trim (1, 1) -> [2, 13, 24, 30]
    np.testing.assert_allclose(conv(jnp.array([1.0, 10.0])[None, :, None])[0, :, 0], [2, 13, 24, 30])


def test_lstm_one_step_by_hand():
    lstm = StreamableLSTM(1, 1, skip=True, rngs=nnx.Rngs(0))
    layer = lstm.layers[0]
    layer.weight_ih[...] = jnp.array([[1.0], [2.0], [3.0], [4.0]])  # gates i, f, g, o
    layer.weight_hh[...] = jnp.zeros((4, 1))
    layer.bias_ih[...] = jnp.zeros(4)
    layer.bias_hh[...] = jnp.zeros(4)
    x = 0.5
    sig = lambda z: 1 / (1 + math.exp(-z))
    c = sig(1 * x) * math.tanh(3 * x)
    h = sig(4 * x) * math.tanh(c)
    np.testing.assert_allclose(lstm(jnp.full((1, 1, 1), x))[0, 0, 0], h + x, rtol=1e-6)


def test_rvq_by_hand():
    rvq = ResidualVectorQuantizer(2, 3, 2, rngs=nnx.Rngs(0))
    rvq.layers[0].embed[...] = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rvq.layers[1].embed[...] = jnp.array([[0.1, 0.0], [0.0, 0.2], [-0.3, 0.0]])
    x = jnp.array([[[0.9, 0.25], [0.1, 0.7]]])  # [B=1, T=2, D=2]
    codes = rvq.encode(x)
    # frame 0: nearest (1, 0), residual (-0.1, 0.25) -> (0, 0.2); frame 1: (0, 1), residual (0.1, -0.3) -> (0.1, 0)
    np.testing.assert_array_equal(codes, [[[1, 2], [1, 0]]])
    np.testing.assert_array_equal(rvq.encode(x, n_q=1), [[[1, 2]]])
    np.testing.assert_allclose(rvq.decode(codes), [[[1.0, 0.2], [0.1, 1.0]]])


def test_shapes_any_length_multichannel():
    model = Encodec(TINY.replace(channels=2), rngs=nnx.Rngs(1))
    runner = CodecRunner(model)
    for n in (1, 49):
        audio = np.random.default_rng(n).standard_normal((3, 2, n)).astype(np.float32)
        audio[2] = audio[0]
        codes = runner.encode(audio)
        assert codes.shape == (3, 3, model.num_frames(n)) == (3, 3, math.ceil(n / 24)) and codes.dtype == jnp.int32
        assert int(codes.min()) >= 0 and int(codes.max()) < 64
        out = runner.decode(codes)
        assert out.shape == (3, 2, codes.shape[-1] * 24) and out.dtype == jnp.float32
        # batch rows are independent: equal inputs give equal outputs whatever their neighbours (to
        # float rounding: rows in different vector lanes differed by 6e-8 on an AMD EPYC)
        np.testing.assert_array_equal(codes[2], codes[0])
        np.testing.assert_allclose(out[2], out[0], rtol=0, atol=1e-6)


def test_input_errors(tiny):
    with pytest.raises(ValueError, match=r"\[batch, channels, samples\]"):
        tiny.encode(jnp.zeros((100,)))
    with pytest.raises(ValueError, match="2 channels but this codec takes 1"):
        tiny.encode(jnp.zeros((1, 2, 100)))
    with pytest.raises(TypeError, match="floating point"):
        tiny.encode(jnp.zeros((1, 1, 100), jnp.int16))
    with pytest.raises(ValueError, match="n_q=4"):
        tiny.encode(jnp.zeros((1, 1, 100)), n_q=4)
    with pytest.raises(ValueError, match="4 codebooks; this codec decodes 1..3"):
        tiny.decode(jnp.zeros((1, 4, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        tiny.decode(jnp.full((1, 3, 5), 64, jnp.int32))
    with pytest.raises(TypeError, match="integers"):
        tiny.decode(jnp.zeros((1, 3, 5)))


def test_every_parameter_has_logical_axes(tiny):
    rules = dict(LOGICAL_AXIS_RULES)
    weights = codec_config("encodec_24khz")  # conv shortcuts too
    for model in (tiny, nnx.eval_shape(lambda: Encodec(weights, rngs=nnx.Rngs(0)))):
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == len(var.shape), path
            assert all(n is None or n in rules for n in names), (path, names)
            assert var.get_metadata().get("eager_sharding") is False, path


def test_cli_encode_decode_round_trip(tmp_path):
    import argparse
    soundfile = pytest.importorskip("soundfile")
    from magnet_jax.codec import cli
    (tmp_path / "tiny.py").write_text(
        "from magnet_jax.codec import EncodecConfig\n"
        "def get_config(variant=''):\n"
        "    return {'codec': EncodecConfig(sample_rate=8000, dimension=16, n_filters=4, ratios=(4, 3, 2),"
        " n_q=3, bins=64), 'seed': 0}\n")
    wav = 0.3 * np.random.default_rng(0).standard_normal((1001, 2))  # stereo file, mixed down to mono
    soundfile.write(tmp_path / "in.wav", wav, 8000)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="verb"))
    config = str(tmp_path / "tiny.py")
    args = parser.parse_args(["codec-encode", "--config", config, "--n-q", "2", str(tmp_path / "in.wav"),
                              str(tmp_path / "codes.npz")])
    assert args.func(args) == 0
    data = np.load(tmp_path / "codes.npz")
    assert data["codes"].shape == (1, 2, 42) and int(data["num_samples"]) == 1001 and int(data["sample_rate"]) == 8000
    args = parser.parse_args(["codec-decode", "--config", config, str(tmp_path / "codes.npz"), str(tmp_path / "out.wav")])
    assert args.func(args) == 0
    out, rate = soundfile.read(tmp_path / "out.wav")
    assert rate == 8000 and out.shape == (1001,)
    from magnet_jax.cli import UserError
    args = parser.parse_args(["codec-encode", str(tmp_path / "in.wav"), str(tmp_path / "x.npz")])
    with pytest.raises(UserError, match="--checkpoint"):
        args.func(args)
