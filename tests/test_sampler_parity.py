"""The compiled sampler against audiocraft's MagnetLMModel.generate on the same random weights."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import reference
from lm_reference import RefLMShape, build_reference_lm, export_state_dict, reference_condition
from magnet_jax.lm.convert import load_audiocraft_lm
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig

SHAPE = RefLMShape(dim=64, num_heads=4, num_layers=2, card=64, frame_rate=48, segment_duration=1)
TEXTS = ["upbeat funk bass", "calm piano"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = build_reference_lm(SHAPE, seed=3)
    path = export_state_dict(ref, SHAPE, tmp_path_factory.mktemp("lm") / "state_dict.bin", half=False)
    _, ours, _ = load_audiocraft_lm(path)
    return ref, MagnetSampler(ours)


def reference_generate(ref, prompt, shape=SHAPE, **kw):
    torch = reference.require("torch")
    attrs, _, _ = reference_condition(ref, TEXTS)
    with torch.no_grad():
        out = ref.generate(prompt=None if prompt is None else torch.as_tensor(prompt), conditions=attrs,
                           max_gen_len=shape.T, use_sampling=False, temp=3.0, top_k=0, top_p=0.9,
                           **kw)
    return out.numpy()


@pytest.mark.parametrize("arrangement", ["nonoverlap", "stride1"])
@pytest.mark.parametrize("prompt_len", [0, 13])
def test_greedy_tokens_identical(pair, arrangement, prompt_len):
    ref, sampler = pair
    steps = [6, 3, 3, 2]
    prompt = None
    if prompt_len:
        prompt = np.random.default_rng(4).integers(0, SHAPE.card, (len(TEXTS), SHAPE.n_q, prompt_len))
    want = reference_generate(ref, prompt, decoding_steps=steps, span_arrangement=arrangement,
                              max_cfg_coef=10.0, min_cfg_coef=1.0)
    _, _, cond = reference_condition(ref, TEXTS)
    with jax.default_matmul_precision("highest"):
        got = np.asarray(sampler.generate(jax.random.key(0), cond=cond, prompt=prompt,
                                          config=SamplerConfig(decoding_steps=tuple(steps), use_sampling=False,
                                                               span_arrangement=arrangement)))
    assert got.shape == want.shape
    assert (got != SHAPE.card).all(), "no mask token may survive decoding"
    if prompt is not None:
        np.testing.assert_array_equal(got[..., :prompt_len], prompt)
    np.testing.assert_array_equal(got, want)


def test_span_scoring_prod_identical(pair):
    ref, sampler = pair
    want = reference_generate(ref, None, decoding_steps=[5, 2, 2, 2], span_scoring="prod")
    _, _, cond = reference_condition(ref, TEXTS)
    with jax.default_matmul_precision("highest"):
        got = np.asarray(sampler.generate(jax.random.key(0), cond=cond, config=SamplerConfig(
            decoding_steps=(5, 2, 2, 2), use_sampling=False, span_scoring="prod")))
    np.testing.assert_array_equal(got, want)


def _record_remask_counts(ref, monkeypatch, shape, **kw):
    """Run the reference and record how many spans (or tokens) it re-masks at every step."""
    torch = reference.require("torch")
    counts = []
    original_topk = torch.Tensor.topk
    original_lps = ref._least_probable_span_masking

    def topk(self, k, *args, **kwargs):
        counts.append(int(k))
        return original_topk(self, k, *args, **kwargs)

    def lps(scores, num_masked_trg):
        counts.append(int(num_masked_trg))
        return original_lps(scores, num_masked_trg)

    monkeypatch.setattr(torch.Tensor, "topk", topk)
    monkeypatch.setattr(ref, "_least_probable_span_masking", lps)
    reference_generate(ref, None, shape=shape, **kw)
    monkeypatch.undo()
    return counts


def _our_counts(steps, units):
    from magnet_jax.lm.schedule import stage_schedule
    return [int(c) for n in steps for c in stage_schedule(
        n, units, temperature=3.0, anneal_temp=True, max_cfg_coef=10, min_cfg_coef=1).num_masked]


def test_remask_counts_match_reference_run(monkeypatch):
    """[20,10,10,10] on T=480 (160 spans): the counts the reference actually used, step by step.
    A 1-layer model: only the schedule is compared."""
    shape = RefLMShape(dim=32, num_heads=2, num_layers=1, card=32, frame_rate=48, segment_duration=10)
    counts = _record_remask_counts(build_reference_lm(shape), monkeypatch, shape, decoding_steps=[20, 10, 10, 10])
    assert counts == _our_counts((20, 10, 10, 10), shape.T // 3)


@pytest.mark.parametrize("units", [166, 500, 498, 1498])
@pytest.mark.parametrize("steps", [(20, 10, 10, 10), (60, 10, 10, 10)])
def test_remask_counts_match_reference_formula(units, steps):
    """T=500 (166 spans, or 498 tokens for stride1) and T=1500 (500 spans, 1498 tokens): the
    reference's expression evaluated with torch. (Its band-mask path needs T % 8 == 0, so these
    lengths cannot run through its generate here.)"""
    import math
    torch = reference.require("torch")
    want = [max(int((torch.cos(t * math.pi * 0.5) * units).item()), 1)
            for n in steps for t in torch.linspace(0, 1, n)]
    assert want == _our_counts(steps, units)
