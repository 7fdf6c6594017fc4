"""Folder manifests: every file's relative path, size and SHA-256, so damage is found before use.

A folder we write (a model folder, a training checkpoint step) gets ``integrity.json`` as its last
file, written to a temporary name and renamed into place (``os.replace`` is atomic), so a folder
that holds a manifest is a complete folder. ``verify`` re-reads the files listed in it (sizes
first, which finds a truncated or deleted file without reading anything, then SHA-256 in 1 MiB
chunks, several files at once since hashlib releases the GIL) and raises one ``IntegrityError``
line naming the damaged, missing or resized file and what to do. A folder without a manifest
(written by an older magnet-jax, or by hand) is loaded with a one-line warning.

Files added after the manifest (a model card written later, notes) are not checked; files it
lists must be exactly as they were written.

    from magnet_jax.integrity import verify, write_manifest
    write_manifest("my-model/")                      # last, after every other file is written
    verify("my-model/", what="model folder", remedy="export it again")
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

MANIFEST_FILE = "integrity.json"
FORMAT = 1
CHUNK = 1 << 20                      # bytes read per hashing step
_TEMP_PREFIX = ".integrity."         # the manifest while it is written (never listed)
_SHOWN = 3                           # problems named in one message
_THREADS = min(8, os.cpu_count() or 1)   # files hashed at once


class IntegrityError(ValueError):
    """A folder whose files differ from its manifest (damaged, truncated, deleted)."""


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _sha256_of(folder: Path, rels: list[str]) -> dict[str, str]:
    """The SHA-256 of each relative path, hashed on a few threads (large checkpoints: disk-bound)."""
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        return dict(zip(rels, pool.map(lambda rel: file_sha256(folder / rel), rels)))


def _listed_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a POSIX relative path, the manifest and its temp files excepted."""
    out = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name == MANIFEST_FILE or name.startswith(_TEMP_PREFIX):
                continue
            out.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(out)


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``folder/integrity.json`` for the files there now; call it after the last other write.

    The manifest goes to a temporary file, is flushed to disk, and is renamed over the final
    name, so a reader sees either no manifest or a whole one."""
    folder = Path(folder)
    rels = _listed_files(folder)
    digests = _sha256_of(folder, rels)
    files = {rel: {"size": (folder / rel).stat().st_size, "sha256": digests[rel]} for rel in rels}
    text = json.dumps({"format": FORMAT, "algorithm": "sha256", "files": files}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / MANIFEST_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / MANIFEST_FILE


def has_manifest(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()


def _read_manifest(folder: Path) -> dict[str, dict]:
    """The manifest's files table; IntegrityError when the manifest itself is unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        files = manifest["files"]
        for rel, entry in files.items():
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts or not isinstance(entry["size"], int) \
                    or len(entry["sha256"]) != 64:
                raise ValueError(f"bad entry {rel!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise IntegrityError(f"{MANIFEST_FILE} is unreadable ({err})") from None
    return files


def problems(folder: str | os.PathLike) -> list[str] | None:
    """What differs from the manifest, one short phrase per file ([] = intact); None when the
    folder has no manifest. Sizes are compared for every file before any file is hashed."""
    folder = Path(folder)
    if not has_manifest(folder):
        return None
    try:
        files = _read_manifest(folder)
    except IntegrityError as err:
        return [str(err)]
    found, same_size = [], []
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file():
            found.append(f"{rel} is missing")
        elif (size := path.stat().st_size) != entry["size"]:
            found.append(f"{rel} is {size} bytes, {entry['size']} were written "
                         f"({'truncated' if size < entry['size'] else 'grown'})")
        else:
            same_size.append(rel)
    for rel, digest in _sha256_of(folder, same_size).items():
        if digest != files[rel]["sha256"]:
            found.append(f"{rel} has changed since it was written (its SHA-256 differs from {MANIFEST_FILE})")
    return found


def describe(found: list[str]) -> str:
    """The first few problems, joined into one line."""
    text = "; ".join(found[:_SHOWN])
    return text + (f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else "")


def verify(folder: str | os.PathLike, *, what: str, remedy: str) -> bool:
    """Check ``folder`` against its manifest: True when intact, False (with a one-line warning)
    when it has none; raises ``IntegrityError`` naming the damaged files and ``remedy``."""
    folder = Path(folder)
    found = problems(folder)
    if found is None:
        log.warning("%s %s has no %s (written by an older magnet-jax or by hand): its files are not "
                    "checked for damage", what, folder, MANIFEST_FILE)
        return False
    if found:
        raise IntegrityError(f"{what} {folder} is damaged: {describe(found)}. {remedy}")
    return True
