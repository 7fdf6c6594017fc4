"""Weight-normalised, streamable 1-D convolutions (SEANet / EnCodec building blocks).

Why our own modules instead of ``nnx.Conv`` + ``nnx.WeightNorm``:

- Released EnCodec checkpoints store every conv as ``weight_g`` / ``weight_v`` / ``bias``
  (``torch.nn.utils.weight_norm``). Keeping exactly those parameters, in torch's layout, makes
  the checkpoint mapping 1:1 and lets training update ``g`` and ``v`` like the reference does.
  ``nnx.WeightNorm`` writes the normalised kernel back into the wrapped module and its scales
  are not ``nnx.Param`` (open upstream bugs), so it cannot round-trip those checkpoints.
- The kernel ``w = g * v / ||v||`` (norm over every axis but torch's dim 0) is formed once per
  call, outside any per-frame work, then handed to XLA as an ordinary kernel.
- Activations are channels-last ``[batch, time, channels]`` (``NWC``): XLA's CPU and GPU
  convolution emitters are fastest in that layout, and the RVQ and LSTM want it too.
- Audiocraft's "streamable" padding rules are reproduced exactly (non-causal asymmetric split,
  causal left padding, the extra right padding that makes the last window full, reflect padding
  on inputs shorter than the pad), so codes match the reference for any input length.
- Strided convolutions and transposed convolutions are computed in polyphase form: the time
  axis is folded by the stride into channels, which turns them into dense stride-1 convs with
  ``ceil(kernel / stride)`` taps. That does the same arithmetic as the direct form but avoids
  XLA's slow strided / input-dilated paths (a transposed conv as an input-dilated conv would
  multiply ``stride`` times more zeros than numbers).
"""
from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.modules.layers import host_random

PadMode = Literal["constant", "reflect"]
Norm = Literal["weight_norm", "none"]
NORMS = ("weight_norm", "none")
PAD_MODES = ("constant", "reflect")
_DIMENSION_NUMBERS = ("NWC", "WIO", "NWC")
_NARROW_TAPS = 32  # kernel width x output channels up to which narrow_conv beats XLA's conv


def _param(value: jax.Array, names: tuple[str | None, ...]) -> nnx.Param:
    """A parameter carrying logical axis names (resolved by magnet_jax.train.sharding)."""
    return nnx.Param(value, out_sharding=names, eager_sharding=False)


def _uniform(rngs: nnx.Rngs, shape: tuple[int, ...], bound: float) -> jax.Array:
    return host_random(rngs, lambda g: g.uniform(-bound, bound, shape).astype(np.float32),
                       lambda key: jax.random.uniform(key, shape, jnp.float32, -bound, bound))


def _row_norm(weight) -> jax.Array:
    """||w|| over every axis but 0 (weight norm's g at init), on the host when w is numpy."""
    xp = np if isinstance(weight, np.ndarray) else jnp
    return xp.sqrt(xp.sum(xp.square(weight), axis=tuple(range(1, weight.ndim)), keepdims=True))


def _check_options(norm: str, pad_mode: str | None = None) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not supported; use one of {NORMS} "
                         f"(the released EnCodec models use 'weight_norm')")
    if pad_mode is not None and pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode={pad_mode!r} is not supported; use one of {PAD_MODES}")


def weight_norm_kernel(weight_g: jax.Array, weight_v: jax.Array) -> jax.Array:
    """``g * v / ||v||`` with the norm over every axis except 0, as torch.nn.utils.weight_norm."""
    norm = jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=tuple(range(1, weight_v.ndim)), keepdims=True))
    return weight_g * (weight_v / norm)


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last window full (audiocraft ``get_extra_padding_for_conv1d``)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: jax.Array, left: int, right: int, mode: PadMode) -> jax.Array:
    """Pad the time axis (1) of ``[B, T, C]``; reflect on short inputs zero-extends first, as audiocraft."""
    if left < 0 or right < 0:
        raise ValueError(f"negative padding ({left}, {right})")
    if mode == "constant":
        return jnp.pad(x, ((0, 0), (left, right), (0, 0)))
    length = x.shape[1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
    padded = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="reflect")
    return padded[:, :padded.shape[1] - extra]


def _conv(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
    """VALID stride-1 convolution of ``[B, T, I]`` with a ``[W, I, O]`` kernel."""
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(1,), padding="VALID",
                                        rhs_dilation=(dilation,), dimension_numbers=_DIMENSION_NUMBERS)


def narrow_conv(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
    """VALID stride-1 conv for very few outputs (e.g. the decoder's last conv to 1 channel).

    One matmul projects every input frame onto all ``K * O`` taps, then the ``K`` shifted tap
    columns are summed: one pass over the (large) input instead of a conv kernel that cannot
    vectorise over a single output channel.
    """
    width, in_ch, out_ch = kernel.shape
    batch, length, _ = x.shape
    n_out = length - (width - 1) * dilation
    taps = x @ kernel.transpose(1, 0, 2).reshape(in_ch, width * out_ch)
    taps = taps.reshape(batch, length, width, out_ch)
    return sum(taps[:, j * dilation:j * dilation + n_out, j] for j in range(width))


def strided_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """VALID conv with ``stride``, in polyphase form: fold time by the stride into channels.

    ``y[t] = sum_k x[t*s + k] w[k]``; writing ``k = j*s + r`` this is a stride-1 conv with
    ``ceil(K/s)`` taps over the folded signal ``x'[n, (r, c)] = x[n*s + r, c]``.
    """
    if stride == 1:
        return _conv(x, kernel)
    width, in_ch, out_ch = kernel.shape
    batch, length, _ = x.shape
    taps = -(-width // stride)
    n_out = (length - width) // stride + 1
    n_blocks = n_out + taps - 1
    need = n_blocks * stride
    x = jnp.pad(x, ((0, 0), (0, max(need - length, 0)), (0, 0)))[:, :need]
    x = x.reshape(batch, n_blocks, stride * in_ch)
    kernel = jnp.pad(kernel, ((0, taps * stride - width), (0, 0), (0, 0)))
    kernel = kernel.reshape(taps, stride * in_ch, out_ch)
    return _conv(x, kernel)


def transposed_conv(x: jax.Array, weight: jax.Array, stride: int) -> jax.Array:
    """torch ConvTranspose1d (no padding, no bias) on ``[B, T, I]`` with torch weight ``[I, O, K]``.

    Output length ``(T-1)*s + K``. Polyphase: ``y[t*s + r] = sum_j x[t-j] w[:, :, j*s + r]``, one
    stride-1 conv with ``ceil(K/s)`` taps producing ``s*O`` channels, then interleaved in time.
    """
    in_ch, out_ch, width = weight.shape
    batch, length, _ = x.shape
    taps = -(-width // stride)
    weight = jnp.pad(weight, ((0, 0), (0, 0), (0, taps * stride - width)))
    kernel = weight.reshape(in_ch, out_ch, taps, stride)[:, :, ::-1, :]        # [I, O, j', r]
    kernel = kernel.transpose(2, 0, 3, 1).reshape(taps, in_ch, stride * out_ch)  # [j', I, (r, O)]
    x = jnp.pad(x, ((0, 0), (taps - 1, taps - 1), (0, 0)))
    y = _conv(x, kernel).reshape(batch, (length + taps - 1) * stride, out_ch)
    return y[:, :(length - 1) * stride + width]


class _TorchConvWeights(nnx.Module):
    """Weight (plain or weight-normed) and bias of a torch conv, in torch's layout and names.

    ``weight_g``/``weight_v`` (weight norm: w = g * v / ||v||, norm over every axis but 0) or
    ``weight``; for a Conv1d axis 0 is the output channel, for a ConvTranspose1d the input one.
    """
    norm: str

    def _init_weights(self, shape: tuple[int, int, int], out_channels: int, bound: float,
                      rngs: nnx.Rngs) -> None:
        weight = _uniform(rngs, shape, bound)   # torch's default init: U(-1/sqrt(fan_in), ..)
        names = ("channels", None, None)
        if self.norm == "weight_norm":
            self.weight_g = _param(_row_norm(weight), names)
            self.weight_v = _param(weight, names)
        else:
            self.weight = _param(weight, names)
        self.bias = _param(_uniform(rngs, (out_channels,), bound), ("channels",))

    def torch_weight(self) -> jax.Array:
        """The effective kernel in torch layout."""
        if self.norm == "weight_norm":
            return weight_norm_kernel(self.weight_g[...], self.weight_v[...])
        return self.weight[...]


class StreamableConv1d(_TorchConvWeights):
    """Conv1d with audiocraft's streamable padding and optional weight norm, on ``[B, T, C]``.

    Parameters keep torch names and layouts: ``weight_g [O, 1, 1]``, ``weight_v [O, I, K]``
    (or ``weight [O, I, K]`` with ``norm='none'``) and ``bias [O]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, causal: bool = False, pad_mode: PadMode = "reflect",
                 norm: Norm = "weight_norm", rngs: nnx.Rngs):
        _check_options(norm, pad_mode)
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.causal, self.pad_mode, self.norm = causal, pad_mode, norm
        self._init_weights((out_channels, in_channels, kernel_size), out_channels,
                           1.0 / math.sqrt(in_channels * kernel_size), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        effective = (self.kernel_size - 1) * self.dilation + 1
        padding_total = effective - self.stride
        extra = extra_padding_for_conv1d(x.shape[1], effective, self.stride, padding_total)
        if self.causal:
            left, right = padding_total, extra
        else:
            left, right = padding_total - padding_total // 2, padding_total // 2 + extra
        x = pad1d(x, left, right, self.pad_mode)
        kernel = self.torch_weight().transpose(2, 1, 0).astype(x.dtype)  # [K, I, O]
        if self.dilation > 1 and self.stride > 1:
            raise ValueError("StreamableConv1d: stride > 1 together with dilation > 1 is not supported")
        if self.stride == 1 and kernel.shape[0] * kernel.shape[2] <= _NARROW_TAPS:
            y = narrow_conv(x, kernel, self.dilation)
        elif self.dilation > 1:
            y = _conv(x, kernel, self.dilation)
        else:
            y = strided_conv(x, kernel, self.stride)
        return y + self.bias[...].astype(x.dtype)


class StreamableConvTranspose1d(_TorchConvWeights):
    """ConvTranspose1d that trims audiocraft's fixed padding, with optional weight norm, on ``[B, T, C]``.

    Parameters in torch layout: ``weight_g [I, 1, 1]``, ``weight_v [I, O, K]`` (for a transposed
    conv torch's dim 0 is the input channel) and ``bias [O]``. Output length is ``T * stride``
    when ``K = 2 * stride`` (every SEANet decoder layer).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 causal: bool = False, norm: Norm = "weight_norm", trim_right_ratio: float = 1.0,
                 rngs: nnx.Rngs):
        _check_options(norm)
        if not (causal or trim_right_ratio == 1.0):
            raise ValueError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ValueError(f"trim_right_ratio={trim_right_ratio} must be within [0, 1]")
        self.kernel_size, self.stride, self.causal = kernel_size, stride, causal
        self.norm, self.trim_right_ratio = norm, trim_right_ratio
        self._init_weights((in_channels, out_channels, kernel_size), out_channels,
                           1.0 / math.sqrt(out_channels * kernel_size), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = transposed_conv(x, self.torch_weight().astype(x.dtype), self.stride)
        padding_total = self.kernel_size - self.stride
        if self.causal:
            right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            right = padding_total // 2
        left = padding_total - right
        y = y[:, left:y.shape[1] - right]
        return y + self.bias[...].astype(x.dtype)
