"""EnCodec's multi-scale STFT discriminator (audiocraft ``adversarial/discriminators/msstftd.py``) in Flax NNX.

Each sub-discriminator looks at one STFT resolution: the complex spectrogram's real and
imaginary parts as 2 channels over (time, frequency), then 2-D convs (kernel 3 x 9, stride 2 over
frequency, dilations 1, 2, 4 over time), a 3 x 3 conv, and a 3 x 3 conv to one logit map.
LeakyReLU after every conv but the last; every feature map is returned for feature matching.

Parameters keep torch's names and layouts (``convs.{i}.weight_g [O,1,1,1]``, ``weight_v [O,I,kh,kw]``,
``bias``; the first conv has no weight norm, as in audiocraft, so it holds ``weight``), so an
audiocraft discriminator's state dict maps 1:1 (see ``tests/test_codec_train_parity.py``).
Activations are channels-last ``[B, time, freq, C]``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.codec.training.config import DiscriminatorConfig
from magnet_jax.codec.training.spectral import stft
from magnet_jax.modules.conv import weight_norm_kernel


def _param(value: jax.Array, names: tuple) -> nnx.Param:
    return nnx.Param(value, out_sharding=names, eager_sharding=False)


class NormConv2d(nnx.Module):
    """torch ``Conv2d`` (optionally weight-normed) with symmetric 'same'-style padding, on NHWC."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], *, stride=(1, 1), dilation=(1, 1),
                 weight_norm: bool = True, rngs: nnx.Rngs):
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.padding = tuple(((k - 1) * d) // 2 for k, d in zip(kernel, dilation))
        bound = 1.0 / math.sqrt(in_ch * kernel[0] * kernel[1])      # torch's default init
        v = jax.random.uniform(rngs.params(), (out_ch, in_ch, *kernel), jnp.float32, -bound, bound)
        names = ("channels", None, None, None)
        self.weight_norm = weight_norm
        if weight_norm:
            self.weight_g = _param(jnp.sqrt(jnp.sum(v * v, axis=(1, 2, 3), keepdims=True)), names)
            self.weight_v = _param(v, names)
        else:
            self.weight = _param(v, names)
        self.bias = _param(jax.random.uniform(rngs.params(), (out_ch,), jnp.float32, -bound, bound), ("channels",))

    def kernel(self) -> jax.Array:
        """The effective kernel, torch layout ``[O, I, kh, kw]``."""
        if self.weight_norm:
            return weight_norm_kernel(self.weight_g[...], self.weight_v[...])
        return self.weight[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel().transpose(2, 3, 1, 0).astype(x.dtype)           # HWIO
        if self.stride[0] == 1 and self.stride[1] > 1 and self.dilation[1] == 1:
            y = _freq_strided_conv(x, kernel, self.stride[1], self.padding, self.dilation[0])
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, window_strides=self.stride, padding=[(p, p) for p in self.padding],
                rhs_dilation=self.dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...].astype(x.dtype)


def _freq_strided_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: tuple[int, int],
                       time_dilation: int) -> jax.Array:
    """A conv with stride ``s`` over frequency written as ``s`` stride-1 convs on the polyphase
    components (input columns ``p::s`` meet kernel taps ``p::s``), summed.

    Why: the same numbers, but XLA's CPU backward of a strided conv (an input-dilated conv) runs
    about 5x slower than the stride-1 convs here, and it dominated the codec train step.
    """
    pad_t, pad_f = padding
    width, taps = x.shape[2] + 2 * pad_f, kernel.shape[1]
    n_out = (width - taps) // stride + 1
    right = pad_f + (-width) % stride
    x = jnp.pad(x, [(0, 0), (0, 0), (pad_f, right), (0, 0)])
    out = None
    for p in range(min(stride, taps)):
        y = jax.lax.conv_general_dilated(
            x[:, :, p::stride], kernel[:, p::stride], window_strides=(1, 1), padding=[(pad_t, pad_t), (0, 0)],
            rhs_dilation=(time_dilation, 1), dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, :, :n_out]
        out = y if out is None else out + y
    return out


class DiscriminatorSTFT(nnx.Module):
    """One resolution: ``[B, C, N]`` audio -> (logits ``[B, T', F', 1]``, feature maps)."""

    def __init__(self, cfg: DiscriminatorConfig, n_fft: int, hop: int, channels: int, *, rngs: nnx.Rngs):
        self.n_fft, self.hop, self.normalized = n_fft, hop, cfg.normalized
        self.slope = cfg.negative_slope
        k = tuple(cfg.kernel_size)
        width = lambda i: min(cfg.filters_scale ** i * cfg.filters, cfg.max_filters)  # noqa: E731
        convs = [NormConv2d(2 * channels, cfg.filters, k, weight_norm=False, rngs=rngs)]
        in_ch = min(cfg.filters_scale * cfg.filters, cfg.max_filters)
        for i, d in enumerate(cfg.dilations):
            out_ch = width(i + 1)
            convs.append(NormConv2d(in_ch, out_ch, k, stride=tuple(cfg.stride), dilation=(d, 1), rngs=rngs))
            in_ch = out_ch
        out_ch = width(len(cfg.dilations) + 1)
        convs.append(NormConv2d(in_ch, out_ch, (k[0], k[0]), rngs=rngs))
        self.convs = nnx.List(convs)
        self.conv_post = NormConv2d(out_ch, 1, (k[0], k[0]), rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        spec = stft(x, self.n_fft, self.hop, self.normalized)                 # [B, C, T, F] complex
        z = jnp.concatenate([jnp.real(spec), jnp.imag(spec)], axis=1)         # [B, 2C, T, F]
        z = z.transpose(0, 2, 3, 1)                                            # NHWC
        fmaps = []
        for conv in self.convs:
            z = jax.nn.leaky_relu(conv(z), self.slope)
            fmaps.append(z)
        return self.conv_post(z), fmaps


class MultiScaleSTFTDiscriminator(nnx.Module):
    """Sub-discriminators at every (n_fft, hop) of the config; returns lists of logits and feature maps."""

    def __init__(self, cfg: DiscriminatorConfig, channels: int = 1, *, rngs: nnx.Rngs):
        self.discriminators = nnx.List([
            DiscriminatorSTFT(cfg, n, h, channels, rngs=rngs) for n, h in zip(cfg.n_ffts, cfg.hop_lengths)])

    def __call__(self, x: jax.Array) -> tuple[list[jax.Array], list[list[jax.Array]]]:
        if x.ndim != 3:
            raise ValueError(f"the discriminator takes audio [batch, channels, samples], got shape {x.shape}")
        outs = [d(x) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]
