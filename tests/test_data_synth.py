"""The synthetic corpus: its labels are honest, its captions state them, its layout is MusicCaps.

Honesty is checked by analysis that knows nothing of the renderer: librosa's tempo estimate and a
Krumhansl-Schmuckler key estimate on librosa's constant-Q chroma, on a sample of clips.
Tolerances, stated: tempo within 4 % of the label on every sampled clip (librosa's tempo grid at
hop 512 and 22.05 kHz is ~1.5 % coarse near 120 BPM); on 10 s clips (the MusicCaps length, long
enough for a whole progression) the tonic exact on every clip, the labelled key among the
estimator's 3 best candidates on every clip, and key and mode exact on at least 70 % of the
sample (parallel-mode confusion is the known failure of profile matching on harmonically rich
timbres, whose 5th harmonic adds a major third; it happens on real recordings too).
"""
import argparse
import csv
import json

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import cli as data_cli
from data_pipelines import synth
from data_pipelines.manifests import read_manifest

# Krumhansl-Kessler probe-tone profiles (Krumhansl 1990), C major / C minor
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _key_candidates(y, sr):
    import librosa

    chroma = librosa.feature.chroma_cqt(y=y, sr=sr, bins_per_octave=36).mean(axis=1)
    scored = [(np.corrcoef(chroma, np.roll(prof, t))[0, 1], f"{synth.PITCH_CLASSES[t]} {mode}")
              for mode, prof in (("major", MAJOR), ("minor", MINOR)) for t in range(12)]
    return [k for _, k in sorted(scored, reverse=True)]


def test_labels_are_recovered_from_the_audio():
    import librosa

    sr, n, exact = 22050, 8, 0
    for i in range(n):
        attrs, y, _, _ = synth.make_clip(seed=7, index=i, duration=10.0, sample_rate=sr)
        tempo = float(np.atleast_1d(librosa.feature.tempo(y=y, sr=sr, start_bpm=110))[0])
        assert abs(tempo / attrs.bpm - 1) < 0.04, (i, attrs, tempo)
        candidates = _key_candidates(y, sr)
        assert candidates[0].split()[0] == attrs.tonic, (i, attrs, candidates[:3])
        assert attrs.key in candidates[:3], (i, attrs, candidates[:3])
        exact += candidates[0] == attrs.key
    assert exact >= 0.7 * n, exact


def test_rendering_is_deterministic_and_dynamics_set_the_peak():
    a1, y1, c1, s1 = synth.make_clip(3, 5, 2.0, 16000)
    a2, y2, c2, s2 = synth.make_clip(3, 5, 2.0, 16000)
    assert a1 == a2 and c1 == c2 and s1 == s2 and np.array_equal(y1, y2)
    assert np.max(np.abs(y1)) == pytest.approx(synth.DYNAMIC_GAIN[a1.dynamics], rel=1e-5)
    assert y1.shape == (32000,) and np.isfinite(y1).all()


def test_every_timbre_pattern_and_drum_setting_renders():
    base = synth.sample_attributes(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for inst in synth.INSTRUMENTS:
        for pattern in synth.PATTERNS:
            attrs = synth.ClipAttributes(**{**base.__dict__, "instrument": inst, "pattern": pattern})
            y = synth.render_clip(attrs, 1.0, 16000, rng)
            assert np.isfinite(y).all() and np.max(np.abs(y)) > 0.1, (inst, pattern)


def test_corpus_is_musiccaps_with_captions_stating_the_labels(tmp_path):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["synth-corpus", "--out", str(tmp_path / "c"), "--clips", "12",
                              "--duration", "1.5", "--sample-rate", "16000", "--no-progress"])
    assert args.func(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "c" / "musiccaps.csv")))
    assert list(rows[0])[:9] == list(synth.CSV_COLUMNS[:9])
    labels = [json.loads(line) for line in open(tmp_path / "c" / "labels.jsonl")]
    templates = set()
    for row, lab in zip(rows, labels):
        assert row["ytid"] == lab["ytid"] and json.loads(row["labels_json"])["bpm"] == lab["bpm"]
        assert str(lab["bpm"]) in row["caption"] and lab["key"] in row["caption"]
        assert lab["instrument"] in row["caption"]
        assert lab["instrument"] in row["aspect_list"] and f"{lab['bpm']} bpm" in row["aspect_list"]
        wav, sr = sf.read(tmp_path / "c" / "audio" / f"{row['ytid']}.wav")
        assert sr == 16000 and wav.shape == (24000,)
        templates.add(row["caption"].split()[0])
    assert len(templates) >= 3                    # captions come from varied templates
    manifest = read_manifest(tmp_path / "c")
    assert manifest.format == "musiccaps" and len(manifest.clips) == 12 and not manifest.rejects
    clip = manifest.clips[0]
    assert clip.bpm == labels[0]["bpm"] and clip.key == labels[0]["key"].lower()
    assert clip.instrument == labels[0]["instrument"] and clip.end_s == 1.5


def test_excluded_combinations_never_appear_and_the_clip_count_is_kept():
    from data_pipelines.synth import INSTRUMENTS, MODES, PATTERNS, combo, make_clip
    # exclude every combination but one: each clip must be redrawn until it has that one
    keep = ("organ", "melody", "minor")
    exclude = frozenset((i, p, m) for i in INSTRUMENTS for p in PATTERNS for m in MODES) - {keep}
    for index in range(3):
        attrs, audio, caption, _ = make_clip(0, index, 0.5, 8000, exclude)
        assert combo(attrs) == keep and "organ" in caption and audio.shape == (4000,)
    unrestricted = [combo(make_clip(0, i, 0.5, 8000)[0]) for i in range(3)]
    assert unrestricted != [keep] * 3     # the exclusion, not the seed, made them all equal


def test_an_exclusion_that_is_not_a_combination_is_refused(tmp_path):
    from data_pipelines.synth import write_corpus
    with pytest.raises(ValueError, match="instrument, pattern, mode"):
        write_corpus(tmp_path, 1, duration=0.5, sample_rate=8000, exclude=frozenset({("kazoo", "melody", "minor")}))


def test_tempi_change_only_the_tempo(tmp_path, capsys):
    """``--tempi``: every BPM comes from the list and every other attribute is the one the
    default corpus draws for that clip (the BPM takes one draw either way), so a tempo ablation
    compares the same clips."""
    from data_pipelines.synth import make_clip
    tempi = (80, 110, 140)
    for index in range(20):
        free, _, _, _ = make_clip(1, index, 0.5, 8000)
        fixed, _, caption, _ = make_clip(1, index, 0.5, 8000, tempi=tempi)
        assert fixed.bpm in tempi and str(fixed.bpm) in caption
        assert {**vars(fixed), "bpm": 0} == {**vars(free), "bpm": 0}
    assert data_cli.main(["synth-corpus", "--out", str(tmp_path / "c"), "--clips", "2", "--duration", "0.5",
                          "--sample-rate", "8000", "--tempi", "90,120", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["tempi"] == [90, 120]
    assert {json.loads(line)["bpm"] for line in open(tmp_path / "c" / "labels.jsonl")} <= {90, 120}
    for bad, message in (("fast", "comma-separated whole BPMs"), ("20,120", "from 40 to 240")):
        assert data_cli.main(["synth-corpus", "--out", str(tmp_path / "d"), "--clips", "1", "--tempi", bad]) == 2
        assert message in capsys.readouterr().err


def test_workers_render_the_same_corpus(tmp_path):
    """Clip i depends only on (seed, i), so rendering in 2 processes writes the same files."""
    one = synth.write_corpus(tmp_path / "one", 5, duration=1.0, sample_rate=8000, seed=3, progress=False)
    two = synth.write_corpus(tmp_path / "two", 5, duration=1.0, sample_rate=8000, seed=3, progress=False,
                             workers=2)
    assert one.read_text() == two.read_text()
    for wav in sorted((one.parent / "audio").glob("*.wav")):
        assert wav.read_bytes() == (two.parent / "audio" / wav.name).read_bytes()
    with pytest.raises(ValueError, match="--workers"):
        synth.write_corpus(tmp_path / "bad", 5, workers=0)
