"""Fit the analysers' classifiers on rendered synthetic clips, or measure every analyser's accuracy.

    python -m magnet_jax.eval.calibrate                 # writes magnet_jax/eval/calibration.json
    python -m magnet_jax.eval.calibrate --measure       # accuracy table on a disjoint seed (JSON)

Why a stored table rather than fitting on first use: fitting needs a few hundred rendered clips
(minutes of librosa features), which every ``magnet-jax eval`` and every test run would pay again.
The fit is deterministic (clip i of a seed depends only on (seed, i); LDA is closed form), and
calibration.json records the seed, clip count, durations and the first clips' features, so
``tests/test_eval_analysers.py`` checks that this code reproduces the table's inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from magnet_jax.eval import analysers as A
from magnet_jax.cli import seed_value

# clip seeds: 0 and 1 are the corpus's defaults (configs/*.py); the calibration seed is disjoint
# from them, the measurement seed from all three, and the tests use a fifth one.
CALIBRATION_SEED = 20251
MEASURE_SEED = 9001
CALIBRATION_CLIPS = 450
DURATIONS = (5.0, 7.5, 10.0)
CHECK_ROWS = 4
INSTRUMENT_FEATURES = ("mfcc", "contrast", "log_flatness", "log_centroid", "centroid_cv")   # name prefixes
PATTERN_FEATURES = ("struck_median", "struck_mean", "struck_q75", "log_onset_rate", "log_onsets_per_beat",
                    "ioi_cv", "classes_above_half", "classes_above_0.3", "chroma_entropy",
                    "chroma_flux_mean", "chroma_flux_q90")
DRUM_FEATURES = ("log_sub58_fraction", "log_percussive_high")   # not sub58_cv: see analysers.drum_features
# covariance shrinkage towards the identity; the per-instrument pattern fits see 1/5 of the clips
# and 11 features, the others all clips; chosen on the calibration clips alone (5-fold).
SHRINKAGE = {"instrument": 0.1, "drums": 0.1, "pattern": 0.05}


def render(seed: int, index: int) -> tuple:
    """(attributes, mono float32 audio at ANALYSIS_RATE) of clip ``index`` of ``seed``; the
    duration cycles through ``DURATIONS`` so the fit covers short and long clips."""
    from data_pipelines import synth
    attrs, audio, _, _ = synth.make_clip(seed, index, DURATIONS[index % len(DURATIONS)], A.ANALYSIS_RATE)
    return attrs, audio


def label(attrs, name: str) -> str:
    return str(getattr(attrs, name))


def featurize(seed: int, clips: int, progress: bool = True) -> tuple[list, list[np.ndarray], list[dict]]:
    """Render clips 0..clips-1 of ``seed``; returns their attributes, audio and features."""
    attrs, audio, feats = [], [], []
    for i in tqdm(range(clips), desc=f"features (seed {seed})", unit="clip", disable=not progress):
        a, y = render(seed, i)
        attrs.append(a)
        audio.append(y)
        feats.append(A.clip_features(y))
    return attrs, audio, feats


def fit(attrs: Sequence, feats: Sequence[dict]) -> dict[str, A.LinearDiscriminant]:
    """The discriminants: 'instrument', 'drums', and 'pattern/<instrument>' for each instrument
    (fitted on that instrument's clips; see ``analysers.classify``)."""
    from data_pipelines import synth
    inst = [n for n in feats[0] if n.startswith(INSTRUMENT_FEATURES)]
    models = {"instrument": A.LinearDiscriminant.fit(feats, [a.instrument for a in attrs], inst,
                                                     SHRINKAGE["instrument"]),
              "drums": A.LinearDiscriminant.fit(feats, [label(a, "drums") for a in attrs], DRUM_FEATURES,
                                                SHRINKAGE["drums"])}
    for instrument in synth.INSTRUMENTS:
        rows = [(f, a.pattern) for f, a in zip(feats, attrs) if a.instrument == instrument]
        models[f"pattern/{instrument}"] = A.LinearDiscriminant.fit(
            [f for f, _ in rows], [p for _, p in rows], PATTERN_FEATURES, SHRINKAGE["pattern"])
    return models


def fit_key_profiles(attrs: Sequence, feats: Sequence[dict]) -> dict[str, list[float]]:
    """Per mode, the mean of the clips' CQT chroma (each normalised to sum 1), rotated to C."""
    profiles = {}
    for mode in ("major", "minor"):
        rows = [np.roll(A.chroma_of(f) / max(A.chroma_of(f).sum(), A.EPS), -A.PITCH_CLASSES.index(a.tonic))
                for f, a in zip(feats, attrs) if a.mode == mode]
        profiles[mode] = np.mean(rows, axis=0).tolist()
    return profiles


def write_calibration(out: Path, seed: int, clips: int, progress: bool = True) -> dict:
    """Render, featurize, fit, and write calibration.json (with the fit's own accuracy)."""
    attrs, _, feats = featurize(seed, clips, progress)
    data = {"about": "written by `python -m magnet_jax.eval.calibrate`; see magnet_jax/eval/analysers.py",
            "seed": seed, "clips": clips, "durations": list(DURATIONS), "sample_rate": A.ANALYSIS_RATE,
            "shrinkage": SHRINKAGE, "key_profiles": fit_key_profiles(attrs, feats),
            "models": {name: m.to_json() for name, m in fit(attrs, feats).items()},
            "check_rows": {"indices": list(range(CHECK_ROWS)), "features": feats[:CHECK_ROWS]}}
    out.write_text(json.dumps(data, indent=1) + "\n")
    A.load_calibration.cache_clear()
    data["train_accuracy"] = score(attrs, feats, A.load_calibration(str(out)))
    return data


def score(attrs: Sequence, feats: Sequence[dict], calibration: dict | None = None) -> dict:
    """Accuracy of every analyser against the clips' labels (and the music-likeness ranges)."""
    found = A.analyse_features(feats, calibration)
    acc = {name: float(np.mean([getattr(f, name) == getattr(a, name) for f, a in zip(found, attrs)]))
           for name in ("instrument", "pattern", "drums", "key", "tonic", "mode")}
    acc["tempo"] = float(np.mean([A.tempo_matches(f.bpm, a.bpm) for f, a in zip(found, attrs)]))
    acc["tempo_octave"] = float(np.mean([A.tempo_matches(f.bpm, a.bpm, octave=True) for f, a in zip(found, attrs)]))
    kk = [A.key_scores(A.chroma_of(f))[0][1] for f in feats]
    acc["key_krumhansl"] = float(np.mean([k == a.key for k, a in zip(kk, attrs)]))
    acc["mode_krumhansl"] = float(np.mean([k.split()[1] == a.mode for k, a in zip(kk, attrs)]))
    for name in A.MUSIC_MEASURES:
        values = [f[name] for f in feats]
        acc[f"{name}_range"] = [float(min(values)), float(max(values))]
    return acc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", action="store_true", help="measure accuracy instead of fitting")
    p.add_argument("--seed", type=seed_value, default=None)
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--out", type=Path, default=A.CALIBRATION_FILE)
    args = p.parse_args(argv)
    if args.measure:
        seed, clips = args.seed if args.seed is not None else MEASURE_SEED, args.clips or 120
        attrs, _, feats = featurize(seed, clips)
        print(json.dumps({"seed": seed, "clips": clips, "accuracy": score(attrs, feats)}, indent=1))
        return 0
    data = write_calibration(args.out, args.seed if args.seed is not None else CALIBRATION_SEED,
                             args.clips or CALIBRATION_CLIPS)
    print(json.dumps({"out": str(args.out), "train_accuracy": data["train_accuracy"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
