"""MeLoDy's semantic LM: MusicGen with one codebook (delays (0,)) over semantic tokens, trained with
``musicgen_loss`` and sampled with the compiled KV-cache sampler."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from magnet_jax.lm.ar_sampler import ARSamplerConfig, MusicGenSampler
from magnet_jax.melody.semantic_lm import (generate_semantic_tokens, semantic_lm, semantic_lm_config,
                                           semantic_loss)


def test_config_is_one_stream_and_bad_inputs():
    cfg = semantic_lm_config(16, frame_rate=25, segment_duration=1.0, dim=32, num_heads=2, num_layers=1)
    assert (cfg.n_q, cfg.delays, cfg.card, cfg.frame_rate) == (1, (0,), 16, 25)
    with pytest.raises(ValueError, match="num_tokens"):
        semantic_lm_config(1, frame_rate=25, segment_duration=1.0)
    with pytest.raises(ValueError, match="one token stream"):
        semantic_lm(cfg.replace(n_q=2, delays=(0, 1)), rngs=nnx.Rngs(0))


def test_a_tiny_semantic_lm_learns_a_cycle_and_the_sampler_continues_it():
    """Sequences (s, s+1, ..., s+T-1) mod 5 with random s: after training, greedy decoding from a
    one-token prompt must continue the cycle exactly (an untrained LM does not)."""
    V, T = 5, 12
    cfg = semantic_lm_config(V, frame_rate=25, segment_duration=T / 25, dim=32, num_heads=2, num_layers=1,
                             cross_attention=False)
    model = semantic_lm(cfg, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))

    @jax.jit
    def step(state, key):
        m, o = nnx.merge(graphdef, state)
        start = jax.random.randint(key, (32, 1), 0, V)
        tokens = (start + jnp.arange(T)[None]) % V
        loss, grads = nnx.value_and_grad(lambda mm: semantic_loss(mm, tokens, None, key).loss)(m)
        o.update(m, grads)
        return nnx.state((m, o)), loss

    key = jax.random.key(0)
    for _ in range(150):
        key, sub = jax.random.split(key)
        state, loss = step(state, sub)
    trained = nnx.merge(graphdef, state)[0]
    prompt = jnp.arange(V)[:, None].astype(jnp.int32)                    # every start token
    out = generate_semantic_tokens(MusicGenSampler(trained), jax.random.key(1), frames=T, prompt=prompt,
                                   config=ARSamplerConfig(use_sampling=False))
    expected = (np.arange(V)[:, None] + np.arange(T)[None]) % V
    print(f"final loss {float(loss):.4f}")
    np.testing.assert_array_equal(np.asarray(out), expected)
    with pytest.raises(ValueError, match=r"\[batch, frames\]"):
        generate_semantic_tokens(MusicGenSampler(trained), jax.random.key(1), frames=T, prompt=prompt[0])
