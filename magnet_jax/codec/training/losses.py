"""EnCodec's training losses as pure JAX functions (audiocraft ``losses/``, ``adversarial/losses.py``).

- ``l1``: mean absolute error on the waveform (``torch.nn.L1Loss``).
- ``multi_scale_mel``: audiocraft ``MultiScaleMelSpectrogramLoss``: for FFT sizes ``2**i``
  (hop ``2**i / 4``) the L1 distance of linear mel spectrograms plus ``alpha_i`` times the MSE
  of log10 mel spectrograms; divided by ``sum(alpha_i + 1)`` when ``normalized``.
- ``log_mel``: DAC's mel reconstruction loss (Kumar et al. 2023, ``descript-audio-codec``
  ``MelSpectrogramLoss`` with its defaults): per window size, the L1 distance of
  ``log10(max(mel magnitude, 1e-5) ** 2)``, summed over the scales. Unlike audiocraft's linear
  mel L1, it weighs a quiet band's error like a loud one's, so a noise floor under the harmonics
  or missing upper partials cost as much as a wrong fundamental.
- ``pitch``: the L1 distance of log magnitudes of a long-window STFT on the bins below
  ``pitch_f_max``, within ``pitch_range_db`` of the loudest: the only loss here that can tell
  neighbouring bass semitones apart.
- ``sisnr``: scale-invariant SNR in dB over the whole signal (higher is better); the loss is its
  negative, as audiocraft's ``SISNR`` module returns.
- adversarial: hinge (``-mean(min(x - 1, 0))`` real / ``-mean(min(-x - 1, 0))`` fake for the
  discriminator, ``-mean(x)`` for the generator) or least squares; feature matching is the mean
  over layers of the L1 distance between feature maps; both averaged over sub-discriminators.
- ``Balancer``: EnCodec's gradient balancer; see :func:`balance`.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.codec.training.config import LossConfig
from magnet_jax.codec.training.spectral import mel_spectrogram, stft


def l1(y: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(y - x))


def multi_scale_mel(y: jax.Array, x: jax.Array, sample_rate: int, cfg: LossConfig) -> jax.Array:
    """The multi-scale mel loss between ``y`` and ``x`` ``[B, C, N]`` (audiocraft's msspec)."""
    loss, total = 0.0, 0.0
    for i in range(cfg.msspec_range_start, cfg.msspec_range_end):
        n_fft = 2 ** i
        hop = int(n_fft / 4)
        alpha = float(np.sqrt(n_fft - 1)) if cfg.msspec_alphas else 1.0
        kw = dict(sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=cfg.msspec_n_mels,
                  f_min=cfg.msspec_f_min, f_max=cfg.msspec_f_max or None, normalized=cfg.msspec_normalized)
        lin_y, lin_x = (mel_spectrogram(s, log=False, **kw) for s in (y, x))
        log_y, log_x = (jnp.log10(1e-5 + s) for s in (lin_y, lin_x))
        loss = loss + jnp.mean(jnp.abs(lin_y - lin_x)) + alpha * jnp.mean(jnp.square(log_y - log_x))
        total += alpha + 1.0
    return loss / total if cfg.msspec_normalized else loss


def log_mel(y: jax.Array, x: jax.Array, sample_rate: int, cfg: LossConfig) -> jax.Array:
    """DAC's multi-scale log-mel L1 between ``y`` and ``x`` ``[B, C, N]``: hop = window / 4, Hann
    window, mel magnitudes (power 1) from 0 Hz to Nyquist, clamped at 1e-5, squared, log10."""
    loss = 0.0
    for window, n_mels in zip(cfg.log_mel_windows, cfg.log_mel_n_mels):
        kw = dict(sample_rate=sample_rate, n_fft=window, hop=window // 4, n_mels=n_mels, log=False, power=1)
        mag_y, mag_x = (mel_spectrogram(s, **kw) for s in (y, x))
        log_y, log_x = (2.0 * jnp.log10(jnp.maximum(m, 1e-5)) for m in (mag_y, mag_x))
        loss = loss + jnp.mean(jnp.abs(log_y - log_x))
    return loss


def pitch(y: jax.Array, x: jax.Array, sample_rate: int, cfg: LossConfig) -> jax.Array:
    """L1 between ``2 * log10`` magnitudes of a long-window STFT (``pitch_window``, hop an eighth)
    on the linear bins from 0 Hz to ``pitch_f_max``, both clamped at ``pitch_range_db`` under the
    loudest bin of the target (per item and channel).

    Why: a bass semitone is 3.9 Hz wide at 65 Hz, and a Hann window of n samples smears a tone
    over +-2 * sample_rate / n Hz: +-7.8 Hz at 4096 samples and 16 kHz. With mel losses of
    windows up to 4096 (and audiocraft's msspec starting at 64 Hz) the oscillator decoder put
    every clip's bass on the same few notes, and the key of its reconstructions agreed with the
    original's 10-14 % of the time. The relative floor makes the loss about the notes: without
    it, the hundreds of near-silent bins between them outweigh a note played a tone too high.
    Only whole frames inside the signal are used (no padding): a window longer than the padded
    edges of a 1 s crop would see their discontinuities as broadband leakage.
    """
    if x.shape[-1] < cfg.pitch_window:
        raise ValueError(f"losses.pitch_window={cfg.pitch_window} is longer than the training crop "
                         f"({x.shape[-1]} samples): lower it or raise data.segment_duration")
    n_bins = int(cfg.pitch_f_max * cfg.pitch_window / sample_rate) + 1
    mag_y, mag_x = (jnp.abs(stft(s, cfg.pitch_window, cfg.pitch_window // 8)[..., :n_bins]) for s in (y, x))
    floor = jax.lax.stop_gradient(jnp.max(mag_x, axis=(-2, -1), keepdims=True)) * 10.0 ** (-cfg.pitch_range_db / 20)
    floor = jnp.maximum(floor, 1e-8)        # a silent target: everything clamps alike
    log_y, log_x = (2.0 * jnp.log10(jnp.maximum(m, floor)) for m in (mag_y, mag_x))
    return jnp.mean(jnp.abs(log_y - log_x))


def sisnr(estimate: jax.Array, reference: jax.Array, eps: float = float(np.finfo(np.float32).eps)) -> jax.Array:
    """SI-SNR in dB per item and channel, ``[B, C, N]`` -> ``[B, C]`` (audiocraft's formula, one segment)."""
    eps = eps * reference.shape[-1]
    ref = reference - jnp.mean(reference, axis=-1, keepdims=True)
    est = estimate - jnp.mean(estimate, axis=-1, keepdims=True)
    dot = jnp.sum(ref * est, axis=-1, keepdims=True)
    proj = dot * ref / (eps + jnp.sum(ref * ref, axis=-1, keepdims=True))
    noise = est - proj
    return 10.0 * (jnp.log10(eps + jnp.sum(proj * proj, axis=-1)) - jnp.log10(eps + jnp.sum(noise * noise, axis=-1)))


# ---------------------------------------------------------------- adversarial

def disc_loss_real(logits: jax.Array, kind: str) -> jax.Array:
    if kind == "hinge":
        return -jnp.mean(jnp.minimum(logits - 1.0, 0.0))
    return jnp.mean(jnp.square(logits - 1.0))


def disc_loss_fake(logits: jax.Array, kind: str) -> jax.Array:
    if kind == "hinge":
        return -jnp.mean(jnp.minimum(-logits - 1.0, 0.0))
    return jnp.mean(jnp.square(logits))


def gen_adv_loss(logits: jax.Array, kind: str) -> jax.Array:
    if kind == "hinge":
        return -jnp.mean(logits)
    return jnp.mean(jnp.square(logits - 1.0))


def discriminator_loss(fake_logits: Sequence[jax.Array], real_logits: Sequence[jax.Array], kind: str) -> jax.Array:
    """audiocraft ``AdversarialLoss.train_adv``'s loss, normalised by the number of sub-discriminators."""
    total = sum(disc_loss_fake(f, kind) + disc_loss_real(r, kind) for f, r in zip(fake_logits, real_logits))
    return total / len(fake_logits)


def generator_adv_loss(fake_logits: Sequence[jax.Array], kind: str) -> jax.Array:
    return sum(gen_adv_loss(f, kind) for f in fake_logits) / len(fake_logits)


def feature_matching(fake_fmaps: Sequence[Sequence[jax.Array]], real_fmaps: Sequence[Sequence[jax.Array]]) -> jax.Array:
    """Mean over sub-discriminators of the mean over layers of L1(fake, real) (audiocraft, normalize=True)."""
    per_disc = [sum(jnp.mean(jnp.abs(f - r)) for f, r in zip(ff, rr)) / len(ff)
                for ff, rr in zip(fake_fmaps, real_fmaps)]
    return sum(per_disc) / len(per_disc)


# ---------------------------------------------------------------- the balancer

class BalancerState(NamedTuple):
    """flashy ``averager(ema_decay)`` state per balanced loss: ``total = total*beta + norm``, ``fix = fix*beta + 1``."""
    total: jax.Array        # [n_losses]
    fix: jax.Array          # [n_losses]


def balancer_init(n_losses: int) -> BalancerState:
    return BalancerState(jnp.zeros([n_losses], jnp.float32), jnp.zeros([n_losses], jnp.float32))


def grad_norms(grads: jax.Array, per_batch_item: bool) -> jax.Array:
    """``[n, B, ...]`` per-loss gradients -> ``[n]`` norms (mean of per-item norms when per_batch_item)."""
    if per_batch_item:
        return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(2, grads.ndim)))), axis=1)
    return jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))


def balance(grads: jax.Array, losses: jax.Array, weights: jax.Array, state: BalancerState, *,
            total_norm: float, ema_decay: float, per_batch_item: bool, epsilon: float = 1e-12
            ) -> tuple[jax.Array, jax.Array, BalancerState, jax.Array]:
    """audiocraft ``Balancer.backward`` on the gradients ``grads [n, ...]`` of ``n`` losses w.r.t. the output.

    Why: the losses have unrelated scales (a hinge loss near 1, a mel loss near 10); scaling each
    gradient by ``weight / sum(weights) * total_norm / ema(||g||)`` makes each weight the share
    of the gradient that loss contributes, whatever its scale. Returns (gradient for the output,
    effective loss ``sum(scale * loss)``, new state, per-loss share of the averaged norms).
    """
    norms = grad_norms(grads, per_batch_item)
    beta = ema_decay or 1.0
    total = state.total * beta + norms
    fix = state.fix * beta + 1.0
    avg = total / fix
    ratios = weights / jnp.sum(weights)
    scales = ratios * total_norm / (epsilon + avg)
    out = jnp.tensordot(scales, grads, axes=1)
    effective = jnp.sum(scales * jax.lax.stop_gradient(losses))
    return out, effective, BalancerState(total, fix), avg / jnp.sum(avg)
