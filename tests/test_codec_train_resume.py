"""train-codec end to end: an interrupted run resumed from its checkpoint ends bit-identical to an
uninterrupted one (state, data position and random draws all restored), the workdir holds the
files the loop promises, and resuming a workdir with another codec is refused.

The micro codec of ``test_codec_train`` (8 kHz, 2 filters, a one-scale discriminator) on six
half-second synthetic clips, so the whole test runs in well under a minute on 2 cores.
"""
import dataclasses
import json

import jax
import numpy as np
import pytest

from data_pipelines.synth import write_corpus
from magnet_jax.codec.training.loop import train_codec
from test_codec_train import micro_config


class Preempted(Exception):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth8k")
    write_corpus(out, 6, duration=0.5, sample_rate=8000, seed=3, progress=False)
    return out


def run_config(corpus) -> dict:
    cfg = micro_config()
    cfg["data"] = dataclasses.replace(cfg["data"], dir=str(corpus), segment_duration=0.1, valid_percent=0.0)
    cfg["train"] = dataclasses.replace(cfg["train"], steps=6, batch_size=2, checkpoint_every=3, log_every=3,
                                       eval_every=0, keep_checkpoints=3, async_checkpoint=False, progress=False)
    return cfg


def _host(state: dict) -> dict:
    return jax.tree.map(np.asarray, state)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(corpus, tmp_path):
    straight = train_codec(run_config(corpus), tmp_path / "straight")

    def preempt(step: int) -> None:
        if step == 4:                       # after the step-3 checkpoint, before the step-6 one
            raise Preempted
    with pytest.raises(Preempted):
        train_codec(run_config(corpus), tmp_path / "resumed", on_step=preempt)
    resumed = train_codec(run_config(corpus), tmp_path / "resumed")

    assert resumed["resumed_from"] == 3 and resumed["step"] == straight["step"] == 6
    a, b = _host(straight["state"]), _host(resumed["state"])
    jax.tree.map(np.testing.assert_array_equal, a, b)
    for name in ("config.json", "metrics.jsonl", "summary.json", "losses.png"):
        assert (tmp_path / "resumed" / name).is_file(), name
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [3, 6]

    other = run_config(corpus)
    other["codec"] = dataclasses.replace(other["codec"], n_filters=4)
    with pytest.raises(ValueError, match="different codec config"):
        train_codec(other, tmp_path / "resumed")


def test_a_run_from_before_a_new_loss_field_resumes_while_it_keeps_its_default(tmp_path):
    """config.json written before ``losses.log_mel`` existed: resuming with log_mel at its
    default (0, how that run trained) is accepted; turning it on is refused by name."""
    from magnet_jax.codec.training.config import LossConfig
    from magnet_jax.train.loop import check_or_write_run_config, field_defaults
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)      # the run has trained state to protect
    config = {"losses": LossConfig()}
    now = {"losses": dataclasses.asdict(LossConfig())}
    stored = {"losses": {k: v for k, v in json.loads(json.dumps(now["losses"])).items() if k != "log_mel"}}
    (tmp_path / "config.json").write_text(json.dumps(stored))
    check_or_write_run_config(tmp_path, now, ("losses",), field_defaults(config))
    (tmp_path / "config.json").write_text(json.dumps(stored))
    changed = {"losses": dataclasses.asdict(LossConfig(log_mel=1.0))}
    with pytest.raises(ValueError, match="log_mel: None -> 1.0"):
        check_or_write_run_config(tmp_path, changed, ("losses",), field_defaults(config))


@pytest.mark.parametrize("encoder,decoder", [("seanet", "seanet"), ("spectrogram", "oscillators")])
def test_eval_codec_reports_reconstruction_and_token_statistics(corpus, tmp_path, encoder, decoder):
    """``magnet-jax eval-codec`` on a finished run: a row per n_q, the tokens' statistics per
    codebook, the spectrogram PNG; for both encoder / decoder pairs (training included)."""
    from magnet_jax.cli import run
    cfg = run_config(corpus)
    cfg["codec"] = dataclasses.replace(cfg["codec"], encoder=encoder, decoder=decoder)
    cfg["data"] = dataclasses.replace(cfg["data"], valid_percent=50.0)
    cfg["train"] = dataclasses.replace(cfg["train"], steps=2, checkpoint_every=2)
    train_codec(cfg, tmp_path / "run")
    assert run(None, ["eval-codec", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "eval"),
                "--clips", "2", "--duration", "0.2", "--no-music"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [r["n_q"] for r in report["rows"]] == [1, 2] and report["clips"] == 2
    assert [t["codebook"] for t in report["tokens"]] == [0, 1]
    for t in report["tokens"]:
        assert 0.0 <= t["repeat_previous"] <= 1.0 and 1 <= t["codes_used"] <= 8
        assert 0.0 <= t["entropy_nats"] <= t["max_entropy_nats"] + 1e-9
    assert (tmp_path / "eval" / "spectrograms.png").is_file()


def test_eval_codec_hears_whether_a_reconstruction_keeps_the_instrument():
    """The timbre rows of ``evaluate(music=True)`` against the clips' labels: five rendered clips,
    one per instrument. An identity "codec" agrees with the labels exactly as the originals do
    (n_q = 0); a "codec" that returns each clip's neighbour (another instrument, other drums)
    agrees on no instrument, although its chroma is that of real music."""
    import jax.numpy as jnp
    from data_pipelines.synth import INSTRUMENTS, PATTERNS, ClipAttributes, labels_dict, render_clip
    from magnet_jax.codec.training.config import LossConfig
    from magnet_jax.codec.training.evaluate import evaluate
    sr = 16000
    attrs = [ClipAttributes(instrument=inst, drums=i % 2 == 0, tonic="C", mode="major", bpm=100,
                            pattern=PATTERNS[i % 3], dynamics="medium", progression=(0, 3, 4, 0))
             for i, inst in enumerate(INSTRUMENTS)]
    audio = np.stack([render_clip(a, 4.0, sr, np.random.default_rng(i)) for i, a in enumerate(attrs)])
    neighbour = lambda params, a, k: a if k == 1 else jnp.roll(a, 1, axis=0)      # noqa: E731
    rows, _ = evaluate(neighbour, {}, audio[:, None].astype(np.float32), 2, sr, LossConfig(), batch_size=5,
                       labels=[labels_dict(a) for a in attrs], music=True)
    original, identity, shifted = rows
    timbre = ("instrument_agree", "drums_agree", "pattern_agree")
    assert original["instrument_agree"] == 1.0 and original["drums_agree"] == 1.0
    assert {k: identity[k] for k in timbre} == {k: original[k] for k in timbre}
    assert shifted["instrument_agree"] == 0.0 and shifted["drums_agree"] <= 0.2
