"""SEANet encoder and decoder (EnCodec's autoencoder) in Flax NNX, channels-last.

The module tree is the paper's: an input conv, one block per ratio (residual units plus a
strided down- or up-sampling conv), an optional LSTM with skip, an output conv. Audiocraft and
transformers both flatten that into one ``nn.Sequential`` whose indices include the parameterless
ELUs; ``torch_layer_indices`` records where each of our parametrised layers sits in that list, so
the checkpoint converter maps keys without guessing.

All activations are ``[batch, time, channels]``; ``Encodec`` transposes the user's ``[B, C, N]``
audio once at the boundary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.codec.config import EncodecConfig
from magnet_jax.modules.conv import StreamableConv1d, StreamableConvTranspose1d
from magnet_jax.modules.lstm import StreamableLSTM


class SEANetResnetBlock(nnx.Module):
    """Residual unit ``shortcut(x) + conv2(elu(conv1(elu(x))))``; conv1 narrows to ``dim // compress``.

    ``shortcut`` is the identity when ``true_skip`` (the 32/16 kHz codecs) and a 1x1 conv
    otherwise (the 24 kHz codec).
    """

    def __init__(self, cfg: EncodecConfig, dim: int, dilation: int, norm: str, *, rngs: nnx.Rngs):
        hidden = dim // cfg.compress
        conv = dict(causal=cfg.causal, pad_mode=cfg.pad_mode, norm=norm, rngs=rngs)
        self.alpha = cfg.elu_alpha
        self.conv1 = StreamableConv1d(dim, hidden, cfg.residual_kernel_size, dilation=dilation, **conv)
        self.conv2 = StreamableConv1d(hidden, dim, 1, **conv)
        self.shortcut = None if cfg.true_skip else StreamableConv1d(dim, dim, 1, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(jax.nn.elu(self.conv1(jax.nn.elu(x, self.alpha)), self.alpha))
        return y + (x if self.shortcut is None else self.shortcut(x))


def residual_stack(cfg: EncodecConfig, width: int, rngs: nnx.Rngs) -> nnx.List:
    """``2 * n_residual_layers`` SEANet residual units at one width, dilations alternating 1 and
    ``dilation_base``: the frame-rate body the spectrogram encoder and the oscillator decoder share."""
    return nnx.List([SEANetResnetBlock(cfg, width, cfg.dilation_base ** (j % 2), cfg.norm, rngs=rngs)
                     for j in range(2 * cfg.n_residual_layers)])


class EncoderBlock(nnx.Module):
    """Residual units at width ``dim`` then ELU and a strided conv to ``2 * dim`` (downsample by ``ratio``)."""

    def __init__(self, cfg: EncodecConfig, dim: int, ratio: int, norm: str, *, rngs: nnx.Rngs):
        self.alpha = cfg.elu_alpha
        self.residuals = nnx.List([SEANetResnetBlock(cfg, dim, cfg.dilation_base ** j, norm, rngs=rngs)
                                   for j in range(cfg.n_residual_layers)])
        self.downsample = StreamableConv1d(dim, 2 * dim, 2 * ratio, stride=ratio, causal=cfg.causal,
                                           pad_mode=cfg.pad_mode, norm=norm, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for unit in self.residuals:
            x = unit(x)
        return self.downsample(jax.nn.elu(x, self.alpha))


class DecoderBlock(nnx.Module):
    """ELU and a transposed conv from ``dim`` to ``dim // 2`` (upsample by ``ratio``), then residual units."""

    def __init__(self, cfg: EncodecConfig, dim: int, ratio: int, norm: str, *, rngs: nnx.Rngs):
        self.alpha = cfg.elu_alpha
        self.upsample = StreamableConvTranspose1d(dim, dim // 2, 2 * ratio, stride=ratio, causal=cfg.causal,
                                                  norm=norm, trim_right_ratio=cfg.trim_right_ratio, rngs=rngs)
        self.residuals = nnx.List([SEANetResnetBlock(cfg, dim // 2, cfg.dilation_base ** j, norm, rngs=rngs)
                                   for j in range(cfg.n_residual_layers)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.upsample(jax.nn.elu(x, self.alpha))
        for unit in self.residuals:
            x = unit(x)
        return x


def _conv(cfg: EncodecConfig, i: int, o: int, k: int, norm: str, rngs: nnx.Rngs) -> StreamableConv1d:
    return StreamableConv1d(i, o, k, causal=cfg.causal, pad_mode=cfg.pad_mode, norm=norm, rngs=rngs)


class SEANetEncoder(nnx.Module):
    """Audio ``[B, N, channels]`` -> latent ``[B, ceil(N / hop), dimension]``."""

    def __init__(self, cfg: EncodecConfig, *, rngs: nnx.Rngs):
        off = cfg.disable_norm_outer_blocks
        norm_at = lambda block: "none" if off >= block else cfg.norm  # audiocraft: first `off` blocks
        self.alpha = cfg.elu_alpha
        self.conv_in = _conv(cfg, cfg.channels, cfg.n_filters, cfg.kernel_size, norm_at(1), rngs)
        dims = [cfg.n_filters * 2 ** i for i in range(len(cfg.ratios))]
        self.blocks = nnx.List([EncoderBlock(cfg, dim, ratio, norm_at(i + 2), rngs=rngs)
                                for i, (dim, ratio) in enumerate(zip(dims, reversed(cfg.ratios)))])
        width = cfg.bottleneck_width
        self.lstm = StreamableLSTM(width, cfg.lstm, rngs=rngs) if cfg.lstm else None
        last_norm = "none" if off == cfg.n_blocks else cfg.norm
        self.conv_out = _conv(cfg, width, cfg.dimension, cfg.last_kernel_size, last_norm, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        if self.lstm is not None:
            x = self.lstm(x)
        return self.conv_out(jax.nn.elu(x, self.alpha))


class SEANetDecoder(nnx.Module):
    """Latent ``[B, T, dimension]`` -> audio ``[B, T * hop, channels]``."""

    def __init__(self, cfg: EncodecConfig, *, rngs: nnx.Rngs):
        off, n_blocks = cfg.disable_norm_outer_blocks, cfg.n_blocks
        self.alpha = cfg.elu_alpha
        self.final_activation = cfg.final_activation
        width = cfg.bottleneck_width
        self.conv_in = _conv(cfg, cfg.dimension, width, cfg.kernel_size,
                             "none" if off == n_blocks else cfg.norm, rngs)
        self.lstm = StreamableLSTM(width, cfg.lstm, rngs=rngs) if cfg.lstm else None
        dims = [width // 2 ** i for i in range(len(cfg.ratios))]
        self.blocks = nnx.List([
            DecoderBlock(cfg, dim, ratio, "none" if off >= n_blocks - (i + 1) else cfg.norm, rngs=rngs)
            for i, (dim, ratio) in enumerate(zip(dims, cfg.ratios))])
        self.conv_out = _conv(cfg, cfg.n_filters, cfg.channels, cfg.last_kernel_size,
                              "none" if off >= 1 else cfg.norm, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.conv_in(z)
        if self.lstm is not None:
            x = self.lstm(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv_out(jax.nn.elu(x, self.alpha))
        if self.final_activation == "Tanh":
            x = jnp.tanh(x)
        return x


def torch_layer_indices(cfg: EncodecConfig) -> dict[str, dict]:
    """Where our layers sit in the reference's flat ``model`` / ``layers`` Sequential.

    Returns ``{'encoder': {...}, 'decoder': {...}}`` with keys ``conv_in``, ``lstm`` (or None),
    ``conv_out``, ``blocks`` (a list of ``{'residuals': [idx...], 'sample': idx}``).
    """
    n_res = cfg.n_residual_layers
    enc_blocks, i = [], 1
    for _ in cfg.ratios:
        enc_blocks.append({"residuals": list(range(i, i + n_res)), "sample": i + n_res + 1})
        i += n_res + 2
    enc_lstm = i if cfg.lstm else None
    i += 1 if cfg.lstm else 0
    encoder = {"conv_in": 0, "blocks": enc_blocks, "lstm": enc_lstm, "conv_out": i + 1}

    i = 1
    dec_lstm = 1 if cfg.lstm else None
    i += 1 if cfg.lstm else 0
    dec_blocks = []
    for _ in cfg.ratios:
        dec_blocks.append({"sample": i + 1, "residuals": list(range(i + 2, i + 2 + n_res))})
        i += n_res + 2
    decoder = {"conv_in": 0, "blocks": dec_blocks, "lstm": dec_lstm, "conv_out": i + 1}
    return {"encoder": encoder, "decoder": decoder}
