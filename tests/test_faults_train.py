"""Fault injection, training runs: a model that does not fit the data is refused by name before
anything is built; SIGTERM / SIGINT saves and exits 75 (EXIT_PREEMPTED) so a scheduler can tell a
preemption from a finished run; a run stopped by non-finite losses exits 3 (EXIT_FAILED), the
span ablation included.

Through the real entry point (``magnet_jax.cli.main``) in this process; the signal comes from a
thread that waits for the first metrics row, so it lands inside the training loop, as a
scheduler's would.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from faults_common import one_error_line, run_main, tiny_train, token_dataset, train_cmd

from data_pipelines.synth import write_corpus
from magnet_jax.cli import EXIT_FAILED, EXIT_PREEMPTED

TINY_LM = "configs/tiny_lm.py:unconditional"


@pytest.mark.parametrize("override,message", [
    ("lm.card=32", "lm.card=32 is smaller than the codebook size 64 of {data} (codec synthetic): its token ids "
                   "would run past the model's embedding table; set lm.card=64"),
    ("lm.n_q=2", "lm.n_q=2 but {data} holds 4 codebooks per frame (codec synthetic); set lm.n_q=4 (and "
                 "train.stage_weights to 4 entries if set), or tokenize with a codec of 2 codebooks"),
    ("lm.frame_rate=25", "lm.frame_rate=25 but {data} has 50 frames per second (codec synthetic); set "
                         "lm.frame_rate=50 (lm.segment_duration stays in seconds)"),
], ids=["card", "n_q", "frame_rate"])
def test_a_model_that_does_not_fit_the_data_is_refused_by_name(override, message, tmp_path, capsys):
    data = token_dataset()
    code, _, err = run_main(train_cmd(tmp_path / "run", data, override), capsys)
    assert code == 2
    assert one_error_line(err, "train") == "magnet-jax train: error: " + message.format(data=data)
    assert not (tmp_path / "run").exists()


def _signal_after_first_row(workdir: Path, signum: int, running: threading.Event) -> threading.Thread:
    """A thread that sends ``signum`` to this process once ``workdir/metrics.jsonl`` holds a train
    row (written inside the loop, under its signal guard), unless the run has ended."""
    def wait_then_signal() -> None:
        path = workdir / "metrics.jsonl"
        deadline = time.time() + 600
        while running.is_set() and time.time() < deadline:
            if path.exists() and '"split": "train"' in path.read_text():
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.01)
    thread = threading.Thread(target=wait_then_signal, daemon=True)
    thread.start()
    return thread


def _run_until_signalled(argv: list[str], workdir: Path, signum: int, capsys) -> tuple[int, dict]:
    running = threading.Event()
    running.set()
    watcher = _signal_after_first_row(workdir, signum, running)
    try:
        code, out, err = run_main(argv, capsys)
    finally:
        running.clear()
        watcher.join()
    assert out.strip(), err[-3000:]
    return code, json.loads(out.strip().splitlines()[-1])


def test_sigterm_during_train_saves_and_exits_preempted(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = train_cmd(workdir, token_dataset(), "train.steps=100000")
    code, summary = _run_until_signalled(argv, workdir, signal.SIGTERM, capsys)
    assert code == EXIT_PREEMPTED == 75
    assert summary["preempted"] and summary["stopped"] == f"signal {int(signal.SIGTERM)}: saved step {summary['step']}"
    assert 1 <= summary["step"] < 100 and (workdir / "checkpoints" / str(summary["step"])).is_dir()


def test_sigint_during_train_codec_saves_and_exits_preempted(tmp_path, capsys):
    corpus = tmp_path / "audio"
    write_corpus(corpus, 4, duration=0.5, sample_rate=8000, seed=3, progress=False)
    config = tmp_path / "micro_codec.py"          # tests/test_codec_train.py's micro codec as a config file
    config.write_text("from test_codec_train import micro_config\n\n\ndef get_config():\n    return micro_config()\n")
    workdir = tmp_path / "codec"
    argv = ["train-codec", "--config", str(config), "--workdir", str(workdir), f"data.dir={corpus}",
            "data.segment_duration=0.1", "data.valid_percent=0", "train.steps=100000", "train.batch_size=2",
            "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=100000", "train.progress=false",
            "train.async_checkpoint=false", "losses.adv=0", "losses.feat=0", "quantizer.kmeans_init=false"]
    code, summary = _run_until_signalled(argv, workdir, signal.SIGINT, capsys)
    assert code == EXIT_PREEMPTED
    assert summary["preempted"] and summary["stopped"] == f"signal {int(signal.SIGINT)}: saved step {summary['step']}"
    assert (workdir / "checkpoints" / str(summary["step"])).is_dir()


def test_non_finite_losses_exit_failed_from_train_and_from_the_span_ablation(tmp_path, capsys):
    data = token_dataset()
    poison = ("train.inject_nan_steps=1,2", "train.max_nonfinite=2", "train.eval_every=2")
    code, _, err = run_main(train_cmd(tmp_path / "run", data, *poison), capsys)
    assert code == EXIT_FAILED == 3
    assert "stopped at step 2: 2 non-finite steps in a row (train.max_nonfinite=2)" in err
    argv = ["ablate-span", "--config", TINY_LM, "--workdir", str(tmp_path / "span"), "--span-lens", "3",
            *tiny_train(data, *poison)]
    code, _, err = run_main(argv, capsys)
    assert code == EXIT_FAILED
    assert err.strip().splitlines()[-1].startswith(
        "magnet-jax ablate-span: stopped at step 2: 2 non-finite steps in a row (train.max_nonfinite=2)")
