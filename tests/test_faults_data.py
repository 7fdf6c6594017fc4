"""Fault injection, token shards: a resumed ``tokenize`` verifies its finished shards against the
size and SHA-256 in their done markers and redoes damaged ones (one line each); ``train`` names a
shard it cannot read instead of raising riegeli's traceback; bad tokenize numbers are refused
before the --out folder exists, and a job that finished no shard takes the corrected settings.

Damage is real (tests/faults_common.py): bytes inverted in the middle of a shard's record data,
or the file cut to half.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from faults_common import (one_error_line, overwrite_middle, run_main, token_dataset, train_cmd,
                           truncate_half)
from test_data_common import settings, synth_corpus, tiny_encoder, tokenize_cmd, tokenized_synth

from data_pipelines import records
from data_pipelines.manifests import read_manifest
from data_pipelines.tokenize import TokenizeOptions, job_fingerprint, marker_path, state_dir, tokenize


def _tokenize_argv(out, *extra: str) -> list[str]:
    """tests/test_data_common.py's tokenize command line (the tiny codec), for ``cli.main``."""
    cmd = tokenize_cmd(synth_corpus(), out, *extra)
    return cmd[cmd.index("tokenize"):]


def test_resumed_tokenize_redoes_damaged_shards_and_says_so(tmp_path, capsys):
    ref, _ = tokenized_synth()                    # 6 clips, 3 shards of 2 clips
    out = tmp_path / "tokens"
    shutil.copytree(ref, out)
    names = [records.shard_name("train", i, 3) for i in range(3)]
    overwrite_middle(out / names[1])
    truncate_half(out / names[2])
    size, recorded = (out / names[2]).stat().st_size, (ref / names[2]).stat().st_size

    code, stdout, err = run_main(_tokenize_argv(out, "--clips-per-shard", "2"), capsys)
    assert code == 0, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("tokenize:")] == [
        f"tokenize: shard {names[1]} is damaged (its SHA-256 differs from its marker's); redoing it",
        f"tokenize: shard {names[2]} is damaged ({size} bytes, its marker recorded {recorded}); redoing it"]
    run = json.loads(stdout)["this_run"]
    assert (run["shards_redone"], run["shards_written"], run["shards_skipped"]) == (2, 2, 1)
    for name in names:                            # redone byte for byte
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    marker = json.loads(marker_path(out, "train", 1).read_text())
    assert marker["sha256"] == records.file_sha256(out / names[1]) and marker["records"] == 4


@pytest.mark.parametrize("flag,value,message", [
    ("--batch-size", "0", "--batch-size 0: must be >= 1"),
    ("--decode-workers", "0", "--decode-workers 0: must be >= 1"),
    ("--max-shards", "0", "--max-shards 0: must be >= 1"),
    ("--segment-duration", "0", "--segment-duration 0.0: must be a finite number of seconds > 0"),
])
def test_bad_tokenize_numbers_are_refused_before_the_out_folder_exists(flag, value, message, tmp_path, capsys):
    out = tmp_path / "tokens"
    argv = _replace_flag(_tokenize_argv(out), flag, value)
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert one_error_line(err, "tokenize") == f"magnet-jax tokenize: error: {message}"
    assert not out.exists()


def test_non_finite_tokenize_numbers_are_refused_by_the_parser(tmp_path, capsys):
    out = tmp_path / "tokens"
    with pytest.raises(SystemExit) as exit_:
        run_main(_replace_flag(_tokenize_argv(out), "--segment-duration", "nan"), capsys)
    assert exit_.value.code == 2 and "'nan' is not a finite number" in capsys.readouterr().err
    assert not out.exists()


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    if flag in argv:
        i = argv.index(flag)
        return argv[:i + 1] + [value] + argv[i + 2:]
    return argv + [flag, value]


def test_a_job_that_finished_no_shard_takes_the_corrected_settings(tmp_path, capsys):
    """What a failed first try leaves (its job file, no finished shard) does not refuse the retry;
    a job with a finished shard still refuses other settings."""
    manifest = read_manifest(synth_corpus())
    manifest.clips[:] = manifest.clips[:1]
    encoder, opts = tiny_encoder(), TokenizeOptions(clips_per_shard=1, progress=False)
    failed = {**job_fingerprint(manifest, encoder, settings(), opts, False), "batch_size": 0}
    state_dir(tmp_path, "train").mkdir(parents=True)
    (state_dir(tmp_path, "train") / "job.json").write_text(json.dumps(failed))

    capsys.readouterr()
    summary = tokenize(manifest, encoder, settings(), tmp_path, opts)
    assert summary["finished"] and summary["records"] == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tokenize: no shard of split 'train' in {tmp_path} was finished; starting it over with the new batch_size"]
    with pytest.raises(ValueError, match=r"tokenized with different \['settings'\]"):
        tokenize(manifest, encoder, dataclasses.replace(settings(), min_segment_ratio=0.25), tmp_path, opts)


def test_train_names_a_shard_damaged_in_the_middle(tmp_path, capsys):
    data = token_dataset(copy_to=tmp_path / "tokens")
    shard = records.shard_paths(data, "train")[1]
    overwrite_middle(shard)
    code, _, err = run_main(train_cmd(tmp_path / "run", data, "train.steps=6"), capsys)
    assert code == 2
    line = one_error_line(err, "train")
    assert line.startswith(f"magnet-jax train: error: {shard}: record ")
    assert "cannot be read (Corrupted Riegeli/records file: chunk data hash mismatch" in line
    assert line.endswith(records.REDO_HINT)


def test_train_names_a_truncated_shard_before_it_builds_anything(tmp_path, capsys):
    data = token_dataset(copy_to=tmp_path / "tokens")
    shard = records.shard_paths(data, "train")[2]
    truncate_half(shard)
    code, _, err = run_main(train_cmd(tmp_path / "run", data), capsys)
    assert code == 2
    assert one_error_line(err, "train") == (f"magnet-jax train: error: {shard} cannot be read (truncated or not an "
                                           f"ArrayRecord file); {records.REDO_HINT}")
    assert not (tmp_path / "run" / "checkpoints").exists()
