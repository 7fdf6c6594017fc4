"""Fault injection on training checkpoints: a real damaged file (8 KiB overwritten in the middle of
the largest data file, a file truncated, a file deleted) or a non-finite state in a checkpoint of
``train`` / ``train-codec``, and the exact outcome: the damaged step named and moved aside to
``checkpoints/damaged/<step>`` (never deleted), the previous step resumed (bit-identical to the run
that was never damaged), rotation keeping the newest verified step, exit code 3 when no checkpoint
is intact (nothing moved), and ``export`` / ``eval-codec`` refusing a damaged checkpoint by name.

The issue's case: "a checkpoint whose data file was damaged (8 KiB overwritten) was resumed without
a word; the run went on with NaN in the optimizer state, and rotation (keep_checkpoints=2) then
deleted the last intact checkpoint."

One tiny unconditional LM run (test_train's sizes) and one micro codec run (test_codec_train's) are
trained once; every test damages its own copy of the workdir. The whole resume path runs through
``train`` / ``train_codec`` for the issue's case; the other damage kinds go through
``Checkpoints.restore_latest``, the function ``train`` and ``train_codec`` resume with.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from magnet_jax import integrity
from magnet_jax.export import restore_lm_params
from magnet_jax.train.checkpointing import Checkpoints
from magnet_jax.train.loop import abstract_with_shardings, build_trainer, train
from test_faults_models import delete_file, largest_file, overwrite_middle, truncate
from test_train import T, tiny

RUN = ("train.steps=6", "train.checkpoint_every=3", "train.keep_checkpoints=2", "optim.optimizer=adamw",
       "optim.lr=1e-3")
DAMAGE = {"overwritten": overwrite_middle, "truncated": truncate, "deleted": delete_file}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """test_train's token set: repeating motifs, card 64, train and valid splits."""
    from magnet_jax.train.data import pattern_codes, write_token_dataset
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("tokens") / "magnet_tokens" / "1.0.0"
    return str(write_token_dataset(out, {"train": pattern_codes(rng, 32, 4, 40, 64),
                                         "valid": pattern_codes(rng, 8, 4, 40, 64)}, card=64))


@pytest.fixture(scope="module")
def lm_run(data_dir, tmp_path_factory):
    """A finished 6-step run with checkpoints 3 and 6, and its final state on the host."""
    workdir = tmp_path_factory.mktemp("lm_run") / "run"
    summary = train(tiny(data_dir, *RUN), workdir)
    return workdir, jax.tree.map(np.asarray, summary["state"])


@pytest.fixture
def run(lm_run, tmp_path) -> Path:
    """This test's own copy of the finished run."""
    shutil.copytree(lm_run[0], tmp_path / "run")
    return tmp_path / "run"


def resume(data_dir: str, run: Path, caplog) -> tuple[int, dict] | None:
    """What ``train`` does first on an existing workdir: the newest intact checkpoint."""
    ckpt = Checkpoints(run / "checkpoints", keep=2)
    try:
        with caplog.at_level(logging.WARNING):
            return ckpt.restore_latest(abstract_with_shardings(build_trainer(tiny(data_dir, *RUN))))
    finally:
        ckpt.close()


def assert_same(a: dict, b: dict) -> None:
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b))


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def step_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# ---------------------------------------------------------------- the case, end to end

def test_every_kept_checkpoint_is_sealed_by_a_manifest(lm_run):
    workdir, _ = lm_run
    assert step_names(workdir) == ["3", "6"]
    for step in ("3", "6"):
        assert integrity.problems(workdir / "checkpoints" / step) == []


def test_a_damaged_step_is_moved_aside_the_one_before_resumes_and_rotation_keeps_it(lm_run, run, data_dir, caplog):
    """8 KiB of step 6 overwritten, then the run goes on to step 9 with keep_checkpoints=2: step 6
    is reported and moved aside, step 3 resumes, the new step 6 equals the undamaged run's, and
    rotation deletes step 3 only once two newer sealed steps exist."""
    _, final = lm_run
    bad = largest_file(run / "checkpoints" / "6")
    rel = bad.relative_to(run / "checkpoints" / "6").as_posix()
    overwrite_middle(bad)
    damaged_bytes = bad.read_bytes()

    with caplog.at_level(logging.WARNING):
        summary = train(tiny(data_dir, *RUN, "train.steps=9"), run)

    assert summary["resumed_from"] == 3 and summary["step"] == 9
    report = [w for w in warnings_of(caplog) if "checkpoint step 6 is damaged" in w]
    assert len(report) == 1 and rel in report[0] and "resuming from step 3" in report[0] and "\n" not in report[0]
    aside = run / "checkpoints" / "damaged"
    assert (aside / "6" / rel).read_bytes() == damaged_bytes                   # kept as it was found
    assert rel in (aside / "6.reason.txt").read_text()
    assert step_names(run) == ["6", "9", "damaged"]
    for step in ("6", "9"):
        assert integrity.problems(run / "checkpoints" / step) == []
    _, params, _ = restore_lm_params(run, step=6, use_ema=False)
    assert_same(params, final["params"])                 # as if nothing had been damaged


# ---------------------------------------------------------------- each kind of damage

@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_kind_of_damage_is_named_moved_aside_and_the_previous_step_used(run, data_dir, caplog, damage):
    bad = largest_file(run / "checkpoints" / "6")
    rel = bad.relative_to(run / "checkpoints" / "6").as_posix()
    DAMAGE[damage](bad)
    step, _ = resume(data_dir, run, caplog)
    assert step == 3
    report = [w for w in warnings_of(caplog) if "checkpoint step 6 is damaged" in w]
    assert len(report) == 1 and rel in report[0]
    assert {"overwritten": "changed since it was written", "truncated": "truncated",
            "deleted": "is missing"}[damage] in report[0]
    assert (run / "checkpoints" / "damaged" / "6" / rel).exists() == (damage != "deleted")
    assert step_names(run) == ["3", "damaged"]


def test_a_checkpoint_with_a_nonfinite_state_is_refused_like_a_damaged_one(lm_run, run, data_dir, caplog):
    """A state saved with NaN in its optimizer moments (sealed: its files are as written) is
    moved aside by name, and the step before it is used."""
    _, final = lm_run
    ckpts = run / "checkpoints"
    data_state = json.loads(next((ckpts / "6" / "data").glob("*.json")).read_text())
    state = dict(final, opt_state=jax.tree.map(
        lambda x: np.full_like(x, np.nan) if np.issubdtype(x.dtype, np.floating) else x, final["opt_state"]))
    shutil.rmtree(ckpts / "6")
    saver = Checkpoints(ckpts, keep=2, asynchronous=False)
    saver.save(6, state, data_state)
    saver.close()
    assert integrity.problems(ckpts / "6") == []

    step, _ = resume(data_dir, run, caplog)
    assert step == 3
    report = [w for w in warnings_of(caplog) if "checkpoint step 6 is damaged" in w]
    assert len(report) == 1 and "non-finite values in opt_state/" in report[0]
    assert (ckpts / "damaged" / "6" / "state").is_dir()


def test_a_checkpoint_left_without_manifest_is_read_back_then_sealed(lm_run, run, data_dir, caplog):
    """The run died between orbax's finalise and the manifest: the step is not called damaged for
    that. It restores finite, so it is used, and it gets its manifest then."""
    _, final = lm_run
    (run / "checkpoints" / "6" / integrity.MANIFEST_FILE).unlink()
    step, state = resume(data_dir, run, caplog)
    assert step == 6
    assert_same(state, final)
    assert any("checkpoint step 6 had no integrity.json" in w for w in warnings_of(caplog))
    assert integrity.problems(run / "checkpoints" / "6") == []
    assert step_names(run) == ["3", "6"]


def test_a_checkpoint_without_manifest_that_does_not_read_back_is_moved_aside(run, data_dir, caplog):
    (run / "checkpoints" / "6" / integrity.MANIFEST_FILE).unlink()
    truncate(largest_file(run / "checkpoints" / "6"))
    step, _ = resume(data_dir, run, caplog)
    assert step == 3
    assert any("checkpoint step 6 is damaged (orbax cannot read it" in w for w in warnings_of(caplog))
    assert step_names(run) == ["3", "damaged"]


def test_no_intact_checkpoint_exits_3_naming_each_and_moving_nothing(run, data_dir, capsys):
    from magnet_jax.train.cli import main
    overwrite_middle(largest_file(run / "checkpoints" / "6"))
    truncate(largest_file(run / "checkpoints" / "3"))
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    over = ["lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", "lm.card=64",
            f"lm.segment_duration={T / 50}", "train.batch_size=8", "train.progress=false", "train.log_every=1",
            "train.eval_every=0", "train.eval_batches=1", "optim.warmup=1", "optim.total_steps=1000",
            "mesh.devices=1", "data.prefetch=2", f"data.dir={data_dir}", *RUN]
    code = main(["train", "--config", "configs/tiny_lm.py:unconditional", "--workdir", str(run), *over])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err.count("\n") == 0 and "no intact checkpoint" in err
    assert "step 6:" in err and "step 3:" in err and "changed since it was written" in err and "truncated" in err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before        # nothing moved or deleted


# ---------------------------------------------------------------- readers: export, eval-codec

def test_export_refuses_a_damaged_checkpoint_naming_the_file(run, tmp_path, capsys):
    from magnet_jax import pipeline_cli
    from magnet_jax.cli import run as cli_run
    bad = largest_file(run / "checkpoints" / "6")
    overwrite_middle(bad)
    code = cli_run([pipeline_cli.register], ["export", "--lm-workdir", str(run), "--codec-workdir",
                                              str(tmp_path / "codec"), "--out", str(tmp_path / "model")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert bad.relative_to(run / "checkpoints" / "6").as_posix() in err and "--step" in err
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------- train-codec

def codec_config(corpus: Path, steps: int = 2) -> dict:
    """test_codec_train_resume's micro codec: checkpoints 1 and 2 (keep 2)."""
    from test_codec_train_resume import run_config
    cfg = run_config(corpus)
    cfg["train"] = dataclasses.replace(cfg["train"], steps=steps, checkpoint_every=1, log_every=1,
                                       keep_checkpoints=2)
    return cfg


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory):
    from data_pipelines.synth import write_corpus
    from magnet_jax.codec.training.loop import train_codec
    corpus = tmp_path_factory.mktemp("synth8k_faults")
    write_corpus(corpus, 6, duration=0.5, sample_rate=8000, seed=3, progress=False)
    workdir = tmp_path_factory.mktemp("codec_run") / "run"
    train_codec(codec_config(corpus), workdir)
    return corpus, workdir


def test_train_codec_moves_a_damaged_checkpoint_aside_and_resumes_the_previous(codec_run, tmp_path, caplog):
    """``train_codec`` resumes the same way: step 2 damaged, step 1 used (the rerun asks for 1
    step, so it resumes and stops: no second compile)."""
    from magnet_jax.codec.training.loop import train_codec
    corpus, workdir = codec_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    bad = largest_file(run / "checkpoints" / "2")
    rel = bad.relative_to(run / "checkpoints" / "2").as_posix()
    overwrite_middle(bad)
    with caplog.at_level(logging.WARNING):
        summary = train_codec(codec_config(corpus, steps=1), run)
    assert summary["resumed_from"] == 1 and summary["step"] == 1
    assert any("checkpoint step 2 is damaged" in w and rel in w for w in warnings_of(caplog))
    assert (run / "checkpoints" / "damaged" / "2" / rel).is_file()
    assert step_names(run) == ["1", "damaged"]


def test_eval_codec_refuses_a_damaged_checkpoint_naming_the_file(codec_run, tmp_path, capsys):
    from magnet_jax.codec.training.cli import main
    _, workdir = codec_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    truncate(bad := largest_file(run / "checkpoints" / "2"))
    code = main(["eval-codec", "--workdir", str(run), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert bad.relative_to(run / "checkpoints" / "2").as_posix() in err and "truncated" in err
