"""Corpus manifests: what to tokenize, with which caption and metadata.

Three formats, named or auto-detected:

- ``musiccaps``: the MusicCaps CSV (ytid, start_s, end_s, audioset_positive_labels, aspect_list,
  caption, author_id, is_balanced_subset, is_audioset_eval) plus a folder of audio files named
  by ytid, each clipped to [start_s, end_s]. An optional ``labels_json`` column (written by
  ``magnet-jax synth-corpus``) carries ground-truth attributes.
- ``jsonl``: audiocraft's manifest (``{"path", "duration", "sample_rate", ...}`` per line,
  optionally gzipped) with a sidecar ``<audio>.json`` per file holding description, genre,
  moods, keywords, bpm, key, instrument (read as audiocraft's ``MusicInfo`` reads them).
- ``folder``: audio files anywhere under a folder, each with a sidecar ``<audio>.txt`` caption.

Every reader returns a :class:`Manifest`: the clips in a deterministic order, and rejects for
lines or files it could not use (they go into the same report as decoding failures).
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import gzip
import json
import math
import re
from pathlib import Path
from typing import Any

from data_pipelines.audio import SUPPORTED_EXTENSIONS
from data_pipelines.rejects import Reject

FORMATS = ("auto", "musiccaps", "jsonl", "folder")
MUSICCAPS_REQUIRED = ("ytid", "start_s", "end_s", "caption")
SIDECAR_SUFFIXES = (".txt", ".json")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One entry of a manifest. Metadata names follow audiocraft's ``MusicInfo``; ``aspects``
    is MusicCaps's aspect_list and plays the role of audiocraft's ``keywords``."""
    clip_id: str
    path: str
    start_s: float = 0.0
    end_s: float | None = None
    caption: str = ""
    aspects: tuple[str, ...] = ()
    genre: str = ""
    moods: tuple[str, ...] = ()
    key: str = ""
    bpm: float = math.nan
    instrument: str = ""
    labels_json: str = ""            # ground-truth attributes (synthetic corpus), JSON text


@dataclasses.dataclass
class Manifest:
    """Clips to tokenize plus the entries that could not even be listed."""
    format: str
    source: str
    clips: list[ClipSpec]
    rejects: list[Reject]

    @property
    def uncaptioned(self) -> int:
        return sum(1 for c in self.clips if not c.caption)


# ------------------------------------------------------------ audiocraft's metadata cleaning

def _keyword(value: Any) -> str:
    """audiocraft ``get_keyword``: stripped lower-case string, '' for None/'None'/non-str."""
    if not isinstance(value, str) or not value or value == "None":
        return ""
    return value.strip().lower()


def _keyword_list(value: Any) -> tuple[str, ...]:
    """audiocraft ``get_keyword_list``: split strings on commas/whitespace, clean each."""
    if isinstance(value, str):
        value = [v.strip() for v in re.split(r"[,\s]", value)]
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        value = []
    elif not isinstance(value, list):
        value = [str(value)]
    return tuple(k for k in (_keyword(v) for v in value) if k)


def _musical_key(value: Any) -> str:
    """audiocraft ``get_musical_key``: lower-cased, dropped when several keys are listed."""
    key = _keyword(value)
    return "" if "," in key else key


def _bpm(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _string(value: Any) -> str:
    """audiocraft ``get_string``: stripped, '' for None/'None'."""
    return value.strip() if isinstance(value, str) and value and value != "None" else ""


def music_info_fields(meta: dict) -> dict:
    """ClipSpec metadata from an audiocraft-style info dict (sidecar .json or labels)."""
    return dict(
        caption=_string(meta.get("description")),
        aspects=_keyword_list(meta.get("keywords")),
        genre=_keyword(meta.get("genre")),
        moods=_keyword_list(meta.get("moods")),
        key=_musical_key(meta.get("key")),
        bpm=_bpm(meta.get("bpm")),
        instrument=_keyword(meta.get("instrument")),
    )


# ------------------------------------------------------------ MusicCaps CSV

def _find_audio(audio_dir: Path, stem: str) -> Path | None:
    for ext in SUPPORTED_EXTENSIONS:
        p = audio_dir / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def _parse_aspects(text: str) -> tuple[str, ...]:
    """MusicCaps stores aspect_list as a Python list literal: "['a', 'b']"."""
    text = (text or "").strip()
    if not text:
        return ()
    value = ast.literal_eval(text)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"aspect_list is not a list: {text[:60]!r}")
    return tuple(str(v).strip() for v in value if str(v).strip())


def read_musiccaps(csv_path: Path, audio_dir: Path | None = None) -> Manifest:
    """Read a MusicCaps CSV; audio is ``audio_dir/<ytid>.<wav|flac|ogg|mp3>``.

    ``audio_dir`` defaults to ``audio/`` beside the CSV when that folder exists, else the CSV's
    own folder."""
    csv_path = Path(csv_path)
    if audio_dir is None:
        audio_dir = csv_path.parent / "audio"
        audio_dir = audio_dir if audio_dir.is_dir() else csv_path.parent
    audio_dir = Path(audio_dir)
    clips, rejects = [], []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MUSICCAPS_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} is not a MusicCaps CSV: columns {missing} are missing "
                             f"(found {reader.fieldnames}); expected {MUSICCAPS_REQUIRED} at least")
        for line, row in enumerate(reader, start=2):
            ytid = (row.get("ytid") or "").strip()
            where = f"{csv_path}:{line}"
            try:
                start, end = float(row["start_s"]), float(row["end_s"])
                if not 0 <= start < end:
                    raise ValueError(f"start_s={start} end_s={end} is not a window")
                aspects = _parse_aspects(row.get("aspect_list", ""))
                labels = (row.get("labels_json") or "").strip()
                label_fields = music_info_fields(json.loads(labels)) if labels else {}
                if not ytid:
                    raise ValueError("empty ytid")
            except (ValueError, SyntaxError, TypeError) as err:
                rejects.append(Reject(where, "bad_manifest_row", str(err), ytid))
                continue
            path = _find_audio(audio_dir, ytid)
            if path is None:
                rejects.append(Reject(str(audio_dir / f"{ytid}.*"), "missing",
                                      f"no {ytid}{{{','.join(SUPPORTED_EXTENSIONS)}}} in {audio_dir}",
                                      ytid))
                continue
            label_fields.pop("caption", None)
            label_fields.pop("aspects", None)
            clips.append(ClipSpec(clip_id=ytid, path=str(path), start_s=start, end_s=end,
                                  caption=(row.get("caption") or "").strip(), aspects=aspects,
                                  labels_json=labels, **label_fields))
    return Manifest("musiccaps", str(csv_path), clips, rejects)


# ------------------------------------------------------------ audiocraft JSONL

def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def read_jsonl(manifest_path: Path) -> Manifest:
    """Read an audiocraft manifest; relative paths resolve against the manifest's folder."""
    manifest_path = Path(manifest_path)
    clips, rejects = [], []
    with _open_text(manifest_path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{manifest_path}:{line_no}"
            try:
                entry = json.loads(line)
                path = Path(entry["path"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                rejects.append(Reject(where, "bad_manifest_row", f"{type(err).__name__}: {err}"))
                continue
            path = path if path.is_absolute() else manifest_path.parent / path
            fields = {}
            sidecar = path.with_suffix(".json")
            if sidecar.exists():
                try:
                    fields = music_info_fields(json.loads(sidecar.read_text()))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    rejects.append(Reject(str(sidecar), "bad_manifest_row",
                                          f"sidecar metadata is not JSON: {err}", path.stem))
                    continue
            clips.append(ClipSpec(clip_id=str(entry.get("id", entry["path"])), path=str(path),
                                  **fields))
    return Manifest("jsonl", str(manifest_path), clips, rejects)


# ------------------------------------------------------------ folder with .txt captions

def read_folder(folder: Path) -> Manifest:
    """Every audio file under ``folder`` (sorted), caption from ``<file>.txt`` when present.
    Files that are neither audio nor sidecars are reported, not silently ignored."""
    folder = Path(folder)
    clips, rejects = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        if suffix in SIDECAR_SUFFIXES and _has_audio_sibling(path):
            continue
        if suffix not in SUPPORTED_EXTENSIONS:
            rejects.append(Reject(str(path), "unsupported_extension",
                                  f"{suffix or 'no extension'} is not one of {SUPPORTED_EXTENSIONS}"))
            continue
        txt = path.with_suffix(".txt")
        caption = txt.read_text(errors="replace").strip() if txt.exists() else ""
        clip_id = str(path.relative_to(folder).with_suffix(""))
        clips.append(ClipSpec(clip_id=clip_id, path=str(path), caption=caption))
    return Manifest("folder", str(folder), clips, rejects)


def _has_audio_sibling(sidecar: Path) -> bool:
    return any(sidecar.with_suffix(ext).exists() for ext in SUPPORTED_EXTENSIONS)


# ------------------------------------------------------------ detection

def detect_format(source: Path) -> str:
    """Name the format of ``source``: a .csv is MusicCaps, a .jsonl(.gz) is audiocraft's; a
    folder holding exactly one MusicCaps CSV or one data.jsonl(.gz) is that, else a folder."""
    source = Path(source)
    name = source.name.lower()
    if source.is_file():
        if name.endswith(".csv"):
            return "musiccaps"
        if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
            return "jsonl"
        raise ValueError(f"cannot tell the manifest format of {source}: expected a .csv "
                         f"(MusicCaps), a .jsonl/.jsonl.gz (audiocraft) or a folder")
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    if _musiccaps_csvs(source):
        return "musiccaps"
    if _jsonl_files(source):
        return "jsonl"
    return "folder"


def _musiccaps_csvs(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.glob("*.csv")):
        with open(p, newline="") as f:
            header = next(csv.reader(f), [])
        if all(c in header for c in MUSICCAPS_REQUIRED):
            out.append(p)
    return out


def _jsonl_files(folder: Path) -> list[Path]:
    return sorted(list(folder.glob("*.jsonl")) + list(folder.glob("*.jsonl.gz")))


def _single(found: list[Path], kind: str, folder: Path) -> Path:
    if len(found) != 1:
        raise ValueError(f"{folder} holds {len(found)} {kind} files ({[p.name for p in found]}); "
                         f"pass the one to use as the source")
    return found[0]


def read_manifest(source: Path, fmt: str = "auto", audio_dir: Path | None = None) -> Manifest:
    """Read ``source`` in format ``fmt`` (one of FORMATS)."""
    source = Path(source)
    if fmt not in FORMATS:
        raise ValueError(f"unknown manifest format {fmt!r}; choose from {FORMATS}")
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "musiccaps":
        csv_path = source if source.is_file() else _single(_musiccaps_csvs(source), "MusicCaps CSV", source)
        return read_musiccaps(csv_path, audio_dir)
    if fmt == "jsonl":
        path = source if source.is_file() else _single(_jsonl_files(source), "jsonl", source)
        return read_jsonl(path)
    if not source.is_dir():
        raise ValueError(f"format 'folder' needs a directory, got the file {source}")
    return read_folder(source)
