"""Exact chance and the permutation test (``magnet_jax.eval.significance``), and ``eval-summary``.

Independent sources: chance is checked against the mean over *every* derangement, enumerated
with itertools; p-values against cases where every derangement scores the same (so p is known
exactly); pooled figures against sums worked out by hand.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from magnet_jax.eval import analysers as A
from magnet_jax.eval import significance as S
from magnet_jax.eval.cli import register
from magnet_jax.eval.report import RULES, accuracy

INSTRUMENTS = ("organ", "sine lead", "square lead")


def _fake(**kw) -> A.Analysis:
    return A.Analysis(**{**dict(instrument="organ", tonic="C", mode="major", bpm=100.0, pattern="melody",
                                drums=False, pitch_salience=0.3, spectral_flatness=0.01), **kw})


def _all_derangements(n: int) -> list[tuple[int, ...]]:
    return [p for p in itertools.permutations(range(n)) if all(p[i] != i for i in range(n))]


def test_chance_is_the_mean_over_every_derangement():
    rng = np.random.default_rng(0)
    n = 6
    prompts = [{"instrument": str(rng.choice(INSTRUMENTS)), "tonic": str(rng.choice(["C", "D"])),
                "mode": str(rng.choice(["major", "minor"])), "bpm": int(rng.choice([80, 120]))} for _ in range(n)]
    gen = [_fake(instrument=str(rng.choice(INSTRUMENTS)), tonic=str(rng.choice(["C", "D"])),
                 mode=str(rng.choice(["major", "minor"])), bpm=float(rng.choice([80.0, 120.0]))) for _ in range(n)]
    tested = S.pooled_accuracy([(prompts, gen)], permutations=500)
    perms = _all_derangements(n)
    assert len(perms) == 265                                   # !6 derangements
    for row in ("instrument", "key", "mode", "tempo"):
        scores = [accuracy([prompts[j] for j in p], gen)[row]["accuracy"] for p in perms]
        assert tested[row]["chance"] == pytest.approx(np.mean(scores))
        assert tested[row]["generated"] == accuracy(prompts, gen)[row]["accuracy"]
        exact_p = np.mean([s >= tested[row]["generated"] - 1e-12 for s in scores])
        assert tested[row]["p_value"] == pytest.approx(exact_p, abs=0.06)   # 500 draws: se <= 0.023


def test_p_value_extremes_are_exact():
    # every prompt organ, every generation organ: each derangement scores what the model did, p = 1
    same = [{"instrument": "organ"}] * 4
    row = S.permutation_test([S.match_matrix(same, [_fake()] * 4, "instrument")], permutations=99)
    assert row == {"generated": 1.0, "chance": 1.0, "p_value": 1.0, "n": 4}
    # three prompts, perfectly followed: both derangements of 3 score 1/3 (worked out in the
    # docstring of test_eval_report's by-hand test), so no draw reaches 1.0: p = 1 / (1 + N)
    prompts = [{"instrument": "organ"}, {"instrument": "sine lead"}, {"instrument": "sine lead"}]
    gen = [_fake(instrument=p["instrument"]) for p in prompts]
    row = S.permutation_test([S.match_matrix(prompts, gen, "instrument")], permutations=99)
    assert row == {"generated": 1.0, "chance": pytest.approx(1 / 3), "p_value": pytest.approx(1 / 100), "n": 3}


def test_pooling_sums_over_runs():
    a = ([{"instrument": "organ"}, {"instrument": "sine lead"}], [_fake(instrument="organ")] * 2)
    b = ([{"instrument": "organ"}, {"instrument": "organ"}, {"instrument": "sine lead"}],
         [_fake(instrument="sine lead")] * 3)
    row = S.pooled_accuracy([a, b], permutations=50)["instrument"]
    # generated: run a 1 of 2, run b 1 of 3 -> 2 of 5; chance: run a, each of 2 generations meets the
    # other prompt: organ-vs-sine no, organ-vs-organ yes -> 1 expected; run b, each sine generation meets
    # the two other prompts: (organ, sine), (organ, sine), (organ, organ) -> 2 of 6 pairs, 1 expected
    assert row["generated"] == pytest.approx(2 / 5) and row["chance"] == pytest.approx(2 / 5)
    assert row["n"] == 5


def test_derangements_are_uniform_and_fixed_point_free():
    rng = np.random.default_rng(1)
    perms = S.derangements(3, 4000, rng)
    assert perms.shape == (4000, 3) and not np.any(perms == np.arange(3))
    share = np.mean([tuple(p) == (1, 2, 0) for p in perms])
    assert abs(share - 0.5) < 0.05                             # the two 3-cycles, equally often
    big = S.derangements(40, 10, rng)
    assert all(sorted(p) == list(range(40)) for p in big)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        S.derangements(1, 5, rng)


def _report(folder, seed: int, rows: list[tuple[dict, A.Analysis, A.Analysis]]) -> None:
    folder.mkdir()
    prompts = [{"caption": "c", "attributes": attrs, "generated": g.to_dict(), "real": r.to_dict()}
               for attrs, g, r in rows]
    acc = {name: {"ceiling_through_codec": 0.5, "n": len(rows)} for name in RULES}
    (folder / "report.json").write_text(json.dumps({"model": "m", "seed": seed, "prompts": prompts,
                                                    "accuracy": acc}))


def test_paired_sign_test_is_the_exact_binomial_tail_of_the_discordant_pairs():
    # by hand: 1 pair only the baseline gets right, 4 only the other, 1 both right, 1 unstated:
    # P(X >= 4 | n = 5, 1/2) = (5 + 1) / 32, P(X >= 1) = 31 / 32, two-sided 2 x 6 / 32
    base = [True, False, False, False, False, True, None]
    other = [False, True, True, True, True, True, True]
    got = S.paired_sign_test(base, other)
    assert got == {"pairs": 6, "only_baseline": 1, "only_other": 4, "p_better": 6 / 32, "p_worse": 31 / 32,
                   "p_two_sided": 12 / 32}
    assert S.paired_sign_test(other, base)["p_worse"] == 6 / 32
    # no discordant pair: no evidence either way
    assert S.paired_sign_test([True, False], [True, False])["p_two_sided"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        S.paired_sign_test([True], [True, False])


def test_eval_summary_cli_pools_reports(tmp_path, capsys):
    from magnet_jax.cli import run
    organ, sine = {"instrument": "organ", "drums": True}, {"instrument": "sine lead", "drums": False}
    _report(tmp_path / "s0", 0, [(organ, _fake(instrument="organ", drums=True, beat_steadiness=0.1),
                                  _fake(instrument="organ", beat_steadiness=0.7)),
                                 (sine, _fake(instrument="sine lead", beat_steadiness=0.2),
                                  _fake(instrument="sine lead", beat_steadiness=0.8))])
    _report(tmp_path / "s1", 1, [(organ, _fake(instrument="sine lead", drums=True, beat_steadiness=0.3),
                                  _fake(instrument="organ", drums=True, beat_steadiness=0.75)),
                                 (sine, _fake(instrument="organ", beat_steadiness=0.4),
                                  _fake(instrument="organ", beat_steadiness=0.25))])
    out = tmp_path / "pooled"
    rc = run([register], ["eval-summary", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out),
                          "--permutations", "200"])
    io = capsys.readouterr()
    assert rc == 0, io.err
    summary = json.loads((out / "summary.json").read_text())
    inst = summary["accuracy"]["instrument"]
    # generated: 2 of 2 in seed 0, 0 of 2 in seed 1; chance: seed 0 swaps organ/sine (0 right), seed 1
    # swapped is 2 right; ceiling: 2 + 1 real clips right of 4; through the codec: each run said 0.5
    assert (inst["generated"], inst["chance"], inst["ceiling"], inst["ceiling_through_codec"]) == (0.5, 0.5, 0.75, 0.5)
    drums = summary["accuracy"]["drums"]
    assert drums["generated"] == 1.0 and drums["chance"] == 0.0 and drums["p_value"] == pytest.approx(1 / 201)
    assert [r["generated"]["instrument"] for r in summary["runs"]] == [1.0, 0.0]
    assert summary["confusions"]["instrument"] == {"organ": {"organ": 1, "sine lead": 1},
                                                   "sine lead": {"sine lead": 1, "organ": 1}}
    assert "| drums | 100.0 % | 0.0 % | 0.005 (above chance) |" in (out / "summary.md").read_text()
    assert (out / "summary.png").read_bytes().startswith(b"\x89PNG")
    # music-likeness of all 4 generations against the range of all 4 real clips (nan: not measured)
    beat = summary["music_likeness"]["beat_steadiness"]
    assert beat["generated"] == pytest.approx({"mean": 0.25, "min": 0.1, "max": 0.4})
    assert (beat["real"]["min"], beat["real"]["max"], beat["generated_within_real_range"]) == (0.25, 0.8, 0.5)
    assert "| beat_steadiness | 0.25 | 0.625 | 0.25 – 0.8 | 50.0 % |" in (out / "summary.md").read_text()
    # bad input: one-line errors naming the folder
    (tmp_path / "empty").mkdir()
    rc = run([register], ["eval-summary", str(tmp_path / "empty"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "report.json does not exist" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "s0" / "report.json").write_text("{")
    rc = run([register], ["eval-summary", str(tmp_path / "s0"), "--out", str(out)])
    assert rc == 2 and "not valid JSON" in capsys.readouterr().err


def test_reports_written_before_beat_steadiness_still_pool(tmp_path):
    from magnet_jax.eval.summary import summarise
    organ, sine = {"instrument": "organ"}, {"instrument": "sine lead"}
    _report(tmp_path / "old", 0, [(organ, _fake(pitch_salience=0.2), _fake(pitch_salience=0.5)),
                                  (sine, _fake(pitch_salience=0.4), _fake(pitch_salience=0.3))])
    report = json.loads((tmp_path / "old" / "report.json").read_text())
    for row in report["prompts"]:
        del row["generated"]["beat_steadiness"], row["real"]["beat_steadiness"]
    (tmp_path / "old" / "report.json").write_text(json.dumps(report))
    music = summarise([tmp_path / "old"], permutations=10)["music_likeness"]
    assert "beat_steadiness" not in music
    assert music["pitch_salience"]["generated_within_real_range"] == 0.5      # 0.4 inside 0.3-0.5, 0.2 not
