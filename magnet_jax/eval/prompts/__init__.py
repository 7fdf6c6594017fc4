"""Evaluation prompts: the JSONL format, its loader, and the held-out prompt set.

A prompts file holds one JSON object per line (blank lines are skipped):

    {"caption": "Rolling organ arpeggios in A minor, 84 BPM, no drums.",
     "attributes": {"instrument": "organ", "tonic": "A", "mode": "minor", "bpm": 84,
                    "pattern": "arpeggio", "drums": false}}

Scored attributes: instrument, tonic + mode (the key; the mode alone is scored too), bpm, pattern,
drums. A missing key is not scored. ``dynamics`` and ``progression`` may be given too: they are
not scored, only used to render the real clip a prompt is compared with (missing ones are drawn
at random, seeded). Values must be the synthetic corpus's (``data_pipelines.synth``); flat tonics
(``Bb``) are accepted and stored as the corpus's sharps (``A#``).

``heldout.jsonl`` (``HELDOUT_FILE``): 42 prompts whose captions are new wordings (none comes from
``data_pipelines.synth``'s caption templates) over the (instrument, pattern, mode) combinations of
``HELDOUT_COMBOS``, which the shipped model's training corpus leaves out.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from data_pipelines import synth

# (instrument, pattern, mode) triples absent from the shipped model's training corpus; every
# held-out prompt uses one of them.
HELDOUT_COMBOS: tuple[tuple[str, str, str], ...] = (
    ("organ", "arpeggio", "minor"),
    ("sine lead", "melody", "major"),
    ("square lead", "chord progression", "minor"),
    ("sawtooth lead", "arpeggio", "major"),
    ("plucked string", "chord progression", "major"),
    ("organ", "melody", "major"),
)
HELDOUT_FILE = Path(__file__).with_name("heldout.jsonl")
SCORED = ("instrument", "tonic", "mode", "bpm", "pattern", "drums")
RENDER_ONLY = ("dynamics", "progression")
FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}


class PromptError(ValueError):
    """A prompts file the user must fix: the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One evaluation prompt: the caption given to the model and the attributes it asks for."""
    caption: str
    attributes: Mapping[str, Any]


def is_heldout(instrument: str, pattern: str, mode: str) -> bool:
    """Whether a clip with these attributes belongs to a held-out combination (keep it out of training)."""
    return (instrument, pattern, mode) in HELDOUT_COMBOS


def load_prompts(path: str | os.PathLike) -> list[Prompt]:
    """Read and check a prompts JSONL file; errors name the line and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptError(f"cannot read prompts file {path}: {err}") from err
    prompts = [_parse_line(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise PromptError(f"prompts file {path} holds no prompts: write one JSON object per line, "
                          '{"caption": "...", "attributes": {"instrument": ..., ...}}')
    return prompts


def heldout_prompts() -> list[Prompt]:
    """The shipped held-out prompt set."""
    return load_prompts(HELDOUT_FILE)


def _parse_line(path: Path, n: int, line: str) -> Prompt:
    where = f"{path}, line {n}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(obj, dict):
        raise PromptError(f"{where}: expected a JSON object with 'caption' and 'attributes'")
    unknown = sorted(set(obj) - {"caption", "attributes"})
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {unknown}; a prompt has 'caption' and 'attributes'")
    caption = obj.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise PromptError(f"{where}: 'caption' must be a non-empty string")
    attributes = obj.get("attributes", {})
    if not isinstance(attributes, dict):
        raise PromptError(f"{where}: 'attributes' must be a JSON object")
    try:
        return Prompt(caption.strip(), check_attributes(attributes))
    except ValueError as err:
        raise PromptError(f"{where}: {err}") from err


def check_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Validated attributes in the corpus's spelling; ValueError names the bad key or value."""
    unknown = sorted(set(attributes) - set(SCORED) - set(RENDER_ONLY))
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; known: {list(SCORED + RENDER_ONLY)}")
    out = dict(attributes)
    if "tonic" in out and isinstance(out["tonic"], str):
        out["tonic"] = FLATS.get(out["tonic"], out["tonic"])
    choices = {"instrument": synth.INSTRUMENTS, "tonic": synth.PITCH_CLASSES, "mode": synth.MODES,
               "pattern": synth.PATTERNS, "dynamics": synth.DYNAMICS}
    for key, allowed in choices.items():
        if key in out and out[key] not in allowed:
            raise ValueError(f"{key} {out[key]!r} is not one of {list(allowed)}")
    if "drums" in out and not isinstance(out["drums"], bool):
        raise ValueError(f"drums must be true or false, got {out['drums']!r}")
    if "bpm" in out:
        bpm = out["bpm"]
        if isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not 20 <= bpm <= 400:
            raise ValueError(f"bpm must be a number of beats per minute in [20, 400], got {bpm!r}")
    if "progression" in out:
        prog = out["progression"]
        if (not isinstance(prog, list) or not prog
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 7 for d in prog)):
            raise ValueError(f"progression must be a list of scale degrees 0-6, got {prog!r}")
    return out


def complete_attributes(attributes: Mapping[str, Any], rng: np.random.Generator) -> synth.ClipAttributes:
    """The prompt's attributes with the missing ones drawn as the corpus draws them.

    Drawing always consumes the same random numbers (``synth.sample_attributes``), so clip i's
    rendering does not depend on which attributes its prompt happens to give."""
    drawn = dataclasses.asdict(synth.sample_attributes(rng))
    given = dict(attributes)
    if "mode" in given and "progression" not in given:      # a progression of the prompt's mode
        progs = synth.PROGRESSIONS[given["mode"]]
        drawn["progression"] = progs[synth.PROGRESSIONS[drawn["mode"]].index(drawn["progression"])]
    if "progression" in given:
        given["progression"] = tuple(given["progression"])
    if "bpm" in given:
        given["bpm"] = int(round(given["bpm"]))
    return synth.ClipAttributes(**{**drawn, **given})
