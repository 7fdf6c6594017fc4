"""Fault injection on model folders: a real damaged weight file (8 KiB overwritten in the middle of
the largest data file, the file truncated, the file deleted) in a copy of the shipped model, and the
exact outcome: ``generate`` exits 2 with one line naming the file and writes nothing; a folder
without a manifest loads with one warning line; ``--no-verify`` skips the check; every folder we
write (the shipped model, ``convert`` / ``export``'s writer) carries a manifest that verifies.

The issue's cases: "a model folder with a damaged weight file generates (exit 0), with tokens
unrelated to the intact model's" and "a truncated model file prints 300 lines of interleaved
tracebacks; the cause is buried".
"""
from __future__ import annotations

import configparser
import fnmatch
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from magnet_jax import integrity, pipeline_cli
from magnet_jax.models import conversion, loading, sources
from magnet_jax.cli import UserError, build_parser, run

FOLDER = sources.DEFAULT_MODEL_DIR
PROMPT = "an organ playing an arpeggio in D minor"


# ---------------------------------------------------------------- damage, as a disk or a copy does it

def largest_file(folder: Path) -> Path:
    """The largest array data file (orbax's ``.../d/<chunk>``) under ``folder``."""
    data = [p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(data, key=lambda p: (p.stat().st_size, str(p)))


def overwrite_middle(path: Path, size: int = 8192) -> None:
    """Overwrite ``size`` bytes in the middle of ``path`` with random bytes (same file size)."""
    length = path.stat().st_size
    assert length >= size, f"{path} has only {length} bytes"
    with open(path, "r+b") as f:
        f.seek((length - size) // 2)
        f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def truncate(path: Path) -> None:
    """Cut ``path`` to half its length (an interrupted copy)."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def delete_file(path: Path) -> None:
    path.unlink()


DAMAGE = {"overwritten": overwrite_middle, "truncated": truncate, "deleted": delete_file}


@pytest.fixture
def model(tmp_path) -> Path:
    """A copy of the shipped model (26 MB) to damage."""
    target = tmp_path / "model"
    shutil.copytree(FOLDER, target)
    return target


def cli_args(*argv: str):
    return build_parser([pipeline_cli.register]).parse_args(list(argv))


def load(model: Path, *flags: str):
    """What ``generate --model`` loads, through the command line's own parser and loader."""
    args = cli_args("generate", "--model", str(model), "--prompt", PROMPT, "--out", "unused", *flags)
    return pipeline_cli.load_model(args, mesh=None)


# ---------------------------------------------------------------- every folder we write is sealed

def test_the_shipped_model_carries_a_manifest_that_verifies_and_ships():
    assert integrity.verify(FOLDER, what="model folder", remedy="")
    listed = json.loads((FOLDER / integrity.MANIFEST_FILE).read_text())["files"]
    on_disk = {p.relative_to(FOLDER).as_posix() for p in FOLDER.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {integrity.MANIFEST_FILE}
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[1] / "setup.cfg")
    patterns = cfg["options.package_data"]["magnet_jax"].split()
    assert any(fnmatch.fnmatch(f"assets/default_model/{integrity.MANIFEST_FILE}", p) for p in patterns)


def test_the_writer_of_convert_and_export_seals_the_folder_last(tmp_path):
    """``_write_converted`` (``convert``, ``export`` and the conversion cache) writes the manifest
    after every other file: it lists them all and verifies."""
    from magnet_jax.lm.checkpoint import load_lm, save_lm
    meta = json.loads((FOLDER / sources.META_FILE).read_text())
    _, codec = loading.load_converted_codec(FOLDER)
    text = loading._restore(FOLDER / "text")
    out = conversion._write_converted(tmp_path / "again", meta, load_lm(FOLDER / "lm"), codec, text, save_lm)
    listed = json.loads((out / integrity.MANIFEST_FILE).read_text())["files"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {integrity.MANIFEST_FILE}
    assert integrity.problems(out) == []


# ---------------------------------------------------------------- damaged weights: one line, exit 2

@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_weight_file_is_one_line_naming_it_and_nothing_is_generated(model, tmp_path, capsys, damage):
    bad = largest_file(model / "lm")
    DAMAGE[damage](bad)
    out = tmp_path / "out"
    code = run([pipeline_cli.register], ["generate", "--model", str(model), "--prompt", PROMPT, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "is damaged" in err and "--no-verify" in err
    assert bad.relative_to(model).as_posix() in err
    assert {"overwritten": "changed since it was written", "truncated": "truncated",
            "deleted": "is missing"}[damage] in err
    assert not list(out.glob("*.wav")) if out.exists() else True


def test_a_damaged_manifest_is_one_line_too(model, capsys):
    (model / integrity.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(UserError, match=r"integrity\.json is unreadable"):
        load(model)


# ---------------------------------------------------------------- no manifest; --no-verify

def test_a_folder_without_manifest_loads_with_a_one_line_warning(model, caplog):
    (model / integrity.MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        loaded = load(model)
    assert loaded.checkpoint_dir == model
    warned = [r.getMessage() for r in caplog.records if r.name == integrity.__name__]
    assert len(warned) == 1 and str(model) in warned[0] and integrity.MANIFEST_FILE in warned[0]
    assert "\n" not in warned[0]


def test_no_verify_skips_the_check(model, caplog):
    with (model / "MODEL_CARD.md").open("a") as f:
        f.write("edited\n")
    with pytest.raises(UserError, match="MODEL_CARD.md is .* bytes, .* were written"):
        load(model)
    with caplog.at_level(logging.WARNING):
        assert load(model, "--no-verify").checkpoint_dir == model
    assert not [r for r in caplog.records if r.name == integrity.__name__]
    from magnet_jax.eval.cli import register as eval_register
    eval_args = build_parser([eval_register]).parse_args(["eval", "--out", "x", "--no-verify"])
    assert eval_args.verify is False


def test_an_unreadable_folder_without_check_is_still_one_line(model):
    """``--no-verify`` (or no manifest) and a truncated weight file: orbax's failure becomes one
    line naming the folder, not its tracebacks."""
    truncate(largest_file(model / "lm"))
    with pytest.raises(UserError, match=r"cannot read the weights in .*/lm \(") as err:
        load(model, "--no-verify")
    assert "\n" not in str(err.value)
