"""`magnet-jax eval` end to end on a tiny random MAGNeT, and the scoring it rests on.

A random model's audio is noise, so the end-to-end test checks the report's structure and that
its numbers are what they claim: the ceiling rows are the analysers run here, directly, on clips
rendered here from the prompts' attributes; the chance rows are the generations scored against
every derangement of the prompts, enumerated; the generated rows are the per-prompt marks averaged.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from data_pipelines import synth
from magnet_jax.eval import analysers as A
from magnet_jax.eval import report as R
from magnet_jax.eval.cli import register

PROMPTS = [
    {"caption": "Rolling organ arpeggios in A minor, 84 BPM, no drums.",
     "attributes": {"instrument": "organ", "tonic": "A", "mode": "minor", "bpm": 84, "pattern": "arpeggio",
                    "drums": False, "dynamics": "medium", "progression": [0, 3, 4, 0]}},
    {"caption": "Sine lead melody in D major, 120 BPM, with drums.",
     "attributes": {"instrument": "sine lead", "tonic": "D", "mode": "major", "bpm": 120, "pattern": "melody",
                    "drums": True, "dynamics": "loud", "progression": [0, 5, 4, 0]}},
    {"caption": "Square chords in F# minor at 140 BPM.",
     "attributes": {"instrument": "square lead", "tonic": "F#", "mode": "minor", "bpm": 140,
                    "pattern": "chord progression", "drums": True, "dynamics": "soft", "progression": [0, 4, 0, 3]}},
]
SEED = 3


def _fake(**analysis) -> A.Analysis:
    return A.Analysis(**{**dict(instrument="organ", tonic="C", mode="major", bpm=100.0, pattern="melody",
                                drums=False, pitch_salience=0.3, spectral_flatness=0.01), **analysis})


def test_accuracy_chance_and_ceiling_by_hand():
    prompts = [{"instrument": "organ", "bpm": 100}, {"instrument": "sine lead", "bpm": 80},
               {"instrument": "organ", "tonic": "C", "mode": "major"}]
    gen = [_fake(instrument="organ", bpm=200.0), _fake(instrument="organ", bpm=81.0),
           _fake(instrument="sine lead")]
    real = [_fake(instrument="organ", bpm=100.0), _fake(instrument="sine lead", bpm=80.0),
            _fake(instrument="organ")]
    table = R.accuracy_table(prompts, gen, real)
    assert table["instrument"]["generated"] == pytest.approx(1 / 3) and table["instrument"]["n"] == 3
    assert table["tempo"]["generated"] == pytest.approx(1 / 2) and table["tempo"]["n"] == 2   # 200 vs 100: no
    assert table["tempo_octave"]["generated"] == 1.0                                        # ... but double: yes
    # key: only prompt 2 states it; every generation is C major, so any pairing is right; both
    # derangements of 3 score 1.0 >= 1.0, so p = 1
    assert table["key"] == {"label": "key (tonic + mode)", "generated": 1.0, "chance": 1.0, "p_value": 1.0,
                            "ceiling": 1.0, "ceiling_through_codec": None, "n": 1}
    # chance, each generation against the other two prompts: organ gen 0 meets sine (no), organ (yes);
    # organ gen 1 meets organ, organ (yes, yes); sine gen 2 meets organ (no), sine (yes): 4 of 6
    assert table["instrument"]["chance"] == pytest.approx(2 / 3) and table["instrument"]["ceiling"] == 1.0
    # tempo pairs with a stated BPM: gen 0 (200) vs 80 no; gen 1 (81) vs 100 no; gen 2 (100) vs 100 yes, vs 80 no
    assert table["tempo"]["chance"] == pytest.approx(1 / 4)
    assert table["pattern"]["generated"] is None and table["pattern"]["n"] == 0
    # confusions: asked -> heard, only over prompts that state the attribute
    assert R.confusions(prompts, gen)["instrument"] == {"organ": {"organ": 1, "sine lead": 1},
                                                        "sine lead": {"organ": 1}}
    assert R.confusions(prompts, gen)["mode"] == {"major": {"major": 1}}
    assert R.confusions(prompts, gen)["pattern"] == {}
    md = R.confusion_lines(R.confusions(prompts, gen))
    assert "| instrument | organ | sine lead |" in md and "| organ | 1 | 1 |" in md and "| sine lead | 1 | 0 |" in md


@pytest.fixture(scope="module")
def tiny_model():
    """A random MAGNeT: 1-layer LM (dim 16), a 4-filter 16 kHz codec, MiniLM text: 2 s segments."""
    from flax import nnx
    from magnet_jax.codec import Encodec, codec_config
    from magnet_jax.lm.config import LMConfig
    from magnet_jax.lm.model import MagnetLM
    from magnet_jax.models import MAGNeT
    from magnet_jax.text import Conditioner
    codec = Encodec(codec_config("encodec_16khz", n_filters=4, dimension=8, lstm=0, n_q=4, bins=32), rngs=nnx.Rngs(0))
    lm = MagnetLM(LMConfig(dim=16, num_heads=2, num_layers=1, ffn_dim=32, n_q=4, card=32, frame_rate=50,
                           segment_duration=2.0), rngs=nnx.Rngs(1))
    return MAGNeT(lm, codec, Conditioner.minilm(16), name="tiny-random", mesh=None)


class MeanEmbedder:
    name = "clip_mean_peak"
    sample_rate = 8000

    def __call__(self, audio):
        w = audio[:, : audio.shape[1] // 400 * 400].reshape(-1, 400)
        return np.stack([w.mean(axis=1), np.abs(w).max(axis=1)], axis=1)


def make_embedder():
    return MeanEmbedder()


def _run(argv, capsys):
    from magnet_jax.cli import run
    rc = run([register], argv)
    return rc, capsys.readouterr()


def test_eval_writes_the_report_and_its_numbers_check_out(tiny_model, tmp_path, capsys, monkeypatch):
    from magnet_jax.models import MAGNeT, sources
    # no --model: the shipped default, stood in for by the tiny model
    monkeypatch.setattr(sources, "DEFAULT_MODEL", "tiny-default")
    calls = []
    monkeypatch.setattr(MAGNeT, "from_pretrained",
                        classmethod(lambda cls, name=None, **kw: calls.append(name) or tiny_model))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    out = tmp_path / "out"
    rc, io = _run(["eval", "--prompts", str(prompts), "--out", str(out), "--seed", str(SEED), "--batch-size", "2",
                   "--decoding-steps", "3,2,2,2", "--temperature", "1.5", "--embedding", "test_eval_report:make_embedder"], capsys)
    assert rc == 0, io.err
    assert calls == [None]
    report = json.loads((out / "report.json").read_text())
    printed = json.loads(io.out)
    assert printed["files"]["markdown"] == str(out / "report.md")

    # files: report.json / .md, two PNGs, one WAV per prompt at the model's rate
    for png in ("accuracy.png", "music_likeness.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    md = (out / "report.md").read_text()
    assert "| attribute | generated | chance | p (generated vs chance) | ceiling | ceiling through the codec | prompts |" in md
    assert "| pattern |" in md
    assert "`--embedding vggish=PATH`" in md
    n = report["num_prompts"]
    assert n == 3 and report["sample_rate"] == 16000 and report["seed"] == SEED
    assert report["sampler"] == {"decoding_steps": [3, 2, 2, 2], "temperature": 1.5}   # generate's flags
    samples = int(round(report["duration_s"] * 16000))
    assert samples == 99 * 320                                     # 2 s = 100 frames, trimmed to whole spans
    wavs = [soundfile.read(out / p["wav"], dtype="float32") for p in report["prompts"]]
    assert all(rate == 16000 and wav.shape == (samples,) for wav, rate in wavs)

    # ceiling: the analysers, run here on clips rendered here from the prompts' attributes
    real = []
    for i, p in enumerate(PROMPTS):
        rng = np.random.default_rng([SEED, i])
        synth.sample_attributes(rng)          # the runner draws (and discards) missing attributes first
        a = {**p["attributes"], "progression": tuple(p["attributes"]["progression"])}
        real.append(synth.render_clip(synth.ClipAttributes(**a), samples / 16000, 16000, rng))
    direct = A.analyse_batch(real, 16000)
    for row, d in zip(report["prompts"], direct):
        assert row["real"] == pytest.approx(d.to_dict())
    attrs = [p["attributes"] for p in PROMPTS]
    gen = [A.Analysis(**{k: v for k, v in p["generated"].items() if k != "key"}) for p in report["prompts"]]
    derangements = [(1, 2, 0), (2, 0, 1)]                       # all of them, for 3 prompts
    # the codec ceiling: the same clips through the model's own codec (4 codebooks), then the analysers
    coded = tiny_model.decode(tiny_model.codec.encode(np.stack(real)[:, None].astype(np.float32), n_q=4))
    through = A.analyse_batch(list(np.asarray(coded)[:, 0, :samples]), 16000)
    for row, d in zip(report["prompts"], through):   # the runner's codec batch is another shape: the
        # CPU's vector code rounds the audio differently (seen: beat steadiness 4e-6 apart on an AMD EPYC)
        assert row["real_through_codec"] == pytest.approx(d.to_dict(), rel=1e-4, abs=1e-6)
    for name, row in report["accuracy"].items():
        rule = R.RULES[name][2]
        assert row["ceiling"] == pytest.approx(np.mean([rule(a, d) for a, d in zip(attrs, direct)]))
        assert row["ceiling_through_codec"] == pytest.approx(np.mean([rule(a, d) for a, d in zip(attrs, through)]))
        assert row["generated"] == pytest.approx(np.mean([rule(a, g) for a, g in zip(attrs, gen)]))
        by_derangement = [np.mean([rule(attrs[j], g) for j, g in zip(perm, gen)]) for perm in derangements]
        assert row["chance"] == pytest.approx(np.mean(by_derangement))
        at_least = sum(a >= row["generated"] - 1e-12 for a in by_derangement)
        if at_least in (0, 2):          # p is exact when both derangements fall on the same side
            assert row["p_value"] == pytest.approx(1 / 2001 if at_least == 0 else 1.0)
        else:
            assert 1 / 2001 < row["p_value"] < 1
        assert row["n"] == 3

    # music-likeness, Fréchet distances (codec latents + the plugged embedder), chroma cosine
    ml = report["music_likeness"]["pitch_salience"]
    assert ml["real"]["min"] == pytest.approx(min(d.pitch_salience for d in direct))
    assert ml["generated"]["mean"] == pytest.approx(np.mean([g.pitch_salience for g in gen]))
    fd = report["frechet"]
    assert set(fd) == {"codec_latents", "clip_mean_peak"}
    assert fd["codec_latents"]["generated_embeddings"] == 3 * 99 and fd["codec_latents"]["dimension"] == 8
    assert fd["clip_mean_peak"]["generated_embeddings"] == 3 * (samples // 2 // 400)
    assert all(np.isfinite(f["distance"]) and f["distance"] >= 0 for f in fd.values())
    assert -1 <= report["chroma_cosine"]["mean"] <= 1


def _error(argv, capsys) -> str:
    rc, io = _run(argv, capsys)
    assert rc == 2 and "Traceback" not in io.err and len(io.err.strip().splitlines()) == 1, io.err
    return io.err


def test_bad_command_lines_are_one_line_errors(tmp_path, capsys, monkeypatch):
    from magnet_jax.models import sources
    monkeypatch.setattr(sources, "DEFAULT_MODEL", None)
    out = ["--out", str(tmp_path / "out")]
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "holds no prompts" in _error(["eval", "--prompts", str(tmp_path / "empty.jsonl"), *out], capsys)
    (tmp_path / "bad.jsonl").write_text('{"caption": "a"}\n{"caption": \n')
    assert "line 2: not valid JSON" in _error(["eval", "--prompts", str(tmp_path / "bad.jsonl"), *out], capsys)
    (tmp_path / "piano.jsonl").write_text('{"caption": "a", "attributes": {"instrument": "piano"}}\n')
    assert "instrument 'piano'" in _error(["eval", "--prompts", str(tmp_path / "piano.jsonl"), *out], capsys)
    assert "--num-prompts 0" in _error(["eval", "--num-prompts", "0", *out], capsys)
    assert "--batch-size 0" in _error(["eval", "--batch-size", "0", *out], capsys)
    assert "clap=PATH" in _error(["eval", "--embedding", "clap", *out], capsys)
    assert "no_such_weights.pth" in _error(["eval", "--embedding", f"vggish={tmp_path}/no_such_weights.pth", *out],
                                           capsys)
    assert "module:function" in _error(["eval", "--embedding", "nocolon", *out], capsys)
    assert "no --model given" in _error(["eval", *out], capsys)        # held-out prompts load, no model
    assert not (tmp_path / "out").exists()
