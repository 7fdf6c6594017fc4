"""``magnet-jax export``: a `train` workdir + a `train-codec` workdir become one model folder that
``MAGNeT.from_pretrained`` loads and generates with, holding exactly the trained weights.

Both runs are the tests' micro sizes (a 2-filter 8 kHz codec at 200 Hz frames, a dim-32 LM with
MiniLM text), a couple of steps each: the point is the plumbing, checked against the
checkpoints' own arrays.
"""
import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from magnet_jax.cli import run
from magnet_jax.config_loader import load_config
from magnet_jax.export import ExportError, export_trained, restore_lm_params
from magnet_jax.models import MAGNeT
from magnet_jax.train.data import pattern_codes, write_token_dataset
from magnet_jax.train.loop import train

FRAME_RATE = 200          # 8 kHz / hop 40
T = 20                    # 0.1 s


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    from data_pipelines.synth import write_corpus
    from magnet_jax.codec.training.loop import train_codec
    from test_codec_train import micro_config
    root = tmp_path_factory.mktemp("export")
    corpus = write_corpus(root / "synth", 4, duration=0.5, sample_rate=8000, seed=5, progress=False).parent
    cfg = micro_config()
    cfg["codec"] = dataclasses.replace(cfg["codec"], ratios=(5, 8), encoder="spectrogram",
                                       decoder="oscillators")  # as the default model
    cfg["data"] = dataclasses.replace(cfg["data"], dir=str(corpus), segment_duration=0.1, valid_percent=0.0)
    cfg["train"] = dataclasses.replace(cfg["train"], steps=2, batch_size=2, checkpoint_every=2, eval_every=0,
                                       progress=False)
    train_codec(cfg, root / "codec")

    rng = np.random.default_rng(0)
    tokens = write_token_dataset(root / "tokens", {"train": pattern_codes(rng, 8, 2, T + 4, 8)},
                                 frame_rate=FRAME_RATE, card=8)
    lm_cfg = load_config("configs/tiny_lm.py", [
        "lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", "lm.card=8", "lm.n_q=2",
        f"lm.frame_rate={FRAME_RATE}", f"lm.segment_duration={T / FRAME_RATE}", "train.batch_size=4",
        "train.steps=2", "train.progress=false", "train.eval_every=0", "train.checkpoint_every=2",
        "optim.warmup=1", "optim.total_steps=100", "mesh.devices=1", "data.valid_split=", "text.max_tokens=16",
        f"data.dir={tokens}"])
    train(lm_cfg, root / "lm")
    return root


def test_exported_folder_holds_the_trained_weights_and_generates(workdirs, tmp_path):
    assert run_export(workdirs, tmp_path / "model") == 0
    model = MAGNeT.from_pretrained(str(tmp_path / "model"), mesh=None)
    _, params, _ = restore_lm_params(workdirs / "lm")
    lm = nnx.merge(model.sampler.graphdef, model.sampler.state)
    got = nnx.to_pure_dict(nnx.state(lm, nnx.Param))
    assert jax.tree.structure(got) == jax.tree.structure(params["lm"])
    for a, b in zip(jax.tree.leaves(params["lm"]), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)
    meta = json.loads((tmp_path / "model" / "magnet.json").read_text())
    assert meta["text"]["encoder"] == "minilm" and meta["trained"] == {"lm_step": 2, "ema": True}
    assert meta["codec"]["encoder"] == "spectrogram" and model.codec.cfg.encoder == "spectrogram"
    out = model.generate(["an organ melody", "drums"], seed=0)
    assert out.tokens.shape[:2] == (2, 2) and out.audio.shape[:2] == (2, 1)
    assert np.all(np.isfinite(out.audio))


def test_a_codec_that_does_not_fit_the_lm_is_refused(workdirs, tmp_path):
    config = json.loads((workdirs / "lm" / "config.json").read_text())
    config["lm"]["card"] = 16
    other = tmp_path / "lm"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    (other / "checkpoints").symlink_to(workdirs / "lm" / "checkpoints")
    with pytest.raises(ExportError, match="do not make one model"):
        export_trained(other, workdirs / "codec", tmp_path / "model")


def test_a_folder_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="not a `magnet-jax train` workdir"):
        export_trained(tmp_path, tmp_path, tmp_path / "model")


def test_generation_defaults_given_to_export_are_stored_and_used(workdirs, tmp_path):
    assert run_export(workdirs, tmp_path / "model", "--generation", "temperature=1.5",
                      "--generation", "decoding_steps=4,2") == 0
    meta = json.loads((tmp_path / "model" / "magnet.json").read_text())
    assert meta["generation"] == {"decoding_steps": [4, 2], "temperature": 1.5}
    model = MAGNeT.from_pretrained(str(tmp_path / "model"), mesh=None)
    assert model.generation_params.temperature == 1.5 and model.generation_params.decoding_steps == (4, 2)


def test_an_unknown_generation_setting_is_refused(workdirs, tmp_path, capsys):
    assert run_export(workdirs, tmp_path / "model", "--generation", "temprature=1.5") == 2
    assert "temperature" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_the_codec_may_come_from_a_converted_model_folder(workdirs, tmp_path):
    """An LM trained on tokens of a shipped model's codec (``tokenize --codec-weights FOLDER``)
    exports with that folder as its codec: the new folder holds the train-codec checkpoint's
    weights, as the first export did."""
    from magnet_jax.codec.training.evaluation_run import trained_codec

    assert run_export(workdirs, tmp_path / "first") == 0
    export_trained(workdirs / "lm", tmp_path / "first", tmp_path / "second")
    _, trained = trained_codec(workdirs / "codec")
    again = MAGNeT.from_pretrained(str(tmp_path / "second"), mesh=None).codec.model
    want, got = nnx.to_pure_dict(nnx.state(trained)), nnx.to_pure_dict(nnx.state(again))
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ExportError, match="drop --codec-step"):
        export_trained(workdirs / "lm", tmp_path / "first", tmp_path / "third", codec_step=2)


def run_export(workdirs, out, *extra: str) -> int:
    from magnet_jax import pipeline_cli
    return run([pipeline_cli.register], ["export", "--lm-workdir", str(workdirs / "lm"),
                                          "--codec-workdir", str(workdirs / "codec"), "--out", str(out), *extra])
