"""Training MusicGen on the shared train loop.

- the loss equals audiocraft's MusicGen solver loss (``compute_predictions`` + ``_compute_cross_entropy``)
  on the same weights and batch: an LMModel built by audiocraft from the composed musicgen-small
  config (scale shrunk, tests/family_reference.py), exported and converted; text through the train
  step's own projection; with padding; with the whole batch's condition dropped (audiocraft's null
  condition), and CFG dropout drawn once per batch;
- the per-codebook cross-entropy / accuracy against audiocraft's ``_compute_cross_entropy`` and numpy;
- a tiny MusicGen learns a pattern corpus (tests/test_train.py's data helpers), logging per codebook;
- an interrupted, resumed run is bit-identical to an uninterrupted one;
- ``export`` of the trained run (with the shipped model's codec) loads as a MusicGen and generates.
"""
from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from audiocraft_configs import MUSICGEN_FAMILIES, family_xp, shrink
from family_reference import _save_and_export, build_reference_lm
from pipeline_reference import randomize_lm
from test_train import leaves_equal, minilm, rows  # noqa: F401 - minilm is a fixture
from magnet_jax.config_loader import load_config
from magnet_jax.lm.ar_objective import codebook_cross_entropy
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.train.config import TextConfig, TrainConfig
from magnet_jax.train.data import pattern_codes, write_token_dataset
from magnet_jax.train.loop import make_loss_fn, train
from magnet_jax.train.state import TrainModel

SMALL = MUSICGEN_FAMILIES["facebook/musicgen-small"]
TEXTS = ["jazzy piano chords", "heavy metal with double kick drums", "a"]
T = 24                      # frames of the tiny runs: 0.48 s at 50 Hz


# ---------------------------------------------------------------- the loss against audiocraft

@pytest.fixture(scope="module")
def reference_pair(tmp_path_factory):
    """audiocraft's LMModel (musicgen-small's composed config, scale shrunk, random weights) and
    ours holding the same weights, read from the state_dict.bin audiocraft's exporter wrote."""
    torch = reference.require("torch")
    export = reference.require("audiocraft.utils.export")
    from magnet_jax.lm.convert import load_audiocraft_lm
    from magnet_jax.text.conditioner import TextConditioner, load_output_proj
    xp = family_xp(SMALL, shrink())
    torch.manual_seed(0)
    ref = build_reference_lm(xp, SMALL)
    randomize_lm(ref)
    path = tmp_path_factory.mktemp("musicgen_lm") / "state_dict.bin"
    _save_and_export(export.export_lm, {"best_state": {"model": ref.state_dict()}, "fsdp_best_state": None,
                                        "xp.cfg": xp}, path)
    cfg, lm, cond_state = load_audiocraft_lm(path, frame_rate=50)
    assert isinstance(cfg, MusicGenConfig) and cfg.delays == (0, 1, 2, 3)
    text = TextConditioner(SMALL.t5_width, cfg.dim, nnx.Rngs(0))
    load_output_proj(text, cond_state, "condition_provider.conditioners.description.output_proj")
    return ref, cfg, TrainModel(lm, text)


def _text_batch(ref, attrs):
    """The frozen T5's states and mask for ``attrs`` (what the train step's batch carries) and the
    condition tensors audiocraft's provider makes of them (T5 -> output_proj -> mask)."""
    import torch
    tokenized = ref.condition_provider.tokenize(attrs)
    with torch.no_grad():
        tensors = ref.condition_provider(tokenized)
        inputs = tokenized["description"]
        hidden = ref.condition_provider.conditioners["description"].t5(**inputs).last_hidden_state
    return hidden.numpy(), inputs["attention_mask"].numpy().astype(bool), tensors


def reference_loss(ref, codes: np.ndarray, padding: np.ndarray, tensors) -> tuple[float, np.ndarray]:
    """audiocraft's MusicGenSolver.run_step loss: compute_predictions, then padding & pattern mask
    into _compute_cross_entropy (which uses nothing of the solver but its arguments)."""
    import torch
    solver = reference.require("audiocraft.solvers.musicgen")
    codes_t = torch.as_tensor(codes)
    with torch.no_grad():
        out = ref.compute_predictions(codes_t, [], tensors)
        mask = torch.as_tensor(padding)[:, None, :].expand_as(codes_t) & out.mask
        ce, per_codebook = solver.MusicGenSolver._compute_cross_entropy(None, out.logits, codes_t, mask)
    return float(ce), np.array([float(c) for c in per_codebook])


def our_loss(model: TrainModel, cfg: MusicGenConfig, batch: dict, cfg_dropout: float):
    """The train step's loss function (``loop.make_loss_fn``) on these weights and this batch:
    key -> (loss, cross-entropy per codebook)."""
    graphdef, state = nnx.split(model, nnx.Param)
    config = {"lm": cfg, "train": TrainConfig(), "text": TextConfig(cfg_dropout=cfg_dropout)}
    loss_fn = jax.jit(make_loss_fn(graphdef, config, text=True))
    params, batch = nnx.to_pure_dict(state), jax.tree.map(jnp.asarray, batch)

    def run(key: int = 0) -> tuple[float, np.ndarray]:
        with jax.default_matmul_precision("highest"):
            loss, out = loss_fn(params, batch, jax.random.key(key), 0.0)
        return float(loss), np.asarray(out.ce_per_codebook)
    return run


@pytest.mark.parametrize("case", ["full", "padded", "null_condition"])
def test_loss_equals_audiocraft(reference_pair, case):
    """Loss and per-codebook cross-entropy within 1e-5 relative of audiocraft's, CFG dropout off
    (or certain: every condition nulled, against audiocraft's ClassifierFreeGuidanceDropout(p=1))."""
    conditioners = reference.require("audiocraft.modules.conditioners")
    ref, cfg, model = reference_pair
    B, K, frames = len(TEXTS), cfg.n_q, 20
    codes = np.random.default_rng(1).integers(0, cfg.card, size=(B, K, frames))
    padding = np.ones((B, frames), bool)
    if case == "padded":        # row 2 has fewer frames than the largest delay: codebook 3 has no target there
        padding[1, 15:], padding[2, 2:] = False, False
    attrs = [conditioners.ConditioningAttributes(text={"description": t}) for t in TEXTS]
    hidden, mask, tensors = _text_batch(ref, attrs)
    if case == "null_condition":
        _, _, tensors = _text_batch(ref, conditioners.ClassifierFreeGuidanceDropout(p=1.0)(attrs))
    want, want_per = reference_loss(ref, codes, padding, tensors)
    batch = {"codes": codes.astype(np.int32), "padding_mask": padding, "text_hidden": hidden, "text_mask": mask}
    got, got_per = our_loss(model, cfg, batch, cfg_dropout=1.0 if case == "null_condition" else 0.0)()
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    np.testing.assert_allclose(got_per, want_per, rtol=1e-5)


def test_cfg_dropout_is_one_draw_for_the_whole_batch(reference_pair):
    """At p = 0.5 each step's loss is either the conditioned batch's or the all-null batch's, never
    a mix of rows (audiocraft's ClassifierFreeGuidanceDropout draws once per batch)."""
    conditioners = reference.require("audiocraft.modules.conditioners")
    ref, cfg, model = reference_pair
    codes = np.random.default_rng(2).integers(0, cfg.card, size=(len(TEXTS), cfg.n_q, 12)).astype(np.int32)
    attrs = [conditioners.ConditioningAttributes(text={"description": t}) for t in TEXTS]
    hidden, mask, _ = _text_batch(ref, attrs)
    batch = {"codes": codes, "padding_mask": np.ones(codes[:, 0].shape, bool), "text_hidden": hidden, "text_mask": mask}
    conditioned, null = our_loss(model, cfg, batch, 0.0)()[0], our_loss(model, cfg, batch, 1.0)()[0]
    assert abs(conditioned - null) > 1e-3
    half = our_loss(model, cfg, batch, 0.5)
    kinds = []
    for key in range(12):
        loss = half(key)[0]
        match = [name for name, value in (("cond", conditioned), ("null", null)) if abs(loss - value) <= 1e-5 * abs(value)]
        assert len(match) == 1, (loss, conditioned, null)
        kinds += match
    assert set(kinds) == {"cond", "null"}, kinds


def test_codebook_cross_entropy_and_accuracy():
    """Against audiocraft's _compute_cross_entropy (torch's cross_entropy per codebook over the
    mask) and a numpy accuracy, on logits where the argmax is often right (5 classes)."""
    torch = reference.require("torch")
    solver = reference.require("audiocraft.solvers.musicgen")
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 5, size=(4, 3, 30))
    hinted = 2.0 * np.eye(5)[targets] * (rng.random(targets.shape) < 0.5)[..., None]   # argmax often right
    logits = (rng.normal(size=(4, 3, 30, 5)) + hinted).astype(np.float32)
    weights = rng.random(targets.shape) < 0.6
    _, want = solver.MusicGenSolver._compute_cross_entropy(None, torch.as_tensor(logits), torch.as_tensor(targets),
                                                           torch.as_tensor(weights))
    ce, acc = codebook_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(np.asarray(ce), [float(c) for c in want], rtol=1e-6)
    hits = logits.argmax(-1) == targets
    want_acc = [hits[:, k][weights[:, k]].mean() for k in range(3)]
    np.testing.assert_allclose(np.asarray(acc), want_acc, rtol=1e-6)
    assert 0.2 < min(want_acc) and max(want_acc) < 0.9


# ---------------------------------------------------------------- training on the loop

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """test_train's pattern corpus, at the tiny config's 256 codes (the shipped codec's, for the export)."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("mg_tokens") / "magnet_tokens" / "1.0.0"
    return str(write_token_dataset(out, {"train": pattern_codes(rng, 32, 4, 40, 256),
                                         "valid": pattern_codes(rng, 8, 4, 40, 256)}, card=256))


def tiny(data_dir: str, *overrides: str, text: bool = False) -> dict:
    base = ["lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", f"lm.segment_duration={T / 50}",
            "train.batch_size=8", "train.progress=false", "train.log_every=1", "train.eval_every=0",
            "train.eval_batches=1", "train.steps=6", "train.checkpoint_every=100", "optim.warmup=1",
            "optim.total_steps=1000", "mesh.devices=1", "data.prefetch=2", f"data.dir={data_dir}"]
    if text:
        base += ["text.max_tokens=16", "text.word_dropout=0.3", "text.cfg_dropout=0.3"]
    return load_config("configs/tiny_musicgen.py" + ("" if text else ":unconditional"), base + list(overrides))


def test_tiny_musicgen_learns_the_pattern_corpus(data_dir, tmp_path):
    cfg = tiny(data_dir, "lm.num_layers=2", "train.steps=120", "train.log_every=20", "train.eval_every=120",
               "optim.lr=3e-3", "optim.warmup=10", "optim.total_steps=0")
    summary = train(cfg, tmp_path)
    train_rows = rows(tmp_path)
    losses = [r["loss"] for r in train_rows]
    assert summary["family"] == "musicgen" and summary["step"] == 120 and len(losses) == 6
    # from ~ln(256) = 5.5 nats; the motifs repeat, so a model that learned them is far below
    assert losses[0] > 4.5 and losses[-1] < 0.35 * losses[0], losses
    last = train_rows[-1]
    assert last["accuracy"] > 0.5 and not any(k.startswith("loss_stage") for k in last)
    assert np.mean([last[f"loss_codebook{k}"] for k in range(4)]) == pytest.approx(last["loss"], rel=1e-5)
    valid = rows(tmp_path, "valid")[-1]
    assert valid["ce"] == pytest.approx(np.mean([valid[f"ce_codebook{k}"] for k in range(4)]))
    assert valid["ce"] < 0.6 * losses[0] and valid["weights"] == "ema"
    assert json.loads((tmp_path / "config.json").read_text())["lm"]["family"] == "musicgen"


# ---------------------------------------------------------------- resume, export, generate

OVER = ("train.steps=8", "train.checkpoint_every=3", "train.keep_checkpoints=2", "optim.optimizer=dadam",
        "optim.lr=1.0")


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory, minilm):
    """8 uninterrupted steps of a text-conditioned tiny MusicGen (CFG and word dropout on)."""
    workdir = tmp_path_factory.mktemp("mg_straight")
    return workdir, train(tiny(data_dir, *OVER, text=True), workdir, encoder=minilm)


def test_interrupted_and_resumed_run_is_bit_identical(straight_run, data_dir, tmp_path, minilm):
    straight_dir, straight = straight_run

    def preempt(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
    first = train(tiny(data_dir, *OVER, text=True), tmp_path, encoder=minilm, on_step=preempt)
    assert first["stopped"].startswith("signal") and first["step"] == 5
    resumed = train(tiny(data_dir, *OVER, text=True), tmp_path, encoder=minilm)
    assert resumed["resumed_from"] == 5 and resumed["step"] == 8
    assert leaves_equal(straight["state"], resumed["state"])
    keys = ["loss", "accuracy", *[f"loss_codebook{k}" for k in range(4)]]
    assert [[r[k] for k in keys] for r in rows(straight_dir)] == [[r[k] for k in keys] for r in rows(tmp_path)]
    with pytest.raises(ValueError, match="different lm config .*family: musicgen -> magnet"):
        train(load_config("configs/tiny_lm.py", [f"data.dir={data_dir}", "lm.card=256"]), tmp_path, encoder=minilm)


def test_trained_musicgen_exports_and_generates(straight_run, tmp_path, capsys):
    from magnet_jax.export import ExportError, export_trained, restore_lm_params
    from magnet_jax.models import MusicGen, load_model
    from magnet_jax.models.sources import DEFAULT_MODEL_DIR
    from magnet_jax.pipeline_cli import main as cli_main
    workdir, _ = straight_run
    out = export_trained(workdir, DEFAULT_MODEL_DIR, tmp_path / "model")     # the shipped codec: 4 x 256, 50 Hz
    meta = json.loads((out / "magnet.json").read_text())
    assert meta["kind"] == "musicgen" and "generation" not in meta and meta["trained"] == {"lm_step": 8, "ema": True}
    model = load_model(str(out), mesh=None)
    assert isinstance(model, MusicGen) and model.lm_cfg.delays == (0, 1, 2, 3)
    got = nnx.to_pure_dict(nnx.state(nnx.merge(model.sampler.graphdef, model.sampler.state), nnx.Param))
    want = restore_lm_params(workdir)[1]["lm"]
    assert jax.tree.structure(got) == jax.tree.structure(want) and leaves_equal(got, want)
    gen = tmp_path / "gen"
    assert cli_main(["generate", "--model", str(out), "--prompt", "pattern of period 3", "--duration", "0.2",
                     "--seed", "1", "--out", str(gen)]) == 0
    tokens = np.load(gen / "tokens.npy")
    sidecar = json.loads((gen / "generate.json").read_text())
    assert tokens.shape == (1, 4, 10) and tokens.max() < 256 and sidecar["model_family"] == "MusicGen"
    with pytest.raises(ExportError, match="--generation sets MAGNeT's sampler"):
        export_trained(workdir, DEFAULT_MODEL_DIR, tmp_path / "other", generation={"decoding_steps": [2, 1, 1, 1]})
