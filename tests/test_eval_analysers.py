"""The analysers on freshly rendered real synthetic clips reach their stated accuracy.

Clips: seed 4242 (the calibration uses 20251, the docstrings' measurement 9001, the corpus 0 and
1), 36 clips of 5 / 7.5 / 10 s, rendered at 16 kHz and 32 kHz alternately (the analysers resample).
Thresholds sit below the accuracy measured on 120 clips of seed 9001 (in each analyser's
docstring; `python -m magnet_jax.eval.calibrate --measure`), allowing for a 36-clip sample, and
far above chance (instrument 20 %, key 4 %, mode 50 %, pattern 33 %, drums 50 %).
"""
from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import synth
from magnet_jax.eval import analysers as A
from magnet_jax.eval import calibrate

SEED = 4242
CLIPS = 36
# measured on seed 9001 (120 clips) -> asserted here on seed 4242 (36 clips)
THRESHOLDS = {"instrument": 0.9, "pattern": 0.88, "drums": 0.95, "key": 0.75, "tonic": 0.85, "mode": 0.8,
              "tempo": 0.8, "tempo_octave": 0.9}


@pytest.fixture(scope="module")
def clips():
    out = []
    for i in range(CLIPS):
        sr = (16000, 32000)[i % 2]
        attrs, audio, _, _ = synth.make_clip(SEED, i, calibrate.DURATIONS[i % 3], sr)
        out.append((attrs, A.analyse(audio, sr)))
    return out


def test_each_analyser_reaches_its_stated_accuracy(clips):
    got = {"instrument": [a.instrument == r.instrument for a, r in clips],
           "pattern": [a.pattern == r.pattern for a, r in clips],
           "drums": [a.drums == r.drums for a, r in clips],
           "key": [a.key == r.key for a, r in clips],
           "tonic": [a.tonic == r.tonic for a, r in clips],
           "mode": [a.mode == r.mode for a, r in clips],
           "tempo": [A.tempo_matches(r.bpm, a.bpm) for a, r in clips],
           "tempo_octave": [A.tempo_matches(r.bpm, a.bpm, octave=True) for a, r in clips]}
    acc = {k: float(np.mean(v)) for k, v in got.items()}
    print({k: round(v, 3) for k, v in acc.items()})
    assert all(acc[k] >= THRESHOLDS[k] for k in THRESHOLDS), (acc, THRESHOLDS)


def test_music_likeness_separates_real_clips_from_noise(clips):
    salience = [r.pitch_salience for _, r in clips]
    flatness = [r.spectral_flatness for _, r in clips]
    noise = A.analyse(np.random.default_rng(0).uniform(-0.5, 0.5, 80000).astype(np.float32), 16000)
    assert noise.pitch_salience < min(salience) and noise.spectral_flatness > max(flatness)
    assert 0.09 < noise.pitch_salience < 0.2 and noise.spectral_flatness > 0.3     # near 1/12 and near 1


def test_periodicity_of_an_exactly_periodic_envelope_is_its_closed_form():
    """A zero-mean pattern of P frames repeated over N frames: (N - P) / N at lag P, the largest."""
    pattern = np.random.default_rng(0).normal(size=25)
    envelope = np.tile(pattern - pattern.mean(), 12)                   # N = 300, P = 25 (150 BPM at 62.5 fps)
    assert A.periodicity(envelope, 62.5) == pytest.approx(275 / 300, abs=1e-12)
    assert A.periodicity(np.ones(300), 62.5) == 0.0                     # no onsets, no beat
    assert A.periodicity(envelope[:20], 62.5) == 0.0                    # shorter than one 180-BPM beat
    assert A.periodicity(envelope, 62.5, bpm_range=(60.0, 100.0)) == pytest.approx(250 / 300, abs=1e-12)  # lag 2P


def _clicks(times: np.ndarray, sr: int = 16000) -> np.ndarray:
    y = np.zeros(5 * sr, np.float32)
    burst = (np.random.default_rng(0).uniform(-1, 1, 800) * np.exp(-np.arange(800) / 150)).astype(np.float32)
    for t in times:
        i = int(t * sr)
        y[i:i + 800] += burst[:len(y[i:i + 800])]
    return y


def test_beat_steadiness_tells_a_beat_from_scattered_onsets(clips):
    steady = A.analyse(_clicks(np.arange(0, 5, 0.5)), 16000).beat_steadiness        # 120 BPM
    scattered = A.analyse(_clicks(np.sort(np.random.default_rng(1).uniform(0, 4.9, 10))), 16000).beat_steadiness
    real = [r.beat_steadiness for _, r in clips]
    assert steady > 0.7 and scattered < 0.3 and np.mean(real) > 0.6, (steady, scattered, np.mean(real))


def test_calibration_table_is_reproduced_by_this_code():
    """calibration.json's recorded clips, rendered and featurized now, give its stored features."""
    cal = A.load_calibration()
    assert cal["seed"] == calibrate.CALIBRATION_SEED and cal["seed"] not in (0, 1, SEED, calibrate.MEASURE_SEED)
    assert cal["clips"] == calibrate.CALIBRATION_CLIPS and cal["sample_rate"] == A.ANALYSIS_RATE
    assert set(cal["models"]) == {"instrument", "drums", *(f"pattern/{i}" for i in synth.INSTRUMENTS)}
    for index, stored in zip(cal["check_rows"]["indices"], cal["check_rows"]["features"]):
        _, audio = calibrate.render(cal["seed"], index)
        now = A.clip_features(audio)
        assert now.keys() == stored.keys()
        np.testing.assert_allclose([now[k] for k in stored], list(stored.values()), rtol=1e-4, atol=1e-6)


def test_lda_fit_recovers_separable_classes_and_round_trips_json():
    rng = np.random.default_rng(0)
    rows = [{"a": float(x), "b": float(y)} for x, y in rng.standard_normal((200, 2))]
    labels = ["hi" if r["a"] + 0.5 * r["b"] > 0 else "lo" for r in rows]
    model = A.LinearDiscriminant.fit(rows, labels, ["a", "b"], shrinkage=0.0)
    assert np.mean(np.array(model.predict(rows)) == np.array(labels)) > 0.95
    assert A.LinearDiscriminant.from_json(model.to_json()) == model


def test_default_key_estimator_is_krumhansl_kessler_as_the_codec_evaluation_used_it():
    """estimate_key without profiles = the codec evaluation's estimator, recomputed here directly."""
    import librosa
    from magnet_jax.codec.training import evaluate
    assert evaluate.estimate_key is A.estimate_key and evaluate.chroma_cosine is A.chroma_cosine
    _, y, _, _ = synth.make_clip(SEED, 0, 5.0, 16000)
    chroma = librosa.feature.chroma_cqt(y=y, sr=16000, bins_per_octave=36).mean(axis=1)
    scored = [(np.corrcoef(chroma, np.roll(prof, t))[0, 1], f"{synth.PITCH_CLASSES[t]} {mode}")
              for mode, prof in (("major", A.MAJOR), ("minor", A.MINOR)) for t in range(12)]
    assert A.estimate_key(y, 16000) == max(scored)[1]


def test_silence_and_stereo_are_handled():
    silent = A.analyse(np.zeros(16000, np.float32), 16000)
    assert silent.instrument in synth.INSTRUMENTS and silent.pattern in synth.PATTERNS
    _, y, _, _ = synth.make_clip(SEED, 1, 5.0, 16000)
    assert A.analyse(np.stack([y, y]), 16000) == A.analyse(y, 16000)
    with pytest.raises(ValueError, match="samples > 0"):
        A.analyse(np.zeros((1, 0), np.float32), 16000)
