"""``magnet-jax train-dpd``: MeLoDy's DPD trained on a frozen VAE's latents and the semantic tokens
of the same crops. The velocity loss falls; an interrupted run resumed from its checkpoint ends
bit-identical to a straight one; parts that do not fit together are refused by name.

Tiny parts: an 8 kHz VAE codec (hop 64, 125 Hz latents, 8 wide) saved in a model folder, a
log-mel + chroma tokenizer of 8 tokens at 25 Hz, a 16-wide DPD, crops of 0.32 s (40 frames)."""
import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from magnet_jax.cli import run
from magnet_jax.codec.encodec import Encodec
from magnet_jax.config_loader import load_config
from magnet_jax.melody.semantic import LogMelChroma, SemanticTokenizer
from magnet_jax.melody.training import train_dpd

TOKENS = 8


class Preempted(Exception):
    pass


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from data_pipelines.synth import write_corpus
    from magnet_jax.models.conversion import _write_converted
    from magnet_jax.lm.checkpoint import save_lm
    from magnet_jax.melody.semantic_lm import semantic_lm, semantic_lm_config
    from magnet_jax.models.sources import FORMAT
    root = tmp_path_factory.mktemp("dpd")
    corpus = root / "synth"
    write_corpus(corpus, 4, duration=1.0, sample_rate=8000, seed=2, progress=False)
    codec_cfg = load_config("configs/melody_tiny.py")["codec"].replace(n_filters=2, ratios=(4, 4, 4), lstm=0,
                                                                       sample_rate=8000)
    codec = Encodec(codec_cfg, rngs=nnx.Rngs(0))
    lm = semantic_lm(semantic_lm_config(TOKENS, frame_rate=25, segment_duration=1.0, dim=16, num_heads=2,
                                        num_layers=1, cross_attention=False), rngs=nnx.Rngs(1))
    meta = {"format": FORMAT, "kind": "melody", "source": "test", "lm": dataclasses.asdict(lm.cfg),
            "codec": dataclasses.asdict(codec_cfg), "text": None}
    vae = _write_converted(root / "vae", meta, lm, codec, None, save_lm)
    import soundfile as sf
    audio = np.stack([sf.read(p, dtype="float32")[0][:8000] for p in sorted((corpus / "audio").glob("*.wav"))])
    tok = SemanticTokenizer.fit(jax.random.key(0), LogMelChroma(8000, 320, 512, 16), audio, TOKENS, iters=10)
    tok.save(root / "semantic.npz")
    return {"corpus": corpus, "vae": vae, "tokenizer": root / "semantic.npz"}


def config(parts, **train):
    cfg = load_config("configs/melody_tiny.py:dpd", [
        f"melody.vae={parts['vae']}", f"melody.semantic_tokenizer={parts['tokenizer']}", f"data.dir={parts['corpus']}",
        "data.segment_duration=0.32", "dpd.dim=16", "dpd.num_heads=2", "dpd.ffn_dim=32", "dpd.num_blocks=1",
        f"dpd.semantic_vocab={TOKENS}", "train.batch_size=4", "train.progress=false", "train.async_checkpoint=false",
        "optim.warmup=1", "optim.lr=3e-3", "mesh.devices=1"])
    cfg["train"] = dataclasses.replace(cfg["train"], **train)
    return cfg


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def _same_leaves(a, b) -> None:
    """Equal trees up to key types (orbax restores the integer keys of a layer list as strings)."""
    flat = lambda t: {tuple(str(getattr(k, "key", k)) for k in path): np.asarray(v)      # noqa: E731
                      for path, v in jax.tree_util.tree_flatten_with_path(t)[0]}
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=str(k))


def test_the_velocity_loss_falls(parts, tmp_path):
    summary = train_dpd(config(parts, steps=40, log_every=5, checkpoint_every=40), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert summary["step"] == 40 and len(losses) == 8 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    assert (tmp_path / "run" / "losses.png").is_file()


def test_an_interrupted_run_resumes_bit_identical(parts, tmp_path):
    straight = train_dpd(config(parts, steps=6, log_every=3, checkpoint_every=3), tmp_path / "straight")

    def preempt(step):
        if step == 4:
            raise Preempted
    with pytest.raises(Preempted):
        train_dpd(config(parts, steps=6, log_every=3, checkpoint_every=3), tmp_path / "resumed", on_step=preempt)
    resumed = train_dpd(config(parts, steps=6, log_every=3, checkpoint_every=3), tmp_path / "resumed")
    assert resumed["resumed_from"] == 3 and resumed["step"] == 6
    jax.tree.map(np.testing.assert_array_equal, _host(straight["state"]), _host(resumed["state"]))
    other = config(parts, steps=6, log_every=3, checkpoint_every=3)
    other["dpd"] = dataclasses.replace(other["dpd"], dim=32)
    with pytest.raises(ValueError, match="dpd"):
        train_dpd(other, tmp_path / "resumed")
    # a run begun before DPDConfig.conditioning existed added its tokens: resuming it with the new
    # default (cross-attention) is refused by name, not restored into the wrong network
    path = tmp_path / "resumed" / "config.json"
    saved = json.loads(path.read_text())
    del saved["dpd"]["conditioning"]
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="conditioning: None -> cross"):
        train_dpd(config(parts, steps=6, log_every=3, checkpoint_every=3), tmp_path / "resumed")


@pytest.mark.parametrize("override,message", [
    ("data.segment_duration=0.3", "needs a multiple of 20"),
    (f"dpd.semantic_vocab={TOKENS + 1}", f"the tokenizer has {TOKENS} tokens"),
    ("dpd.latent_dim=4", "the VAE's latents are 8 wide"),
    ("melody.semantic_tokenizer=/nonexistent.npz", "does not exist"),
])
def test_parts_that_do_not_fit_are_refused_by_name(parts, tmp_path, capsys, override, message):
    args = ["train-dpd", "--config", "configs/melody_tiny.py:dpd", "--workdir", str(tmp_path / "w"),
            f"melody.vae={parts['vae']}", f"melody.semantic_tokenizer={parts['tokenizer']}",
            f"data.dir={parts['corpus']}", "data.segment_duration=0.32", f"dpd.semantic_vocab={TOKENS}",
            "train.steps=2", "optim.warmup=1", "mesh.devices=1", override]
    assert run(None, args) == 2
    assert message in capsys.readouterr().err


def test_three_trained_parts_export_as_one_model_that_generates_from_text(parts, tmp_path, capsys):
    """train (semantic LM on tokenize --semantic-tokenizer records with MiniLM states) + train-dpd
    + the VAE -> export-melody -> generate --model: the folder holds the trained weights."""
    tokens = tmp_path / "tokens" / "magnet_tokens" / "1.0.0"
    assert run(None, ["tokenize", str(parts["corpus"]), "--out", str(tokens), "--semantic-tokenizer",
                      str(parts["tokenizer"]), "--text-encoder", "minilm", "--segment-duration", "1.0",
                      "--batch-size", "2", "--no-progress"]) == 0
    lm_run, dpd_run = tmp_path / "lm", tmp_path / "dpd"
    assert run(None, ["train", "--config", "configs/melody_tiny.py:semantic_lm", "--workdir", str(lm_run),
                      f"data.dir={tokens}", f"lm.card={TOKENS}", "lm.segment_duration=1.0", "lm.dim=16",
                      "lm.num_heads=2", "lm.num_layers=1", "lm.ffn_dim=32", "train.steps=2", "train.batch_size=4",
                      "mesh.devices=1", "train.checkpoint_every=2", "train.eval_every=0", "train.progress=false",
                      "optim.warmup=1"]) == 0
    dpd_cfg = config(parts, steps=2, log_every=1, checkpoint_every=2)
    train_dpd(dpd_cfg, dpd_run)
    out = tmp_path / "melody"
    assert run(None, ["export-melody", "--vae", str(parts["vae"]), "--semantic-lm-workdir", str(lm_run),
                      "--dpd-workdir", str(dpd_run), "--out", str(out)]) == 0
    from magnet_jax.export import restore_lm_params, restore_run_params
    from magnet_jax.models import load_model
    model = load_model(str(out))
    _, lm_params, _ = restore_lm_params(lm_run)
    got = nnx.to_pure_dict(nnx.state(model.semantic_lm, nnx.Param))
    _same_leaves(got, lm_params["lm"])
    _, dpd_params, _ = restore_run_params(dpd_run, "dpd", "train-dpd", None, lambda s: s["params"])
    _same_leaves(nnx.to_pure_dict(nnx.state(model.dpd, nnx.Param)), dpd_params)
    assert model.window_seconds == 0.32 and model.conditioner is not None
    wavs = tmp_path / "wavs"
    assert run(None, ["generate", "--model", str(out), "--prompt", "a marimba melody", "--out", str(wavs),
                      "--diffusion-steps", "2"]) == 0
    assert (wavs / "000_a_marimba_melody.wav").is_file()
    # an LM of another family is refused by name
    capsys.readouterr()
    assert run(None, ["export-melody", "--vae", str(parts["vae"]), "--semantic-lm-workdir", str(dpd_run),
                      "--dpd-workdir", str(dpd_run), "--out", str(tmp_path / "bad")]) == 2
    assert "no 'lm' section" in capsys.readouterr().err
