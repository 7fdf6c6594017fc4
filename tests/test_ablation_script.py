"""``scripts/ablation_rescore_hybrid.py`` and ``scripts/compare_melody_magnet.py`` end to end on tiny
random models (tests/tiny_models.py): one seed, two held-out prompts, one rescoring weight and one
hybrid prefix; MeLoDy against MAGNeT.

What can go wrong in such a script and is checked here against the models' own calls made by
hand: a variant's clips are not what that variant makes (e.g. the rescorer set by one variant
leaking into the next one, or the hybrid prefix not applied), the table misses a variant, or
latency is not relative to plain MAGNeT.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import tiny_models as tm
from magnet_jax.eval import comparison as C
from magnet_jax.eval.prompts import heldout_prompts
from magnet_jax.models import HybridMAGNeT, load_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import ablation_rescore_hybrid as ablation  # noqa: E402

WEIGHT, PREFIX = 0.5, 0.1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    magnet = load_model(tm.magnet_folder(root / "magnet"), mesh=None)
    musicgen = load_model(tm.musicgen_folder(root / "musicgen"), mesh=None)
    out = root / "out"
    ablation.ablation(magnet, musicgen, out, prompts=heldout_prompts()[:2], seeds=[0], weights=[WEIGHT],
                      prefixes=[PREFIX], latency_rounds=1)
    return {"out": out, "magnet": magnet, "musicgen": musicgen}


def _wavs(folder: Path) -> np.ndarray:
    files = sorted((folder / "generated").glob("*.wav"))
    return np.stack([soundfile.read(f, dtype="float32")[0] for f in files])


def _same_audio(folder: Path, audio: np.ndarray) -> None:
    """The report's 16-bit WAVs against float audio [N, C, samples] (mono here)."""
    want = np.clip(audio[:, 0], -1, 1)
    np.testing.assert_allclose(_wavs(folder), want, atol=1.5 / 32767)


def test_every_variant_is_in_the_table_with_latency_relative_to_magnet(run):
    table = json.loads((run["out"] / "ablation.json").read_text())["variants"]
    assert list(table) == ["magnet", f"rescore_{WEIGHT:g}", f"hybrid_{PREFIX:g}s", "musicgen"]
    assert table["magnet"]["latency_vs_baseline"] == 1.0
    for name, row in table.items():
        assert row["num_generations"] == 2
        assert row["latency_vs_baseline"] == pytest.approx(row["latency_s"] / table["magnet"]["latency_s"])
        assert set(row["accuracy"]) == set(C.ATTRIBUTES)
    # the paired tests against plain MAGNeT count the same generations the pooled accuracies do:
    # (right only here) - (right only in MAGNeT) = the difference of their correct counts
    for name, row in list(table.items())[1:]:
        for a, t in row["vs_baseline"].items():
            acc, base = row["accuracy"][a], table["magnet"]["accuracy"][a]
            assert t["pairs"] == acc["n"] == base["n"]
            if acc["n"]:
                assert t["only_other"] - t["only_baseline"] == round((acc["generated"] - base["generated"]) * acc["n"])
    assert "vs_baseline" not in table["magnet"]
    md = (run["out"] / "ablation.md").read_text()
    assert all(f"| {name} |" in md for name in table) and "differs from magnet" in md
    assert (run["out"] / "ablation.png").stat().st_size > 0


def test_each_variants_clips_are_what_that_variant_makes_by_hand(run):
    magnet, musicgen, out = run["magnet"], run["musicgen"], run["out"]
    captions = [p.caption for p in heldout_prompts()[:2]]
    magnet.set_rescorer(None)
    _same_audio(out / "magnet" / "seed0", magnet.generate(captions, seed=0, batch_size=8).audio)
    hybrid = HybridMAGNeT(magnet, musicgen).generate(captions, prefix_seconds=PREFIX, seed=0, batch_size=8)
    _same_audio(out / f"hybrid_{PREFIX:g}s" / "seed0", hybrid.audio)
    clip_s = tm.MAGNET_CFG.sequence_len / tm.FRAME_RATE
    _same_audio(out / "musicgen" / "seed0", musicgen.generate(captions, seed=0, batch_size=8, duration=clip_s).audio)
    magnet.set_rescorer(musicgen, weight=WEIGHT)
    try:
        rescored = magnet.generate(captions, seed=0, batch_size=8).audio
    finally:
        magnet.set_rescorer(None)
    _same_audio(out / f"rescore_{WEIGHT:g}" / "seed0", rescored)
    # the variants differ from each other (else the comparisons above prove nothing)
    assert not np.array_equal(_wavs(out / "magnet" / "seed0"), _wavs(out / f"hybrid_{PREFIX:g}s" / "seed0"))
    assert not np.array_equal(_wavs(out / "magnet" / "seed0"), _wavs(out / f"rescore_{WEIGHT:g}" / "seed0"))


def test_real_clips_are_rendered_and_analysed_once_per_seed(run, monkeypatch):
    from magnet_jax.eval import runner
    calls = []
    render = runner.render_real
    monkeypatch.setattr(runner, "render_real", lambda *a, **k: calls.append(a[-1]) or render(*a, **k))
    prompts, cache = heldout_prompts()[:2], {}
    samples = tm.MAGNET_CFG.sequence_len * 320
    first = runner.reference_analyses(run["magnet"], prompts, samples, 16000, 0, 8, False, cache)
    again = runner.reference_analyses(run["magnet"], prompts, samples, 16000, 0, 8, False, cache)
    runner.reference_analyses(run["magnet"], prompts, samples, 16000, 1, 8, False, cache)
    assert calls == [0, 1] and again is first
    uncached = runner.reference_analyses(run["magnet"], prompts, samples, 16000, 0, 8, False)
    np.testing.assert_array_equal(uncached[1], first[1])
    assert [a.to_dict() for a in uncached[2]] == [a.to_dict() for a in first[2]]


def test_latency_rounds_0_keeps_the_earlier_latencies_and_evaluates_nothing_again(run, tmp_path):
    """A rerun over finished reports with ``latency_rounds=0``: the evaluations are skipped, the
    latencies are the earlier file's, and the metadata says where they come from; with no
    earlier file it is a clear error."""
    before = json.loads((run["out"] / "ablation.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in run["out"].glob("*/seed0/report.json")}
    again = ablation.ablation(run["magnet"], run["musicgen"], run["out"], prompts=heldout_prompts()[:2], seeds=[0],
                              weights=[WEIGHT], prefixes=[PREFIX], latency_rounds=0)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {n: r["latency_s"] for n, r in again["variants"].items()} == \
        {n: r["latency_s"] for n, r in before["variants"].items()}
    assert again["meta"]["latency"] == "kept from the earlier ablation.json"
    with pytest.raises(SystemExit, match="does not exist: run with --latency-rounds 1"):
        C.kept_latencies(tmp_path / "ablation.json", ["magnet"])


def test_melody_comparison_table_holds_both_models_with_their_clips_and_forward_passes(run, tmp_path):
    """``scripts/compare_melody_magnet.py`` on the tiny MAGNeT and a tiny random MeLoDy: MeLoDy's
    clips are its own ``generate`` at MAGNeT's clip length (0.3 s), and the forward passes are
    the hand counts: MAGNeT 3 + 2 decoding steps + the codec decoder; MeLoDy 8 semantic tokens
    (0.3 s at 25 Hz, rounded up), 2 DPD steps (one 0.4-s window, no extra chunk), the VAE decoder."""
    import compare_melody_magnet as compare
    melody = load_model(tm.melody_folder(tmp_path / "melody"))
    out = tmp_path / "compare"
    result = compare.compare(run["magnet"], melody, out, prompts=heldout_prompts()[:2], seeds=[0], latency_rounds=1)
    rows = result["variants"]
    assert list(rows) == ["magnet", "melody"] and rows["magnet"]["latency_vs_baseline"] == 1.0
    assert rows["magnet"]["forward_passes"] == sum(tm.STEPS) + 1 == 6
    assert rows["melody"]["forward_passes_by_part"] == {"semantic_lm": 8, "dpd": 2, "vae_decoder": 1, "total": 11}
    assert rows["melody"]["num_generations"] == 2 and set(rows["melody"]["accuracy"]) == set(C.ATTRIBUTES)
    captions = [p.caption for p in heldout_prompts()[:2]]
    _same_audio(out / "melody" / "seed0", melody.generate(captions, seed=0, batch_size=8, duration=0.3).audio)
    md = (out / "comparison.md").read_text()
    assert "| melody |" in md and "forward passes / clip" in md and "| 11 |" in md
    assert (out / "comparison.png").stat().st_size > 0
