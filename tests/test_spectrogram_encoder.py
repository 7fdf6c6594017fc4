"""The phase-blind codec encoder (``EncodecConfig.encoder="spectrogram"``), against closed forms.

A sine on an FFT bin's frequency under a periodic Hann window has an exactly known spectrum: the
window's DFT is non-zero only at bins 0 and +-1 (n/2 and -n/4), so bin k holds ``A * n_fft / 4``
and bins k +- 1 hold ``A * n_fft / 8`` whatever the sine's phase, and the mirror image at -k adds
nothing at k >= 2. Every other bin is the floor.
"""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.codec import codec_config
from magnet_jax.codec.encodec import Encodec
from magnet_jax.codec.spectrogram_encoder import MAGNITUDE_FLOOR, SpectrogramEncoder, log_magnitudes

HOP, N_FFT, SR = 40, 160, 8000


def on_bin_sine(k: int, phase: float, n: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(n)
    return (amplitude * np.sin(2 * np.pi * k * t / N_FFT + phase)).astype(np.float32)


@pytest.mark.parametrize("phase", [0.0, 1.1, np.pi / 2])
def test_log_magnitudes_of_an_on_bin_sine_match_the_closed_form(phase):
    k, a, n = 7, 0.5, 40 * HOP
    logmag = np.asarray(log_magnitudes(jnp.asarray(on_bin_sine(k, phase, n, a))[None, :, None], HOP, N_FFT))[0]
    interior = logmag[3:-3]                  # frames whose whole window lies inside the clip
    expected = np.full(N_FFT // 2 + 1, np.log(MAGNITUDE_FLOOR))
    expected[k] = np.log(a * N_FFT / 4 + MAGNITUDE_FLOOR)
    expected[[k - 1, k + 1]] = np.log(a * N_FFT / 8 + MAGNITUDE_FLOOR)
    np.testing.assert_allclose(interior, np.broadcast_to(expected, interior.shape), atol=2e-3)


def test_frames_count_and_centre_like_seanets_strided_convs():
    n = 16 * HOP + 3                          # not a multiple of the hop: ceil(N / hop) frames
    for s in (0, 5 * HOP + HOP // 2, n - 1):
        x = np.zeros(n, np.float32)
        x[s] = 1.0
        logmag = np.asarray(log_magnitudes(jnp.asarray(x)[None, :, None], HOP, N_FFT))[0]
        assert logmag.shape == (17, N_FFT // 2 + 1)
        assert int(np.argmax(logmag.sum(-1))) == min(s // HOP, 16)


def test_the_encoder_gives_one_latent_to_a_held_note_whatever_its_phase():
    cfg = codec_config("encodec_16khz", sample_rate=SR, n_filters=4, dimension=8, ratios=(5, 8), lstm=0,
                       n_q=2, bins=16, encoder="spectrogram")
    model = Encodec(cfg, rngs=nnx.Rngs(0))
    assert isinstance(model.encoder, SpectrogramEncoder) and model.hop_length == HOP
    clips = jnp.asarray(np.stack([on_bin_sine(9, p, 40 * HOP) for p in (0.0, 2.0)]))[:, None]
    latent = np.asarray(model.encode_latent(clips))
    # beyond the long window's reach into the clip edge (8 frames) plus the convs' (1 + 1 + 2 + 3)
    inner = slice(15, -15)
    np.testing.assert_allclose(latent[0, inner], latent[1, inner], rtol=1e-4, atol=1e-4)
    codes = np.asarray(model.encode(clips))
    assert codes.shape == (2, 2, 40)
    np.testing.assert_array_equal(codes[0, :, inner], codes[1, :, inner])
    audio = np.asarray(model.decode(jnp.asarray(codes)))
    assert audio.shape == (2, 1, 40 * HOP) and np.all(np.isfinite(audio))


def test_the_seanet_encoder_does_see_phase():
    """The contrast that motivates the option: the waveform encoder's latents differ with phase."""
    cfg = codec_config("encodec_16khz", sample_rate=SR, n_filters=4, dimension=8, ratios=(5, 8), lstm=0,
                       n_q=2, bins=16)
    model = Encodec(cfg, rngs=nnx.Rngs(0))
    clips = jnp.asarray(np.stack([on_bin_sine(9, p, 30 * HOP) for p in (0.0, 2.0)]))[:, None]
    latent = np.asarray(model.encode_latent(clips))
    assert np.abs(latent[0, 5:-5] - latent[1, 5:-5]).max() > 1e-2


def test_an_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="encoder='mel'.*seanet"):
        codec_config("encodec_16khz", encoder="mel")
