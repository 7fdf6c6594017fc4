"""MeLoDy's semantic tokens through the project's data path: ``magnet-jax fit-semantic`` fits the
k-means tokenizer on a corpus, ``magnet-jax tokenize --semantic-tokenizer`` writes one-codebook
records (checked against the tokenizer run on the audio itself), and ``magnet-jax train
--config configs/melody_tiny.py:semantic_lm`` trains MeLoDy's semantic LM on them."""
import json
import math

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import records
from magnet_jax.cli import run
from magnet_jax.melody.semantic import SemanticTokenizer

SEGMENT_S = 2.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_pipelines.synth import write_corpus
    root = tmp_path_factory.mktemp("semantic")
    corpus = root / "synth"
    write_corpus(corpus, 4, duration=3.0, sample_rate=16000, seed=5, progress=False)
    tok = root / "semantic.tok"                 # no .npz suffix: the file keeps its given name
    assert run(None, ["fit-semantic", str(corpus), "--out", str(tok), "--num-tokens", "12", "--clips", "4",
                      "--seconds", "3", "--iters", "10"]) == 0
    out = root / "tokens" / "magnet_tokens" / "1.0.0"
    assert run(None, ["tokenize", str(corpus), "--out", str(out), "--semantic-tokenizer", str(tok),
                      "--segment-duration", str(SEGMENT_S), "--batch-size", "2", "--no-progress"]) == 0
    return {"corpus": corpus, "tokenizer": tok, "out": out}


def test_records_hold_the_tokenizer_s_tokens_of_each_segment_one_per_hop(data):
    tokenizer = SemanticTokenizer.load(data["tokenizer"])
    assert tokenizer.num_tokens == 12 and tokenizer.frame_rate == 25.0
    meta = json.loads((data["out"] / "metadata.json").read_text())
    assert (meta["n_q"], meta["cardinality"], meta["frame_rate"], meta["hop_length"]) == (1, 12, 25.0, 640)
    codec = records.RecordCodec(records.features_from_directory(data["out"]))
    recs = [codec.parse(raw) for p in records.shard_paths(data["out"]) for raw in records.read_shard(p)]
    assert len(recs) == 8                       # 4 clips x (a 2 s and a 1 s segment)
    for rec in recs:
        wav, sr = sf.read(rec["source"], dtype="float32")
        a, n = int(round(rec["offset_s"] * sr)), int(round(rec["duration_s"] * sr))
        segment = np.zeros((1, int(SEGMENT_S * sr)), np.float32)      # the job zero-pads a batch
        segment[0, :n] = wav[a:a + n]
        want = np.asarray(tokenizer.encode_aligned(segment))[:, :math.ceil(n / 640)]
        np.testing.assert_array_equal(rec["codes"], want)
    assert len({int(c) for rec in recs for c in rec["codes"].ravel()}) > 3      # not one token everywhere


def test_encode_aligned_gives_one_token_per_hop_centred_on_it():
    """Frame t of ``encode_aligned`` is the extractor's window centred on hop t: equal to the plain
    ``encode`` of the clip shifted by the left padding."""
    rng = np.random.default_rng(0)
    from magnet_jax.melody.semantic import LogMelChroma
    import jax
    audio = rng.normal(size=(2, 6000)).astype(np.float32)
    tok = SemanticTokenizer.fit(jax.random.key(0), LogMelChroma(hop_length=640, n_fft=2048), audio, 6, iters=5)
    got = np.asarray(tok.encode_aligned(audio))
    assert got.shape == (2, math.ceil(6000 / 640))
    left = (2048 - 640) // 2
    padded = np.pad(audio, ((0, 0), (left, 4000)))
    np.testing.assert_array_equal(got, np.asarray(tok.encode(padded))[:, :got.shape[1]])


def test_the_semantic_lm_trains_on_them(data, tmp_path):
    workdir = tmp_path / "run"
    assert run(None, ["train", "--config", "configs/melody_tiny.py:semantic_lm", "--workdir", str(workdir),
                      f"data.dir={data['out']}", "lm.card=12", "lm.segment_duration=2.0", "lm.dim=16",
                      "lm.num_heads=2", "lm.num_layers=1", "lm.ffn_dim=32", "lm.cross_attention=false",
                      "text.encoder=none", "text.cfg_dropout=0", "text.word_dropout=0", "train.steps=4",
                      "train.batch_size=4", "mesh.devices=1", "train.checkpoint_every=4", "train.eval_every=0",
                      "train.log_every=2", "train.progress=false", "optim.ema_decay=0", "optim.warmup=1"]) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("split") == "train"]
    assert losses and all(np.isfinite(losses)) and (workdir / "checkpoints" / "4").is_dir()
    assert losses[0] < math.log(12) + 1.0         # next-token cross-entropy over 12 tokens, from the start


def test_tokenize_refuses_codec_flags_with_a_semantic_tokenizer(data, tmp_path, capsys):
    assert run(None, ["tokenize", str(data["corpus"]), "--out", str(tmp_path / "x"), "--semantic-tokenizer",
                      str(data["tokenizer"]), "--codec-weights", "magnet_jax/assets/default_model"]) != 0
    assert "--codec-weights: --semantic-tokenizer makes the tokens" in capsys.readouterr().err
