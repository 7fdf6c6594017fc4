"""The prompt file format, its errors, and the held-out prompt set."""
from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest

from data_pipelines import synth
from magnet_jax.eval.prompts import (HELDOUT_COMBOS, HELDOUT_FILE, PromptError, complete_attributes,
                                     heldout_prompts, is_heldout, load_prompts)


def _template_regexes() -> list[re.Pattern]:
    """Each synth caption template as a regex: any text may fill a {field}."""
    out = []
    for template in synth._TEMPLATES:
        parts = re.split(r"\{[A-Za-z_]+\}", template)
        out.append(re.compile("^" + "(.*)".join(re.escape(p) for p in parts) + "$", re.DOTALL))
    return out


def test_template_regexes_do_match_the_corpus_captions():
    regexes = _template_regexes()
    for i in range(30):
        _, _, caption, _ = synth.make_clip(5, i, 0.1, 8000)
        assert any(r.match(caption) for r in regexes), caption


def test_heldout_set_uses_only_heldout_combos_with_new_wordings():
    prompts = heldout_prompts()
    assert HELDOUT_FILE.name == "heldout.jsonl" and len(prompts) == 42
    combos = collections.Counter((p.attributes["instrument"], p.attributes["pattern"], p.attributes["mode"])
                                 for p in prompts)
    assert set(combos) == set(HELDOUT_COMBOS) and set(combos.values()) == {7}
    assert all(is_heldout(*c) for c in combos) and not is_heldout("organ", "arpeggio", "major")
    regexes = _template_regexes()
    for p in prompts:
        assert not any(r.match(p.caption) for r in regexes), p.caption
        a = p.attributes
        assert set(a) == {"instrument", "tonic", "mode", "bpm", "pattern", "drums", "dynamics"}
        assert synth.TEMPO_RANGE[0] <= a["bpm"] <= synth.TEMPO_RANGE[1]
        assert f"{a['tonic']} {a['mode']}" in p.caption and str(a["bpm"]) in p.caption   # the caption states them
    assert {p.attributes["tonic"] for p in prompts} == set(synth.PITCH_CLASSES)
    assert {p.attributes["drums"] for p in prompts} == {True, False}
    assert len({p.caption for p in prompts}) == len(prompts)


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_prompts_accepts_partial_attributes_and_flats(tmp_path):
    path = _write(tmp_path, [json.dumps({"caption": " organ tune ", "attributes": {"instrument": "organ"}}), "",
                             json.dumps({"caption": "x", "attributes": {"tonic": "Bb", "mode": "minor", "bpm": 96.5}}),
                             json.dumps({"caption": "no attributes"})])
    prompts = load_prompts(path)
    assert [p.caption for p in prompts] == ["organ tune", "x", "no attributes"]
    assert prompts[1].attributes == {"tonic": "A#", "mode": "minor", "bpm": 96.5} and prompts[2].attributes == {}


@pytest.mark.parametrize("lines, message", [
    (["", "  "], "holds no prompts"),
    (['{"caption": "a", "attributes": {}}', '{"caption": "b", '], "line 2: not valid JSON"),
    (['["a"]'], "line 1: expected a JSON object"),
    (['{"caption": ""}'], "'caption' must be a non-empty string"),
    (['{"caption": "a", "attrs": {}}'], r"unknown field\(s\) \['attrs'\]"),
    (['{"caption": "a", "attributes": {"instrument": "piano"}}'], "instrument 'piano' is not one of"),
    (['{"caption": "a", "attributes": {"tonic": "H"}}'], "tonic 'H' is not one of"),
    (['{"caption": "a", "attributes": {"mode": "dorian"}}'], "mode 'dorian' is not one of"),
    (['{"caption": "a", "attributes": {"pattern": "riff"}}'], "pattern 'riff' is not one of"),
    (['{"caption": "a", "attributes": {"drums": "yes"}}'], "drums must be true or false"),
    (['{"caption": "a", "attributes": {"bpm": "fast"}}'], "bpm must be a number"),
    (['{"caption": "a", "attributes": {"bpm": 1000}}'], "bpm must be a number"),
    (['{"caption": "a", "attributes": {"genre": "jazz"}}'], r"unknown attribute\(s\) \['genre'\]"),
    (['{"caption": "a", "attributes": {"progression": [0, 9]}}'], "progression must be a list"),
])
def test_bad_prompt_files_name_the_line_and_problem(tmp_path, lines, message):
    with pytest.raises(PromptError, match=message):
        load_prompts(_write(tmp_path, lines))


def test_missing_file_is_a_prompt_error(tmp_path):
    with pytest.raises(PromptError, match="cannot read prompts file"):
        load_prompts(tmp_path / "nope.jsonl")


def test_complete_attributes_keeps_the_given_and_draws_the_rest_as_the_corpus_does():
    given = {"instrument": "organ", "mode": "minor", "bpm": 96.4}
    a = complete_attributes(given, np.random.default_rng([3, 1]))
    drawn = synth.sample_attributes(np.random.default_rng([3, 1]))
    assert (a.instrument, a.mode, a.bpm) == ("organ", "minor", 96)
    assert (a.tonic, a.pattern, a.drums, a.dynamics) == (drawn.tonic, drawn.pattern, drawn.drums, drawn.dynamics)
    assert a.progression in synth.PROGRESSIONS["minor"]
