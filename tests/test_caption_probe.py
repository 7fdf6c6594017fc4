"""magnet-jax probe-captions: the caption edits (hand-written cases) and the cross-entropy they cost."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from magnet_jax.eval import caption_probe as P
from magnet_jax.train.data import Batches, write_token_dataset
from magnet_jax.train.loop import build_trainer, host, initial_state
from test_train import T, tiny

CAPTION = ("This is a cheerful instrumental piece in D# major. A sine lead carries a melody "
           "at a slow tempo of 84 BPM with no drums.")


def test_edits_change_one_attribute_each():
    assert P.flip_mode(CAPTION) == CAPTION.replace("cheerful", "dark").replace("major", "minor")
    assert P.flip_mode("Slow sad music: melody on an organ, A minor.") == \
        "Slow happy music: melody on an organ, A major."
    assert P.shift_bpm(CAPTION) == CAPTION.replace("slow", "fast").replace("84", "124")
    assert P.shift_bpm("Medium music at 140 BPM") == "Slow music at 100 BPM"
    assert P.swap_instrument(CAPTION) == CAPTION.replace("sine lead", "sawtooth lead")
    assert P.swap_instrument("a plucked string and an organ") == "a sine lead and an square lead"
    assert P.shift_tonic(CAPTION) == CAPTION.replace("D# major", "G# major")
    assert P.shift_tonic("in A minor") == "in D minor"
    assert P.EDITS["empty"](CAPTION) == ""


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """Token clips whose captions name a synthetic-corpus instrument and key."""
    rng = np.random.default_rng(0)
    codes = [rng.integers(0, 64, (4, 40)).astype(np.int32) for _ in range(8)]
    captions = [f"A {i} plays a melody in {k} at {b} BPM." for i, k, b in
                zip(["organ", "sine lead"] * 4, ["C major", "A minor"] * 4, range(80, 160, 10))]
    out = tmp_path_factory.mktemp("probe") / "magnet_tokens" / "1.0.0"
    return str(write_token_dataset(out, {"train": (codes, captions), "valid": (codes, captions)}, card=64))


def _probe(data_dir, params_fn):
    from magnet_jax.text.encoder import TextEncoder
    config = tiny(data_dir, text=True)
    trainer = build_trainer(config, TextEncoder.minilm())
    params = params_fn(jax.tree.map(host, initial_state(trainer)["params"]))
    data = Batches(config["data"], config["text"], trainer.encoder, trainer.mesh, batch_size=8,
                   frames=T, seed=0, split="valid", train=False)
    try:
        return P.edited_cross_entropy(trainer, params, data, batches=1)
    finally:
        data.close()


def test_a_text_path_of_zeros_reads_nothing(captioned):
    """With the text projection zeroed every caption gives the same condition: no edit costs
    anything, exactly. With random weights the caption changes the loss."""
    zeroed = _probe(captioned, lambda p: {**p, "text": jax.tree.map(np.zeros_like, p["text"])})
    assert all(d == [0.0] * 4 for d in zeroed["delta"].values()), zeroed["delta"]
    live = _probe(captioned, lambda p: p)
    assert abs(live["delta"]["empty"][0]) > 1e-4 and abs(live["delta"]["instrument"][0]) > 1e-5
    assert live["examples"]["tonic"] == "A organ plays a melody in F major at 80 BPM."
    assert set(live["delta"]) == set(P.EDITS) and len(live["cross_entropy"]["true"]) == 4


def test_cli_writes_json_and_png(captioned, tmp_path, capsys):
    from magnet_jax.cli import main
    from magnet_jax.train.loop import train
    from magnet_jax.text.encoder import TextEncoder
    workdir = tmp_path / "run"
    train(tiny(captioned, "train.steps=2", text=True), workdir, encoder=TextEncoder.minilm())
    assert main(["probe-captions", "--workdir", str(workdir), "--batches", "1", "--out", str(tmp_path / "p")]) == 0
    report = json.loads((tmp_path / "p" / "caption_probe.json").read_text())
    assert report["step"] == 2 and report["batches"] == 1
    assert (tmp_path / "p" / "caption_probe.png").stat().st_size > 1000
    assert report["mask_rate"] is None
    # --mask-rate 1.0: all codes of the stage hidden, so other masks and another loss
    assert main(["probe-captions", "--workdir", str(workdir), "--batches", "1", "--mask-rate", "1.0",
                 "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "caption_probe.json").read_text())
    assert full["mask_rate"] == 1.0 and full["cross_entropy"]["true"] != report["cross_entropy"]["true"]
    assert main(["probe-captions", "--workdir", str(workdir), "--mask-rate", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--mask-rate 0.0: must be in (0, 1]" in capsys.readouterr().err
    assert main(["probe-captions", "--workdir", str(tmp_path / "nothing"), "--out", str(tmp_path / "q")]) == 2
    assert "not a `magnet-jax train` workdir" in capsys.readouterr().err
