"""Audio decoding, conversion, loudness and the rejects of data_pipelines.audio.

Facts checked are independent of the code: BS.1770's published 48 kHz filter coefficients and
its -3.01 LKFS reference tone, sample counts computed by hand, and a folder of deliberately
broken files whose failure is known by construction.
"""
import numpy as np
import pytest
import soundfile as sf

from data_pipelines import audio, loudness
from data_pipelines.rejects import Rejected

SR = 16000


def _tone(seconds, sr=SR, freq=440.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_k_weighting_matches_bs1770_48k_coefficients():
    (b1, a1), (b2, a2) = loudness.k_weighting_filters(48000)
    # ITU-R BS.1770-4, tables 1 and 2
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0], atol=1e-8)
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("sr,tol", [(48000, 0.01), (32000, 0.05), (16000, 0.05)])
def test_reference_tone_is_minus_3_01_lkfs(sr, tol):
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS
    t = np.arange(sr * 3) / sr
    assert abs(loudness.integrated_loudness(np.sin(2 * np.pi * 997 * t)[None], sr) + 3.01) < tol


def test_normalize_loudness_reaches_target_and_spares_silence():
    wav = _tone(3.0, amp=0.05)[None]
    out = loudness.normalize_loudness(wav, SR, headroom_db=14.0)
    assert abs(loudness.integrated_loudness(out, SR) + 14.0) < 0.05
    quiet = np.full((1, SR), 1e-4, np.float32)          # RMS below audiocraft's energy floor
    assert loudness.normalize_loudness(quiet, SR) is quiet


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_decodes_every_supported_format(tmp_path, fmt, ext):
    x = _tone(1.0, sr=22050)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 22050, format=fmt)
    settings = audio.AudioSettings(sample_rate=SR, channels=1, segment_duration=1.0)
    wav = audio.load_clip(path, settings)
    assert wav.shape[0] == 1 and abs(wav.shape[1] - SR) <= 2     # resampled to 16 kHz
    # a lossy codec still keeps the tone's level
    assert abs(np.sqrt(np.mean(wav ** 2)) - 0.5 / np.sqrt(2)) < 0.05


def test_window_stereo_downmix_and_resample(tmp_path):
    left, right = _tone(4.0, sr=8000, amp=0.4), np.zeros(32000, np.float32)
    left[: 8000] = 0                                        # silence in the first second
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 8000, subtype="FLOAT")
    settings = audio.AudioSettings(sample_rate=SR, channels=1, segment_duration=1.0)
    wav = audio.load_clip(path, settings, start_s=1.0, end_s=3.5)
    assert wav.shape == (1, int(2.5 * SR))
    # mean of the channels: half the left channel's amplitude
    assert abs(np.max(np.abs(wav[:, 100:-100])) - 0.2) < 0.01
    stereo = audio.convert_channels(wav, 2)
    assert stereo.shape == (2, wav.shape[1]) and np.array_equal(stereo[0], stereo[1])


def test_cut_segments_keeps_tails_per_min_segment_ratio():
    settings = audio.AudioSettings(sample_rate=100, channels=1, segment_duration=1.0,
                                   min_segment_ratio=0.5)
    segs, tail = audio.cut_segments(np.ones((1, 240), np.float32), settings, start_s=2.0)
    assert [s.wav.shape[1] for s in segs] == [100, 100] and tail == pytest.approx(0.4)
    assert [s.offset_s for s in segs] == [2.0, 3.0]
    segs, tail = audio.cut_segments(np.ones((1, 250), np.float32), settings)
    assert [s.wav.shape[1] for s in segs] == [100, 100, 50] and tail == 0
    assert np.array_equal(np.concatenate([s.wav for s in segs], 1), np.ones((1, 250)))


def _broken_corpus(tmp_path):
    """Files whose failure is known by construction -> expected reason (None: must load)."""
    d = tmp_path / "broken"
    d.mkdir()
    good = _tone(2.0)
    sf.write(d / "good.wav", good, SR)
    sf.write(d / "good.flac", good, SR)
    full = d / "full.wav"
    sf.write(full, good, SR)
    data = full.read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])
    full.unlink()
    (d / "zero.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is a text file renamed to .wav\n")
    nan = good.copy()
    nan[100:110] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(d / "stereo8k.wav", np.stack([_tone(2.0, sr=8000), _tone(2.0, sr=8000, freq=300)], 1), 8000)
    sf.write(d / "short.wav", _tone(0.001), SR)                 # 1 ms
    sf.write(d / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    return d, {"good.wav": None, "good.flac": None, "stereo8k.wav": None, "truncated.wav": "truncated",
               "zero.wav": "empty", "text.wav": "unreadable", "nan.wav": "non_finite",
               "short.wav": "too_short", "silent.wav": "silent", "missing.wav": "missing"}


def test_broken_files_are_rejected_with_their_reason(tmp_path):
    d, expected = _broken_corpus(tmp_path)
    settings = audio.AudioSettings(sample_rate=SR, channels=1, segment_duration=1.0)
    for name, reason in expected.items():
        if reason is None:
            wav = audio.load_clip(d / name, settings)
            assert wav.shape == (1, 2 * SR), name
            continue
        with pytest.raises(Rejected) as err:
            audio.load_clip(d / name, settings)
        assert err.value.reason == reason, (name, err.value)
        assert err.value.detail, name
