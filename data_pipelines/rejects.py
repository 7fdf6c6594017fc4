"""Why an input was not used: the reject record, its reason codes and the report file.

Why a module of its own: the promise of the pipeline is that one bad file never stops a job and
no file disappears without a line saying why. Every stage (manifest reading, decoding, segment
cutting) raises or records the same :class:`Reject`, and the tokenizer writes them all to one
report that a person can read (TSV) next to the per-reason counts in the summary.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Iterable

# reason code -> what it means (printed in the report header so the file explains itself)
REASONS: dict[str, str] = {
    "missing": "the audio file does not exist",
    "empty": "zero-byte file or no audio frames",
    "unreadable": "not a decodable audio file (wrong format, text renamed .wav, ...)",
    "truncated": "the file ends before its header says it should",
    "non_finite": "decoded samples contain NaN or inf",
    "silent": "peak level below the silence threshold",
    "too_short": "shorter than min_segment_ratio * segment_duration",
    "bad_window": "the manifest's [start_s, end_s] window lies outside the audio",
    "bad_manifest_row": "a manifest line that cannot be parsed",
    "unsupported_extension": "a file in the corpus folder that is not .wav/.flac/.ogg/.mp3",
    "error": "processing raised an unexpected error (the detail names it; please report it)",
}


@dataclasses.dataclass(frozen=True)
class Reject:
    """One input that was skipped, and why."""
    path: str
    reason: str          # a key of REASONS
    detail: str          # the specific evidence, e.g. "peak -96.3 dBFS < -80 dBFS"
    clip_id: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown reject reason {self.reason!r}; add it to REASONS")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Rejected(Exception):
    """Raised by a pipeline stage for an input that must be skipped."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    def to_reject(self, path: str, clip_id: str = "") -> Reject:
        return Reject(path=path, reason=self.reason, detail=self.detail, clip_id=clip_id)


def count_reasons(rejects: Iterable[Reject]) -> dict[str, int]:
    """Per-reason counts, in REASONS order, for the summary."""
    counts = Counter(r.reason for r in rejects)
    return {k: counts[k] for k in REASONS if counts[k]}


def write_report(path: Path, rejects: list[Reject]) -> None:
    """Write the rejects as a TSV: path, reason, detail, clip_id (header lines start with #)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write("# inputs skipped by magnet-jax tokenize; reasons:\n")
        for k, v in REASONS.items():
            f.write(f"#   {k}: {v}\n")
        f.write("path\treason\tdetail\tclip_id\n")
        for r in rejects:
            cells = [r.path, r.reason, r.detail, r.clip_id]
            f.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells) + "\n")
    tmp.replace(path)


def read_report(path: Path) -> list[Reject]:
    """Read a report written by :func:`write_report`."""
    rows = [line.rstrip("\n").split("\t") for line in open(path) if not line.startswith("#")]
    return [Reject(path=r[0], reason=r[1], detail=r[2], clip_id=r[3]) for r in rows[1:]]
