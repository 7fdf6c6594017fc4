"""The paper's rescoring (``magnet_jax.lm.rescore``): an autoregressive MusicGen re-scores MAGNeT's
sampled tokens and spans are re-masked by w * p_rescorer + (1 - w) * p_MAGNeT.

- w = 0 gives exactly plain MAGNeT's tokens (same keys, sampling on);
- a hand-computed stage: fixed logits for both models (the two logits functions monkeypatched),
  greedy, 8 spans over 3 steps; the re-masked spans at every step equal a numpy re-implementation
  of the rule, and differ between w = 0, 0.7 and 1;
- w = 1 with a rescorer that puts all its mass on one token: the spans holding that token are
  kept, the others re-masked in position order, as predicted without computing any score;
- what the rescorer sees: undecoded codebooks as its special token, frame t of codebook s read
  at pattern step t + delay (it depends on earlier frames only);
- ``magnet-jax generate --rescorer --rescore-weight`` end to end on tiny converted models, and a
  rescorer on another codec refused with one line saying what differs.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_models as tm
from magnet_jax.lm import rescore, sampler
from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.musicgen import MusicGenConfig
from magnet_jax.lm.rescore import RescoreConfig, Rescorer, RescoringSampler
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig, decode_stage
from magnet_jax.lm.schedule import stage_schedule
from magnet_jax.pipeline_cli import main as cli_main

# -- w = 0 is plain MAGNeT, end to end through the compiled sampler -------------------------------
SMALL = LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, n_q=2, card=16, frame_rate=10, segment_duration=1.5)
SMALL_AR = MusicGenConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, n_q=2, card=16, frame_rate=10,
                          segment_duration=1.5, delays=(0, 1))


def test_weight_zero_gives_plain_magnet_tokens_and_weight_one_changes_them():
    plain = MagnetSampler(tm.random_lm(SMALL, 0))
    rescoring = RescoringSampler(plain, tm.random_lm(SMALL_AR, 1))
    cfg = SamplerConfig(decoding_steps=(4, 3))
    rng = np.random.default_rng(0)
    cond = jnp.asarray(rng.normal(size=(3, 4, 32)), jnp.float32)
    rcond = jnp.asarray(rng.normal(size=(3, 5, 32)), jnp.float32)
    want = np.asarray(plain.generate(jax.random.key(7), cond=cond, config=cfg))
    got = {w: np.asarray(rescoring.generate(jax.random.key(7), cond=cond, config=cfg, rescore_cond=rcond,
                                            rescore_config=RescoreConfig(weight=w))) for w in (0.0, 1.0)}
    np.testing.assert_array_equal(got[0.0], want)
    assert (got[1.0] != want).any()          # the rescorer does reach the selection
    assert len(rescoring._compiled) == 1     # the weight is an input: a sweep compiles once


# -- a hand-computed stage ----------------------------------------------------------------------
V, T, L, STEPS_HAND = 8, 24, 3, 3            # 8 tokens, 8 spans of 3 frames, 3 steps
HAND = LMConfig(dim=8, num_heads=1, num_layers=1, ffn_dim=8, n_q=1, card=V, frame_rate=10, segment_duration=2.4)
GREEDY = SamplerConfig(decoding_steps=(STEPS_HAND,), use_sampling=False, temperature=1.0, anneal_temp=False)
SCHED = stage_schedule(STEPS_HAND, T // L, temperature=1.0, anneal_temp=False, max_cfg_coef=10.0, min_cfg_coef=1.0)
# each step's argmax tokens come from its own set, so the final tokens show which step wrote them
STEP_TOKENS = ((0, 1, 2), (3, 4, 5), (6, 7))


class FakeMagnet:
    cfg = HAND


def step_logits(seed: int = 0) -> np.ndarray:
    """[steps, 1, T, V] random logits whose argmax at step i lies in STEP_TOKENS[i] (the other
    tokens pushed 8 lower), so MAGNeT's confidence varies over positions."""
    logits = np.random.default_rng(seed).normal(size=(STEPS_HAND, 1, T, V)).astype(np.float32)
    for i, allowed in enumerate(STEP_TOKENS):
        logits[i, ..., np.setdiff1d(np.arange(V), allowed)] -= 8.0
    return logits


def run_stage(monkeypatch, magnet_logits: np.ndarray, rescorer_logits: np.ndarray | None, weight: float) -> np.ndarray:
    """decode_stage on the fake models: MAGNeT's logits at step i are magnet_logits[i] (the step is
    told by its CFG scale, 10 -> 7.4 -> 1), the rescorer's are fixed."""
    assert list(SCHED.num_masked) == [8, 5, 1]

    def fake_guided(model, seq, stage, cross_kv, cfg_coef, cond_lengths=None):
        step = jnp.where(cfg_coef > 9.0, 0, jnp.where(cfg_coef > 2.0, 1, 2))
        return jnp.asarray(magnet_logits)[step]

    monkeypatch.setattr(sampler, "_guided_logits", fake_guided)
    monkeypatch.setattr(rescore, "rescorer_logits", lambda *a, **k: jnp.asarray(rescorer_logits))
    hook = None if rescorer_logits is None else Rescorer(None, None, RescoreConfig(weight=weight), HAND.mask_id)
    codes = jnp.full((1, 1, T), HAND.mask_id, jnp.int32)
    run = jax.jit(lambda c: decode_stage(FakeMagnet(), c, None, jnp.zeros((1, 1, 0), jnp.int32), 0,
                                         jax.random.key(0)[None], GREEDY, SCHED, 0, rescore=hook))
    return np.asarray(run(codes))[0, 0]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def expected_stage(magnet_logits: np.ndarray, rescorer_logits: np.ndarray, weight: float):
    """The rule in numpy: re-mask the num_masked[i] highest-scoring spans (ties: lower index), sample
    greedily at masked positions, score each masked span 1 - max over it of the blended p."""
    tokens = np.full(T, -1)
    scores = np.zeros(T // L)
    remasked = []
    for i, n in enumerate(SCHED.num_masked):
        units = np.argsort(np.argsort(-scores, kind="stable"), kind="stable") < n
        remasked.append(set(np.flatnonzero(units).tolist()))
        tokens[np.repeat(units, L)] = -1
        masked = tokens == -1
        sampled = magnet_logits[i, 0].argmax(-1)
        tokens = np.where(masked, sampled, tokens)
        p = softmax(magnet_logits[i, 0])[np.arange(T), sampled]
        p_rescorer = softmax(rescorer_logits[0])[np.arange(T), sampled]
        p = weight * p_rescorer + (1 - weight) * p
        scores = np.where(units, 1.0 - p.reshape(-1, L).max(-1), -1e4)
    return tokens, remasked


def remasked_sets(tokens: np.ndarray) -> list[set[int]]:
    """Which spans each step re-masked, read from which step's token set each span holds."""
    step_of = np.array([next(i for i, s in enumerate(STEP_TOKENS) if t in s) for t in tokens]).reshape(-1, L)
    assert (step_of == step_of[:, :1]).all()         # spans are written whole
    last = step_of[:, 0]
    return [set(range(T // L)), set(np.flatnonzero(last >= 1).tolist()), set(np.flatnonzero(last >= 2).tolist())]


def test_blended_scores_select_the_spans_the_rule_says(monkeypatch):
    magnet_logits = step_logits(0)
    rescorer_logits = np.random.default_rng(100).normal(size=(1, T, V)).astype(np.float32)
    sets = {}
    for w in (0.0, 0.7, 1.0):
        want_tokens, want_sets = expected_stage(magnet_logits, rescorer_logits, w)
        got = run_stage(monkeypatch, magnet_logits, rescorer_logits, w)
        np.testing.assert_array_equal(got, want_tokens)
        assert remasked_sets(got) == want_sets
        sets[w] = want_sets
    # the case discriminates: MAGNeT alone, the blend and the rescorer alone re-mask different spans
    assert sets[0.0][1] != sets[0.7][1] != sets[1.0][1] != sets[0.0][1]
    # and w = 0 is the sampler without a rescorer
    np.testing.assert_array_equal(run_stage(monkeypatch, magnet_logits, None, 0.0),
                                  expected_stage(magnet_logits, rescorer_logits, 0.0)[0])


def test_weight_one_with_a_one_token_rescorer_keeps_the_spans_holding_that_token(monkeypatch):
    """Step 0's argmax is the favourite token 0 somewhere in spans 1, 4, 6 only: those score
    1 - 1 = 0, the five others 1 - 0 = 1, so step 1 re-masks exactly spans {0, 2, 3, 5, 7}. Step 1
    draws no token 0 (its tokens are 3..5): all five tie at 1 and step 2 re-masks the first, span 0."""
    magnet_logits = step_logits(2)
    best0 = np.ones(T, int)                                   # token 1 ...
    best0[[4, 13, 20]] = 0                                    # ... token 0 in spans 1, 4, 6
    magnet_logits[0, 0] = np.where(np.arange(V) == best0[:, None], 5.0, 0.0)
    favourite = np.full((1, T, V), -50.0, np.float32)
    favourite[..., 0] = 50.0
    got = run_stage(monkeypatch, magnet_logits, favourite, 1.0)
    assert remasked_sets(got) == [set(range(8)), {0, 2, 3, 5, 7}, {0}]
    np.testing.assert_array_equal(got, expected_stage(magnet_logits, favourite, 1.0)[0])
    # MAGNeT alone is equally sure of every step-0 token (one logit of 5 each): ties, the first five
    assert remasked_sets(run_stage(monkeypatch, magnet_logits, favourite, 0.0))[1] == {0, 1, 2, 3, 4}


# -- what the rescorer sees -------------------------------------------------------------------------
def test_rescorer_reads_undecoded_codebooks_as_its_special_token_and_frame_t_from_earlier_frames():
    model = tm.random_lm(SMALL_AR, 3)
    codes = np.random.default_rng(0).integers(0, 16, size=(1, 2, 9))
    codes[:, 1] = SMALL.mask_id                                  # stage 0: codebook 1 not decoded yet
    seq = np.asarray(rescore.rescorer_sequence(jnp.asarray(codes), SMALL.mask_id, model))
    np.testing.assert_array_equal(seq[0, 1], np.full(11, SMALL_AR.mask_id))
    np.testing.assert_array_equal(seq[0, 0, 1:10], codes[0, 0])
    for stage in (0, 1):
        base = np.random.default_rng(stage).integers(0, 16, size=(1, 2, 9))
        changed = base.copy()
        changed[0, stage, 5] = (base[0, stage, 5] + 1) % 16         # frame 5 of this codebook
        logits = jax.jit(lambda c: rescore.rescorer_logits(model, c, stage, None, 3.0, SMALL.mask_id))
        a, b = (np.asarray(logits(jnp.asarray(c))) for c in (base, changed))
        np.testing.assert_array_equal(a[0, :6], b[0, :6])          # frames 0..5 do not see frame 5
        assert np.abs(a[0, 6:] - b[0, 6:]).max() > 0               # later frames do
        full = np.asarray(jax.jit(lambda c: model(rescore.rescorer_sequence(c, SMALL.mask_id, model)))(
            jnp.asarray(base)))
        np.testing.assert_allclose(a[0], full[0, stage, stage:stage + 9], rtol=0, atol=1e-5)


def test_rescore_steps_and_stages_select_what_is_rescored():
    cfg = RescoreConfig(stages=(1,), steps=(0, 2))
    assert not cfg.active_steps(0, 4).any()
    np.testing.assert_array_equal(cfg.active_steps(1, 4), [True, False, True, False])
    np.testing.assert_array_equal(RescoreConfig().active_steps(0, 3), [True, True, False])  # last: never read
    for bad, match in [(dict(weight=1.5), "in \\[0, 1\\]"), (dict(stages=(2,)), "codebook in \\[0, 2\\)"),
                       (dict(steps=(-1,)), "start at 0")]:
        with pytest.raises(ValueError, match=match):
            RescoreConfig(**bad).validate(2)
    with pytest.raises(ValueError, match="n_q 3 != 2"):
        rescore.check_rescorer(SMALL, MusicGenConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, n_q=3,
                                                     card=16, frame_rate=10, delays=(0, 1, 2)))


# -- the command line ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("rescore")
    mismatched = MusicGenConfig(**{**tm.MUSICGEN_CFG.__dict__, "n_q": 3, "delays": (0, 1, 2)})
    return {"magnet": tm.magnet_folder(root / "magnet"), "musicgen": tm.musicgen_folder(root / "musicgen"),
            "other": tm.musicgen_folder(root / "other", mismatched), "root": root}


def _generate(folders, out: Path, *flags: str) -> int:
    return cli_main(["generate", "--model", str(folders["magnet"]), "--prompt", "calm piano", "", "--allow-unconditional",
                     "--out", str(out), "--cache-dir", str(folders["root"] / "cache"), "--seed", "3", *flags])


def test_cli_rescorer_flags_end_to_end(folders, tmp_path, monkeypatch):
    """The flags reach the compiled sampler: the rescorer's weight, and its own text condition
    (the rescorer's encoder and projection: width 48, MAGNeT's is 32); the tokens written are the
    rescoring sampler's; the sidecar records the rescorer and its weight."""
    calls = []
    real = RescoringSampler.generate

    def spy(self, key, **kw):
        out = real(self, key, **kw)
        calls.append((kw["rescore_config"], kw["rescore_cond"], np.asarray(out)))
        return out

    monkeypatch.setattr(RescoringSampler, "generate", spy)
    assert _generate(folders, tmp_path / "out", "--rescorer", str(folders["musicgen"]), "--rescore-weight", "0.6") == 0
    (config, rcond, tokens), = calls
    assert config == RescoreConfig(weight=0.6)
    assert rcond.shape[0] == 2 and rcond.shape[2] == tm.MUSICGEN_CFG.dim
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "tokens.npy"), tokens)
    assert tokens.shape == (2, 2, 15)
    sidecar = json.loads((tmp_path / "out" / "generate.json").read_text())
    assert sidecar["rescorer"] == {"model": str(folders["musicgen"]), "weight": 0.6, "stages": None, "steps": None,
                                   "cfg_coef": 3.0}


def test_cli_refuses_a_rescorer_on_another_codec(folders, tmp_path, capsys):
    code = _generate(folders, tmp_path / "out", "--rescorer", str(folders["other"]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "--rescorer" in err and "does not share" in err and "codebooks 3 vs 2" in err
    assert not (tmp_path / "out" / "tokens.npy").exists()
    code = cli_main(["generate", "--model", str(folders["magnet"]), "--prompt", "x", "--out", str(tmp_path / "o2"),
                     "--rescore-weight", "0.5"])
    assert code == 2 and "--rescore-weight without --rescorer" in capsys.readouterr().err
