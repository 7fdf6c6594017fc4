"""The sampler's behaviour that needs no reference: bad inputs, determinism, sampling modes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig, least_probable_spans

CFG = LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, card=32, frame_rate=10, segment_duration=3)
STEPS = (3, 2, 2, 2)


@pytest.fixture(scope="module")
def sampler():
    return MagnetSampler(MagnetLM(CFG, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("steps,match", [((3, 2, 2), "has 3 entries; the model has 4 codebooks"),
                                         ((3, 0, 2, 2), "at least 1 step")])
def test_bad_decoding_steps(sampler, steps, match):
    with pytest.raises(ValueError, match=match):
        sampler.generate(jax.random.key(0), config=SamplerConfig(decoding_steps=steps))


def test_prompt_longer_than_output(sampler):
    prompt = jnp.zeros((1, 4, 30), jnp.int32)
    with pytest.raises(ValueError, match="prompt of 30 frames is not shorter than the output"):
        sampler.generate(jax.random.key(0), prompt=prompt)


def test_bad_options(sampler):
    for kw, match in [({"span_arrangement": "zigzag"}, "span_arrangement"), ({"top_p": 1.5}, "top_p"),
                      ({"span_scoring": "min"}, "span_scoring"), ({"temperature": 0.0}, "temperature")]:
        with pytest.raises(ValueError, match=match):
            sampler.generate(jax.random.key(0), config=SamplerConfig(decoding_steps=STEPS, **kw))
    with pytest.raises(ValueError, match="cond has shape"):
        sampler.generate(jax.random.key(0), cond=jnp.zeros((2, 3, 7)))


@pytest.mark.parametrize("kw", [dict(top_p=0.9), dict(top_p=0.0, top_k=5), dict(top_p=0.0),
                                dict(span_arrangement="stride1")])
def test_sampling_is_deterministic_per_key_and_complete(sampler, kw):
    cfg = SamplerConfig(decoding_steps=STEPS, **kw)
    cond = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, CFG.dim)), jnp.float32)
    a = np.asarray(sampler.generate(jax.random.key(1), cond=cond, config=cfg))
    b = np.asarray(sampler.generate(jax.random.key(1), cond=cond, config=cfg))
    c = np.asarray(sampler.generate(jax.random.key(2), cond=cond, config=cfg))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert a.shape == (3, 4, 30) and ((a >= 0) & (a < CFG.card)).all()


def test_top_k_one_equals_greedy_without_guidance(sampler):
    """top-k with k=1 can only draw the argmax: it must reproduce greedy decoding."""
    greedy = sampler.generate(jax.random.key(0), num_samples=2,
                              config=SamplerConfig(decoding_steps=STEPS, use_sampling=False))
    top1 = sampler.generate(jax.random.key(5), num_samples=2,
                            config=SamplerConfig(decoding_steps=STEPS, top_p=0.0, top_k=1))
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(top1))


def test_least_probable_spans_hand_case():
    """T=10, L=3, target 3 tokens: min_u=1, max_u=1 -> one window, the worst one (starting at 6)."""
    scores = jnp.array([0, 0, 0, 0, 0, 0, 5, 5, 5, 0], jnp.float32)
    mask = np.asarray(least_probable_spans(scores, jnp.int32(3), 3))
    np.testing.assert_array_equal(mask, [0, 0, 0, 0, 0, 0, 1, 1, 1, 0])
    # target 6: window sums by start are [12, 8, 4, 0, 0, 3, 6, 9]; min_u=2, max_u=4, mid=3 ->
    # windows {0, 7, 1} cover 7 tokens > 6, so max_u=3 and mid=round(2.5)=2 ends the search; the
    # reference returns the last mask its loop evaluated: the 7 tokens, not 6.
    scores = jnp.array([4, 4, 4, 0, 0, 0, 0, 3, 3, 3], jnp.float32)
    mask = np.asarray(least_probable_spans(scores, jnp.int32(6), 3))
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("span_len", [2, 3, 5])
def test_least_probable_spans_equal_reference(span_len):
    """Against audiocraft's _least_probable_span_masking on random scores as decoding produces
    them: masked tokens score -log p > 0, unmasked ones -1e4, and the target never exceeds the
    number masked at the previous step. Cases where two windows the search can reach have exactly equal
    sums are left out: beyond 16 elements torch's CPU argsort is an introsort whose tie order is
    implementation-defined (we break ties by position), documented in docs/magnet-lm.md."""
    import types
    import reference
    torch = reference.require("torch")
    lm_magnet = reference.require("audiocraft.models.lm_magnet")
    fake = types.SimpleNamespace(span_len=span_len)
    fake._construct_spans_mask = lambda starts, T, device: lm_magnet.MagnetLMModel._construct_spans_mask(
        fake, starts, T, device)
    rng = np.random.default_rng(span_len)
    search = jax.jit(lambda s, n: least_probable_spans(s, n, span_len))
    compared = 0
    for trial in range(40):
        T = (23, 48)[trial % 2]  # two lengths: one compilation each
        scores = (3 * rng.exponential(size=T)).astype(np.float32)
        scores[rng.random(T) < 0.4] = -1e4
        target = int(rng.integers(1, (scores > 0).sum() + 1))
        n = T - span_len + 1
        sums = sum(scores[l:l + n] for l in range(span_len))
        reachable = np.sort(sums)[::-1][: max(target, span_len) - span_len + 2]  # max_u + 1 windows
        if len(np.unique(reachable)) < len(reachable):
            continue
        compared += 1
        want = lm_magnet.MagnetLMModel._least_probable_span_masking(
            fake, torch.as_tensor(scores).view(1, 1, -1), target)[0, 0].numpy()
        got = np.asarray(search(jnp.asarray(scores), jnp.int32(target)))
        np.testing.assert_array_equal(got, want, err_msg=f"T={T} target={target}")
    assert compared >= 15, f"only {compared} tie-free cases"


def test_nucleus_and_top_k_sets_equal_sorting():
    """The bisection thresholds keep exactly the sets torch's sort-based rules keep."""
    from magnet_jax.lm.sampler import kth_largest, top_p_threshold
    logits = np.random.default_rng(0).normal(size=(64, 300)).astype(np.float32) * 3
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
    for top_p in (0.1, 0.5, 0.9, 0.99):
        order = np.argsort(-p, -1, kind="stable")
        ps = np.take_along_axis(p, order, -1)
        keep_sorted = (np.cumsum(ps, -1) - ps) <= top_p
        want = np.zeros_like(keep_sorted)
        np.put_along_axis(want, order, keep_sorted, -1)
        got = p >= np.asarray(top_p_threshold(jnp.asarray(p), top_p))[:, None]
        np.testing.assert_array_equal(got, want)
    for k in (1, 7, 50):
        kth = np.sort(p, -1)[:, -k]
        np.testing.assert_array_equal(np.asarray(kth_largest(jnp.asarray(p), k)), kth)


def test_inverse_cdf_draws_follow_the_weights():
    """Chi-square-style check: empirical frequencies match the weights."""
    from magnet_jax.lm.sampler import sample_from_weights
    w = jnp.array([0.0, 1.0, 2.0, 0.0, 5.0])
    draws = np.asarray(sample_from_weights(jax.random.key(0), jnp.broadcast_to(w, (20000, 5))))
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, np.asarray(w / w.sum()), atol=0.01)
    assert freq[0] == 0 and freq[3] == 0
