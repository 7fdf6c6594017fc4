"""A synthetic MusicCaps-style corpus: clips rendered from known attributes.

Why: the project needs a music corpus that ships with the code (no downloads are possible
here), and one whose ground truth is known exactly, so that a model trained on it can later be
scored on prompt adherence (did "a sad organ chord progression in D minor at 80 BPM" come out in
D minor at 80 BPM?). Every clip is rendered from a small set of attributes (instrument timbre,
drums, key and mode, tempo, pattern, dynamics); captions and aspect lists are written from
varied templates; the attributes are stored verbatim as labels.

Layout written by :func:`write_corpus` (what ``magnet-jax tokenize`` auto-detects as MusicCaps):

    DIR/musiccaps.csv      ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,
                           author_id,is_balanced_subset,is_audioset_eval,labels_json
    DIR/audio/<ytid>.wav   16-bit PCM, mono
    DIR/labels.jsonl       one line per clip: {"ytid": ..., <attributes>}

Rendering is deterministic: clip i depends only on (seed, i).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import multiprocessing
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm import tqdm

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
INSTRUMENTS = ("sine lead", "square lead", "sawtooth lead", "plucked string", "organ")
PATTERNS = ("arpeggio", "chord progression", "melody")
DYNAMICS = ("soft", "medium", "loud")
MODES = ("major", "minor")
TEMPO_RANGE = (72, 152)          # BPM, inclusive; a beat tracker's comfortable range
TEMPI_LIMITS = (40, 240)         # what write_corpus(tempi=...) accepts
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# chord roots as scale degrees (0-based). Every progression has the tonic chord on half its
# bars and a dominant (V) chord: cadences are what make a key, not just a scale, audible; a
# loop like vi-IV-I-V is heard in the relative key just as often.
PROGRESSIONS = {
    "major": ((0, 3, 4, 0), (0, 5, 4, 0), (0, 4, 0, 3)),
    "minor": ((0, 3, 4, 0), (0, 5, 4, 0), (0, 4, 0, 3)),
}
# the minor dominant takes the raised 7th (harmonic minor): the leading tone separates a minor
# key from its relative major.
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
DYNAMIC_GAIN = {"soft": 0.25, "medium": 0.5, "loud": 0.9}
MUSIC_MID = "/m/04rlf"           # the AudioSet label "Music"
CSV_COLUMNS = ("ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption",
               "author_id", "is_balanced_subset", "is_audioset_eval", "labels_json")


@dataclasses.dataclass(frozen=True)
class ClipAttributes:
    """The ground truth of one synthetic clip (stored as its labels)."""
    instrument: str
    drums: bool
    tonic: str
    mode: str
    bpm: int
    pattern: str
    dynamics: str
    progression: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.tonic} {self.mode}"


def sample_attributes(rng: np.random.Generator, tempi: tuple[int, ...] | None = None) -> ClipAttributes:
    """Draw one clip's attributes uniformly from the listed choices; the BPM from ``TEMPO_RANGE``,
    or from ``tempi`` when given (a corpus of a few well-separated tempi, for ablations on how
    many examples per tempo an LM needs to read the BPM)."""
    mode = MODES[rng.integers(len(MODES))]
    progs = PROGRESSIONS[mode]
    return ClipAttributes(
        instrument=INSTRUMENTS[rng.integers(len(INSTRUMENTS))],
        drums=bool(rng.integers(2)),
        tonic=PITCH_CLASSES[rng.integers(12)],
        mode=mode,
        bpm=(int(rng.integers(TEMPO_RANGE[0], TEMPO_RANGE[1] + 1)) if tempi is None
             else int(tempi[rng.integers(len(tempi))])),
        pattern=PATTERNS[rng.integers(len(PATTERNS))],
        dynamics=DYNAMICS[rng.integers(len(DYNAMICS))],
        progression=tuple(int(d) for d in progs[rng.integers(len(progs))]),
    )


# ---------------------------------------------------------------- note synthesis

def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _additive(freq: float, n: int, sr: int, partials: list[tuple[int, float]]) -> np.ndarray:
    """Sum of harmonics below Nyquist: band-limited, so square/saw do not alias."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for harmonic, amp in partials:
        if harmonic * freq < sr / 2:
            out += amp * np.sin(2 * np.pi * harmonic * freq * t)
    return out


def _pluck(freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string: a noise burst through a damped averaging delay loop."""
    delay = max(2, int(round(sr / freq - 0.5)))     # the 2-tap average adds half a sample
    excitation = np.zeros(n)
    burst = rng.uniform(-1, 1, min(delay, n))
    excitation[: burst.size] = burst - burst.mean()
    # y[t] = x[t] + 0.498 * (y[t-D] + y[t-D-1])
    a = np.zeros(delay + 2)
    a[0], a[delay], a[delay + 1] = 1.0, -0.498, -0.498
    return signal.lfilter([1.0], a, excitation)


def render_note(instrument: str, midi: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``n`` samples with the instrument's timbre and envelope."""
    f = _midi_hz(midi)
    if instrument == "plucked string":
        return _pluck(f, n, sr, rng)
    if instrument == "sine lead":
        tone = _additive(f, n, sr, [(1, 1.0)])
    elif instrument == "square lead":
        tone = _additive(f, n, sr, [(h, 1.0 / h) for h in range(1, 40, 2)]) * 0.8
    elif instrument == "sawtooth lead":
        tone = _additive(f, n, sr, [(h, 1.0 / h) for h in range(1, 40)]) * 0.6
    elif instrument == "organ":   # drawbars 8', 4', 2 2/3', 2'
        tone = _additive(f, n, sr, [(1, 1.0), (2, 0.6), (3, 0.4), (4, 0.3), (6, 0.15)]) * 0.6
    else:
        raise ValueError(f"unknown instrument {instrument!r}; choose from {INSTRUMENTS}")
    attack, release = min(n, int(0.01 * sr)), min(n, int(0.05 * sr))
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack)
    if release:
        env[n - release:] *= np.linspace(1, 0, release)
    if instrument != "organ":      # organs sustain; the others decay gently
        env *= np.exp(-np.arange(n) / sr * 1.5)
    return tone * env


def _place(out: np.ndarray, start: int, note: np.ndarray, gain: float) -> None:
    end = min(out.size, start + note.size)
    if start < end:
        out[start:end] += gain * note[: end - start]


# ---------------------------------------------------------------- patterns

def _chord_midis(attrs: ClipAttributes, degree: int, octave: int = 4) -> list[int]:
    """The diatonic triad on a scale degree, as MIDI numbers (root position)."""
    scale = HARMONIC_MINOR if (attrs.mode == "minor" and degree == 4) else SCALES[attrs.mode]
    base = 12 * (octave + 1) + PITCH_CLASSES.index(attrs.tonic)
    notes = []
    for step in (0, 2, 4):
        idx = degree + step
        notes.append(base + scale[idx % 7] + 12 * (idx // 7))
    return notes


def _pattern_events(attrs: ClipAttributes, duration: float,
                    rng: np.random.Generator) -> list[tuple[float, float, int, float]]:
    """(onset s, length s, midi, gain) for the pitched part; one chord of the progression per bar."""
    beat = 60.0 / attrs.bpm
    bar = 4 * beat
    events = []
    n_bars = int(np.ceil(duration / bar))
    for b in range(n_bars):
        degree = attrs.progression[b % len(attrs.progression)]
        chord = _chord_midis(attrs, degree)
        t0 = b * bar
        events.append((t0, bar, chord[0] - 24, 0.5))                    # bass: chord root
        if attrs.pattern == "chord progression":
            for beat_i in range(4):                                     # a block chord per beat
                for m in chord:
                    events.append((t0 + beat_i * beat, beat * 0.95, m, 0.35))
        elif attrs.pattern == "arpeggio":
            order = chord + [chord[0] + 12, chord[1] + 12, chord[2], chord[1], chord[0] + 12]
            for i in range(8):                                          # eighth notes
                events.append((t0 + i * beat / 2, beat / 2 * 0.95, order[i % len(order)], 0.5))
        else:                                                           # melody: scale walk
            scale = SCALES[attrs.mode]
            tonic = 60 + PITCH_CLASSES.index(attrs.tonic)
            for i in range(4):                                          # bar starts on the root
                deg = degree if i == 0 else int(np.clip(deg + rng.integers(-2, 3), 0, 9))
                m = tonic + scale[deg % 7] + 12 * (deg // 7)
                events.append((t0 + i * beat, beat * 0.95, m, 0.55))
            for m in chord:                                             # soft pad under it
                events.append((t0, bar, m - 12, 0.12))
    return [e for e in events if e[0] < duration]


def _drums(attrs: ClipAttributes, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Kick on every beat, snare on 2 and 4, closed hi-hat on eighths."""
    out = np.zeros(n)
    beat = 60.0 / attrs.bpm
    kick_n, snare_n, hat_n = int(0.25 * sr), int(0.18 * sr), int(0.05 * sr)
    t = np.arange(kick_n) / sr
    kick = np.sin(2 * np.pi * (50 * t + (70 / 25) * (1 - np.exp(-25 * t)))) * np.exp(-t * 14)
    ts = np.arange(snare_n) / sr
    snare_tone = 0.4 * np.sin(2 * np.pi * 185 * ts) * np.exp(-ts * 30)
    hat_b, hat_a = signal.butter(2, 7000 / (sr / 2), "high") if sr > 16000 else signal.butter(
        2, 0.6, "high")
    for i in range(int(duration_beats(n / sr, attrs.bpm) * 2)):
        start = int(round(i * beat / 2 * sr))
        if i % 2 == 0:
            _place(out, start, kick, 0.9)
            if (i // 2) % 4 in (1, 3):
                noise = rng.uniform(-1, 1, snare_n) * np.exp(-ts * 25)
                _place(out, start, 0.6 * noise + snare_tone, 0.6)
        hat = signal.lfilter(hat_b, hat_a, rng.uniform(-1, 1, hat_n)) * np.exp(
            -np.arange(hat_n) / sr * 80)
        _place(out, start, hat, 0.25)
    return out


def duration_beats(duration: float, bpm: float) -> float:
    """How many beats fit in ``duration`` seconds."""
    return duration * bpm / 60.0


def render_clip(attrs: ClipAttributes, duration: float, sample_rate: int,
                rng: np.random.Generator) -> np.ndarray:
    """Render mono float32 audio of ``duration`` seconds, peak set by the dynamics."""
    n = int(round(duration * sample_rate))
    out = np.zeros(n)
    for onset, length, midi, gain in _pattern_events(attrs, duration, rng):
        note_n = int(length * sample_rate)
        _place(out, int(round(onset * sample_rate)),
               render_note(attrs.instrument, midi, note_n, sample_rate, rng), gain)
    if attrs.drums:
        pitched_peak = np.max(np.abs(out)) or 1.0
        out = out / pitched_peak + 0.7 * _drums(attrs, n, sample_rate, rng)
    peak = np.max(np.abs(out)) or 1.0
    return (out / peak * DYNAMIC_GAIN[attrs.dynamics]).astype(np.float32)


# ---------------------------------------------------------------- captions

_PATTERN_WORDS = {"arpeggio": ("arpeggio", "arpeggiated figure", "broken-chord pattern"),
                  "chord progression": ("chord progression", "sequence of block chords",
                                        "chordal accompaniment"),
                  "melody": ("melody", "simple tune", "melodic line")}
_DYN_WORDS = {"soft": ("soft", "gentle", "quiet"), "medium": ("moderate", "steady", "relaxed"),
              "loud": ("loud", "energetic", "powerful")}
_MOOD = {"major": ("bright", "cheerful", "happy"), "minor": ("melancholic", "dark", "sad")}
_TEMPLATES = (
    "A {dyn} {instrument} plays a {pattern} in {key} at {bpm} BPM{drums_clause}.",
    "This is a {mood} instrumental piece in {key}. A {instrument} carries a {pattern} "
    "at a {tempo_word} tempo of {bpm} BPM{drums_clause}.",
    "{Tempo_word} {mood} music: {pattern} on a {instrument}, {key}, {bpm} beats per minute"
    "{drums_clause}. The dynamics are {dyn}.",
    "The {instrument} performs a {dyn} {pattern}{drums_clause}. The song is in {key} and "
    "moves at {bpm} BPM, giving it a {mood} feel.",
    "An electronic {instrument} {pattern}, {mood} and {dyn}, in the key of {key} at "
    "{bpm} BPM{drums_clause}.",
    "Low-fidelity synthetic recording of a {instrument} playing a {tempo_word} {pattern} in "
    "{key}{drums_clause}; tempo {bpm} BPM, {dyn} dynamics.",
)


def tempo_word(bpm: int) -> str:
    """Coarse tempo name used in captions and aspects."""
    return "slow" if bpm < 95 else "medium" if bpm < 125 else "fast"


def describe(attrs: ClipAttributes, rng: np.random.Generator) -> tuple[str, list[str]]:
    """Caption and aspect list for a clip; wording varies, facts do not."""
    drums_clause = (
        (" with a drum beat", " over kick, snare and hi-hat", " backed by drums")[rng.integers(3)]
        if attrs.drums else (" without percussion", " with no drums", "")[rng.integers(3)])
    words = dict(
        dyn=_DYN_WORDS[attrs.dynamics][rng.integers(3)],
        instrument=attrs.instrument,
        pattern=_PATTERN_WORDS[attrs.pattern][rng.integers(3)],
        key=attrs.key,
        bpm=attrs.bpm,
        mood=_MOOD[attrs.mode][rng.integers(3)],
        tempo_word=tempo_word(attrs.bpm),
        drums_clause=drums_clause,
    )
    words["Tempo_word"] = words["tempo_word"].capitalize()
    caption = _TEMPLATES[rng.integers(len(_TEMPLATES))].format(**words)
    aspects = [attrs.instrument, attrs.pattern, f"{attrs.key}", f"{attrs.bpm} bpm",
               f"{tempo_word(attrs.bpm)} tempo", attrs.dynamics, _MOOD[attrs.mode][0],
               "drums" if attrs.drums else "no percussion", "instrumental", "synthesized"]
    rng.shuffle(aspects)
    return caption, aspects


def labels_dict(attrs: ClipAttributes) -> dict:
    """Labels as stored: the attributes plus audiocraft-style metadata names (key, bpm)."""
    d = dataclasses.asdict(attrs)
    d["progression"] = list(attrs.progression)
    d["key"] = attrs.key
    return d


# ---------------------------------------------------------------- corpus

Combo = tuple[str, str, str]     # (instrument, pattern, mode)


def combo(attrs: ClipAttributes) -> Combo:
    return attrs.instrument, attrs.pattern, attrs.mode


def make_clip(seed: int, index: int, duration: float, sample_rate: int, exclude: frozenset[Combo] = frozenset(),
              tempi: tuple[int, ...] | None = None) -> tuple[ClipAttributes, np.ndarray, str, list[str]]:
    """Everything about clip ``index``; depends only on (seed, index, exclude).

    Attributes whose (instrument, pattern, mode) is in ``exclude`` are drawn again from the same
    stream, so a corpus without held-out combinations still has ``clips`` clips, deterministically.
    """
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng, tempi)
    while combo(attrs) in exclude:
        attrs = sample_attributes(rng, tempi)
    audio = render_clip(attrs, duration, sample_rate, rng)
    caption, aspects = describe(attrs, rng)
    return attrs, audio, caption, aspects


def write_corpus(out: Path, clips: int, *, duration: float = 10.0, sample_rate: int = 32000,
                 seed: int = 0, progress: bool = True, exclude: frozenset[Combo] = frozenset(),
                 tempi: tuple[int, ...] | None = None, workers: int = 1) -> Path:
    """Render ``clips`` clips into ``out`` in MusicCaps layout; returns the CSV path.

    ``exclude``: (instrument, pattern, mode) combinations no clip may have (held out for evaluation).
    ``tempi``: draw every clip's BPM from these values instead of ``TEMPO_RANGE``.
    ``workers``: processes rendering clips; since clip i depends only on (seed, i), the corpus is
    the same file for file whatever the number (rendering is the slow part: about 0.3 s a clip).
    """
    if tempi is not None and (not tempi or any(not TEMPI_LIMITS[0] <= t <= TEMPI_LIMITS[1] for t in tempi)):
        raise ValueError(f"tempi {tempi}: give one or more BPMs from {TEMPI_LIMITS[0]} to {TEMPI_LIMITS[1]}")
    bad = [c for c in exclude if len(c) != 3 or c[0] not in INSTRUMENTS or c[1] not in PATTERNS or c[2] not in MODES]
    if bad:
        raise ValueError(f"exclude: {bad} are not (instrument, pattern, mode) triples of {INSTRUMENTS}, "
                         f"{PATTERNS}, {MODES}")
    if clips < 1:
        raise ValueError(f"--clips must be at least 1, got {clips}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if duration <= 0:
        raise ValueError(f"--duration must be positive, got {duration}")
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    csv_path = out / "musiccaps.csv"
    with open(csv_path, "w", newline="") as fcsv, open(out / "labels.jsonl", "w") as flab:
        writer = csv.writer(fcsv)
        writer.writerow(CSV_COLUMNS)
        render = functools.partial(make_clip, seed, duration=duration, sample_rate=sample_rate,
                                   exclude=frozenset(exclude), tempi=tempi)
        with _pool(workers) as pool:
            made = pool.imap(render, range(clips), chunksize=8) if pool else map(render, range(clips))
            for i, (attrs, audio, caption, aspects) in enumerate(
                    tqdm(made, total=clips, desc="synth-corpus", unit="clip", disable=not progress)):
                _write_clip(out, writer, flab, i, attrs, audio, caption, aspects, duration, sample_rate, seed)
    return csv_path


@contextlib.contextmanager
def _pool(workers: int):
    """A process pool for ``workers`` > 1, else None (render in this process)."""
    if workers == 1:
        yield None
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield pool


def _write_clip(out: Path, writer, flab, i: int, attrs: ClipAttributes, audio: np.ndarray, caption: str,
                aspects: list[str], duration: float, sample_rate: int, seed: int) -> None:
    """One clip's WAV, CSV row and labels line."""
    ytid = f"synth{i:06d}"
    sf.write(out / "audio" / f"{ytid}.wav", audio, sample_rate, subtype="PCM_16")
    labels = labels_dict(attrs)
    writer.writerow([ytid, 0, f"{duration:g}", MUSIC_MID, repr(aspects), caption,
                     seed, 0, int(i % 10 == 0), json.dumps(labels, sort_keys=True)])
    flab.write(json.dumps({"ytid": ytid, **labels}, sort_keys=True) + "\n")
