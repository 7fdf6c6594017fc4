"""Fault injection, config overrides: every bad ``key=value`` is one line naming the field and what
it wanted, before any folder is written; overrides are read anywhere after the verb; a run folder
whose first run failed before its first checkpoint takes the corrected config, one with
checkpoints still refuses another model.

Through the real entry point (``magnet_jax.cli.main``), with the tiny LM of tests/test_train.py.
"""
from __future__ import annotations

import json
import math

import pytest
from faults_common import one_error_line, run_main, token_dataset, train_cmd

from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.sampler import SamplerConfig
from magnet_jax.train.optim import OptimConfig

TINY_LM = "configs/tiny_lm.py:unconditional"

# (override, the exact error line's text after "error: ")
BAD_OVERRIDES = [
    ("lm.num_layers=2.5", "lm.num_layers expects an integer, got '2.5'"),
    ("lm.num_layers=abc", "lm.num_layers expects an integer, got 'abc'"),
    ("lm.num_layers=-1", "lm.num_layers must be >= 1, got -1"),
    ("lm.num_heads=0", "lm.num_heads must be >= 1, got 0"),
    ("optim.lr=nan", "optim.lr expects a finite number, got 'nan'"),
    ("optim.lr=-inf", "optim.lr expects a finite number, got '-inf'"),
    ("text.word_dropout=inf", "text.word_dropout expects a finite number, got 'inf'"),
    ("optim.beta2=1.5", "optim.beta2 must be in [0, 1), got 1.5"),
    ("optim.eps=0", "optim.eps must be a finite number > 0, got 0.0"),
    ("train.remat=maybe", "train.remat expects true/false, got 'maybe'"),
    ("train.stage_weights=1,x,1,1",
     "train.stage_weights expects a comma-separated tuple of numbers, got '1,x,1,1' ('x' is not a number)"),
    ("lm.sin_scale=abc", "lm.sin_scale expects a number or none, got 'abc'"),
    ("mesh.tensor=0", "mesh.tensor must be >= 1, or -1 for the remaining devices, got 0"),
    ("train.eval_batches=0",
     "train.eval_every must be >= 0 (0 = never) and train.eval_batches >= 1, got 100, 0"),
    ("optim.warmup=300", "optim.warmup 300 must be below the cosine schedule's length (train.steps 300); "
                         "lower optim.warmup or raise train.steps"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_naming_the_field(override, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    code, _, err = run_main(["train", "--config", TINY_LM, "--workdir", str(workdir), "data.dir=/nonexistent",
                             override], capsys)
    assert code == 2
    assert one_error_line(err, "train") == f"magnet-jax train: error: {message}"
    assert not workdir.exists()


@pytest.mark.parametrize("argv,verb,message", [
    (["train", "train.steps=5", "--config", TINY_LM, "data.dir=/nonexistent", "--workdir", "{w}", "lm.card=2.5"],
     "train", "lm.card expects an integer, got '2.5'"),
    (["ablate-span", "--config", TINY_LM, "lm.dim=32", "--workdir", "{w}", "--span-lens", "1,2", "train.seed=x"],
     "ablate-span", "train.seed expects an integer, got 'x'"),
    (["train-codec", "codec.n_filters=8", "--config", "configs/codec_tiny.py", "--workdir", "{w}",
      "data.segment_duration=nan"],
     "train-codec", "data.segment_duration expects a finite number, got 'nan'"),
    (["sample", "lm.dim=32", "--config", "configs/bench_lm.py", "--out", "{w}", "sampler.max_cfg_coef=nan"],
     "sample", "sampler.max_cfg_coef expects a finite number, got 'nan'"),
], ids=["train", "ablate-span", "train-codec", "sample"])
def test_overrides_are_read_anywhere_after_the_verb(argv, verb, message, tmp_path, capsys):
    """Overrides before, between and after the options all arrive: the last one is parsed (its
    error is the one reported) and none is "unrecognized"."""
    argv = [a.replace("{w}", str(tmp_path / "w")) for a in argv]
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert one_error_line(err, verb) == f"magnet-jax {verb}: error: {message}"


def test_non_finite_values_in_config_files_are_refused():
    """A config file (not an override) with NaN: refused by the dataclass itself."""
    with pytest.raises(ValueError, match=r"^lm.positional_scale must be a finite number, got nan$"):
        LMConfig(dim=32, num_heads=4, positional_scale=math.nan)
    with pytest.raises(ValueError, match=r"^optim.lr must be a finite number > 0, got inf$"):
        OptimConfig(lr=math.inf)
    for name in ("temperature", "max_cfg_coef", "min_cfg_coef", "top_p"):
        with pytest.raises(ValueError, match=rf"^{name} nan must be a finite number$"):
            SamplerConfig(**{name: math.nan}).validate(4)


def test_a_run_that_failed_before_its_first_checkpoint_takes_the_corrected_config(tmp_path, capsys):
    """The failed first try leaves config.json (it failed after writing it: a mesh that cannot
    split lm.ffn_dim); the corrected retry trains; once a checkpoint exists another model is
    refused."""
    data, workdir = token_dataset(), tmp_path / "run"
    bad = train_cmd(workdir, data, "lm.ffn_dim=66", "mesh.devices=4", "mesh.data=1", "mesh.tensor=4")
    code, _, err = run_main(bad, capsys)
    assert code == 2
    assert "lm/transformer/layers/ffn/linear1 (1, 32, 66): axis 2 of size 66 cannot be split 4 ways" in \
        one_error_line(err, "train")
    assert json.loads((workdir / "config.json").read_text())["lm"]["ffn_dim"] == 66

    code, out, err = run_main(train_cmd(workdir, data, "train.steps=1"), capsys)
    assert code == 0, err[-3000:]
    assert json.loads(out)["step"] == 1 and (workdir / "checkpoints" / "1").is_dir()
    assert json.loads((workdir / "config.json").read_text())["lm"]["ffn_dim"] == 64

    code, _, err = run_main(train_cmd(workdir, data, "train.steps=2", "lm.ffn_dim=128"), capsys)
    assert code == 2
    assert "holds a run with a different lm config (ffn_dim: 64 -> 128)" in one_error_line(err, "train")


def test_a_bad_warmup_is_refused_before_the_run_folder_exists(tmp_path, capsys):
    """The issue's case: warmup past the schedule's length failed only after writing config.json,
    so the corrected retry was refused. Now the first try writes nothing (the retry is a fresh
    run; the test above retries in a folder a failed run did write)."""
    data, workdir = token_dataset(), tmp_path / "run"
    code, _, err = run_main(train_cmd(workdir, data, "train.steps=2", "optim.warmup=1000"), capsys)
    assert code == 2 and not workdir.exists()
    assert one_error_line(err, "train") == (
        "magnet-jax train: error: optim.warmup 1000 must be below the cosine schedule's length "
        "(optim.total_steps 1000); lower optim.warmup or raise the length")
