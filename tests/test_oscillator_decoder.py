"""The additive-synthesis decoder (``EncodecConfig.decoder="oscillators"``), against closed forms:
a constant gain on one oscillator is that sinusoid exactly, gains ramp linearly between hop
centres, the noise bands are unit-RMS and stay inside their edges."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.codec import codec_config
from magnet_jax.codec.encodec import Encodec
from magnet_jax.codec import oscillator_decoder as O

SR, HOP = 16000, 320


def test_the_grid_is_quarter_semitones_through_a440():
    f = O.oscillator_frequencies(SR)
    np.testing.assert_allclose(f[1:] / f[:-1], 2 ** (1 / 48), rtol=1e-12)
    assert np.min(np.abs(f - 440.0)) < 1e-9 and f[0] == pytest.approx(41.2034, abs=1e-3)
    assert f[-1] < 0.95 * SR / 2 <= f[-1] * 2 ** (1 / 48)


def test_the_semitone_grid_is_the_equal_tempered_notes_from_e1():
    f = O.oscillator_frequencies(SR, per_semitone=1)
    midi = 69 + 12 * np.log2(f / 440.0)
    np.testing.assert_allclose(midi, np.arange(28, 28 + f.size), atol=1e-9)    # E1, F1, ... every note
    assert f[-1] < 0.95 * SR / 2 <= f[-1] * 2 ** (1 / 12)


def test_a_semitone_codec_synthesises_on_its_own_grid():
    """The decoder reads ``oscillators_per_semitone`` from the codec config: its bases are the
    semitone grid and the noise bands, and one gain on A4 decodes to that sinusoid."""
    cfg = codec_config("encodec_16khz", n_filters=4, dimension=8, lstm=1, n_q=2, bins=16,
                       encoder="spectrogram", decoder="oscillators", oscillators_per_semitone=1)
    decoder = Encodec(cfg, rngs=nnx.Rngs(0)).decoder
    f = O.oscillator_frequencies(SR, per_semitone=1)
    assert decoder.num_bases == f.size + O.NOISE_BANDS
    gains = np.zeros((1, 4, 1, decoder.num_bases), np.float32)
    gains[..., 69 - 28] = 0.5
    y = np.asarray(O.synthesise(jnp.asarray(gains), HOP, SR, decoder.per_semitone))[0, :, 0]
    n = np.arange(4 * HOP)
    np.testing.assert_allclose(y, 0.5 * np.sin(2 * np.pi * 440.0 * n / SR + O.oscillator_phases(f.size)[69 - 28]),
                               atol=2e-5)


def test_a_constant_gain_is_one_exact_sinusoid_even_after_a_minute():
    k, g, frames = 165, 0.7, 3000                  # 440 Hz (MIDI 69 = 28 + 165 / 4), 60 s
    f = O.oscillator_frequencies(SR)
    gains = np.zeros((1, frames, 1, f.size + O.NOISE_BANDS), np.float32)
    gains[..., k] = g
    y = np.asarray(O.synthesise(jnp.asarray(gains), HOP, SR))[0, :, 0]
    n = np.arange(frames * HOP)
    expected = g * np.sin(2 * np.pi * f[k] * n / SR + O.oscillator_phases(f.size)[k])
    np.testing.assert_allclose(y, expected, atol=2e-5)


def test_gains_ramp_linearly_between_hop_centres():
    f = O.oscillator_frequencies(SR)
    gains = np.zeros((1, 3, 1, f.size + O.NOISE_BANDS), np.float32)
    gains[0, 1:, 0, 0] = 1.0                        # the lowest oscillator: off, then on
    y = np.asarray(O.synthesise(jnp.asarray(gains), HOP, SR))[0, :, 0]
    carrier = np.sin(2 * np.pi * f[0] * np.arange(3 * HOP) / SR + O.oscillator_phases(f.size)[0])
    centre = np.arange(3 * HOP) / HOP - 0.5 + 0.5 / HOP          # position in frames of each sample's centre
    envelope = np.clip(centre, 0.0, 1.0)                          # 0 until frame 0's centre, 1 from frame 1's
    np.testing.assert_allclose(y, envelope * carrier, atol=1e-5)


def test_noise_bands_are_unit_rms_and_band_limited():
    bands = np.asarray(O.band_noise(SR))
    assert bands.shape == (int(O.NOISE_PERIOD_S * SR), O.NOISE_BANDS)
    np.testing.assert_allclose(np.sqrt(np.mean(bands ** 2, axis=0)), 1.0, rtol=1e-4)
    edges = O.noise_band_edges(SR)
    freqs = np.fft.rfftfreq(bands.shape[0], 1 / SR)
    power = np.abs(np.fft.rfft(bands, axis=0)) ** 2
    for m in (0, 11, O.NOISE_BANDS - 1):
        inside = (freqs >= edges[m]) & (freqs < edges[m + 1])
        assert power[~inside, m].sum() < 1e-6 * power[inside, m].sum()


@pytest.mark.parametrize("channels", [1, 2])
def test_the_codec_decodes_to_hop_aligned_audio(channels):
    cfg = codec_config("encodec_16khz", channels=channels, n_filters=4, dimension=8, lstm=1, n_q=2, bins=16,
                       encoder="spectrogram", decoder="oscillators")
    model = Encodec(cfg, rngs=nnx.Rngs(0))
    audio = jnp.asarray(np.random.default_rng(0).normal(0, 0.1, (2, channels, 10 * HOP + 7)).astype(np.float32))
    codes = model.encode(audio)
    out = np.asarray(model.decode(codes))
    assert codes.shape == (2, 2, 11) and out.shape == (2, channels, 11 * HOP)
    assert np.all(np.isfinite(out)) and np.abs(out).max() < 1.0     # near silence at initialisation


def test_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder='hifigan'.*oscillators"):
        codec_config("encodec_16khz", decoder="hifigan")
