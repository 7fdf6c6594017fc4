"""The DPD network and MeLoDy's compiled diffusion sampler (magnet_jax.melody.dpd / sampler)."""
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from magnet_jax.melody import diffusion
from magnet_jax.melody.dpd import DPD, DPDConfig, dpd_config_from_json
from magnet_jax.melody.objective import velocity_loss
from magnet_jax.melody.sampler import DiffusionSampler, DiffusionSamplerConfig, generate_latents
from magnet_jax.train.sharding import LOGICAL_AXIS_RULES

TINY = DPDConfig(latent_dim=3, dim=16, num_heads=2, ffn_dim=32, num_blocks=2, segment_length=2,
                 semantic_vocab=5, num_chunks=4)


def test_dpd_shapes_axis_names_and_bad_inputs():
    dpd = DPD(TINY, rngs=nnx.Rngs(0))
    model = jax.jit(lambda *a: dpd(*a))          # one compile per shape instead of op by op
    x = jnp.ones((2, 8, 3))
    v = model(x, jnp.full((2, 8), 0.4), jnp.zeros((2, 3), jnp.int32))
    assert v.shape == (2, 8, 3) and bool(jnp.all(jnp.isfinite(v)))
    rules = dict(LOGICAL_AXIS_RULES)
    for path, p in nnx.to_flat_state(nnx.state(dpd, nnx.Param)):
        names = p.get_metadata()["out_sharding"]
        assert len(names) == p[...].ndim, path
        assert all(n is None or n in rules for n in names), (path, names)
    with pytest.raises(ValueError, match="segment_length"):
        model(jnp.ones((2, 7, 3)), jnp.zeros((2,)), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"latents must be \[batch, frames, 3\]"):
        model(jnp.ones((2, 8, 4)), jnp.zeros((2,)), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="angles must be"):
        model(x, jnp.zeros((2, 5)), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="semantic tokens"):
        model(x, jnp.zeros((2,)), jnp.zeros((3, 3), jnp.int32))
    with pytest.raises(ValueError, match="heads"):
        DPDConfig(dim=18, num_heads=4)
    with pytest.raises(ValueError, match=r"conditioning 'film': use one of \('cross', 'add'\)"):
        DPDConfig(conditioning="film")


def test_a_saved_dpd_config_without_conditioning_means_the_added_tokens_it_was_trained_with():
    fields = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "conditioning"}
    assert TINY.conditioning == "cross"                          # the paper's, for new models
    assert dpd_config_from_json(fields) == dataclasses.replace(TINY, conditioning="add")
    assert dpd_config_from_json(dataclasses.asdict(TINY)) == TINY


@pytest.mark.parametrize("conditioning", ["cross", "add"])
def test_dpd_condition_and_dropout_change_the_prediction(conditioning):
    model = DPD(dataclasses.replace(TINY, conditioning=conditioning), rngs=nnx.Rngs(1))
    assert (model.blocks[0].cross is not None) == (conditioning == "cross")
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 8, 3)), (2, 8, 3))
    d = jnp.full((2,), 0.7)
    a = model(x, d, jnp.array([[0, 1, 2], [0, 1, 2]]))
    b = model(x, d, jnp.array([[0, 1, 2], [4, 4, 4]]))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)                 # rows are independent
    assert float(jnp.abs(a[1] - b[1]).max()) > 1e-3
    null = model(x, d, jnp.array([[0, 1, 2], [4, 4, 4]]), jnp.array([True, True]))
    np.testing.assert_allclose(null[0], null[1], atol=1e-6)           # dropped = same null token
    # the dual path reaches every frame: changing frame 0 changes frame 7 (other segment)
    x2 = x.at[:, 0].add(1.0)
    assert float(jnp.abs(model(x2, d, jnp.zeros((2, 3), jnp.int32))[:, 7]
                         - model(x, d, jnp.zeros((2, 3), jnp.int32))[:, 7]).max()) > 1e-4


class PointMassOracle:
    """The exact velocity for data that is one point: x* (conditional rows) or x' (dropped rows).
    For a point mass, v = cot(delta) x_delta - x0 / sin(delta), affine in x0, so CFG with scale w
    is the exact velocity of the point x' + w (x* - x')."""

    def __init__(self, cfg, x_star, x_null):
        self.cfg, self.x_star, self.x_null = cfg, x_star, x_null

    def __call__(self, x_t, delta, semantic, drop=None):
        n = x_t.shape[0]
        target = jnp.broadcast_to(self.x_star, x_t.shape)
        if drop is not None:
            target = jnp.where(drop[:, None, None], jnp.broadcast_to(self.x_null, x_t.shape), target)
        d = delta[..., None]
        s = jnp.where(d > 0, jnp.sin(d), 1.0)
        v = jnp.cos(d) / s * x_t - target / s
        return jnp.where(d > 0, v, 0.0)


@pytest.mark.parametrize("chunkwise", [False, True])
@pytest.mark.parametrize("w", [1.0, 2.5])
def test_sampler_with_exact_velocity_lands_on_the_data(chunkwise, w):
    B, T, C = 2, 8, 3
    x_star = jax.random.normal(jax.random.key(1), (1, T, C))
    x_null = jax.random.normal(jax.random.key(2), (1, T, C))
    oracle = PointMassOracle(TINY, x_star, x_null)
    cfg = DiffusionSamplerConfig(num_steps=6, cfg_scale=w, chunkwise=chunkwise)
    noise = jax.random.normal(jax.random.key(3), (B, T, C))
    out = jax.jit(lambda n: generate_latents(oracle, jnp.zeros((B, 2), jnp.int32), n, jnp.zeros_like(n), 0, cfg))(noise)
    expected = x_null + w * (x_star - x_null)
    np.testing.assert_allclose(out, jnp.broadcast_to(expected, out.shape), atol=2e-4)


def test_sampler_continuation_keeps_finished_chunks_unchanged():
    model = DPD(TINY, rngs=nnx.Rngs(2))
    sampler = DiffusionSampler(model)
    sem = jnp.array([[1, 2, 3], [0, 4, 2]])
    prefix = jax.random.normal(jax.random.key(7), (2, 8, 3)) * 3.0
    cfg = DiffusionSamplerConfig(num_steps=4, cfg_scale=2.5)
    out = sampler.generate(jax.random.key(0), sem, frames=8, prefix=prefix, prefix_chunks=2, config=cfg)
    np.testing.assert_array_equal(np.asarray(out[:, :4]), np.asarray(prefix[:, :4]))   # bit-exact
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.abs(out[:, 4:] - prefix[:, 4:]).min()) > 0
    # chunk-by-chunk: generating chunk 2 alone, then chunk 3 on top, keeps chunk 2 as well
    step1 = sampler.generate(jax.random.key(1), sem, frames=8, prefix=prefix, prefix_chunks=2, config=cfg)
    step2 = sampler.generate(jax.random.key(2), sem, frames=8, prefix=step1, prefix_chunks=3, config=cfg)
    np.testing.assert_array_equal(np.asarray(step2[:, :6]), np.asarray(step1[:, :6]))
    for kwargs, match in [(dict(prefix_chunks=4, prefix=prefix), "prefix_chunks"),
                          (dict(prefix_chunks=1), "no prefix"),
                          (dict(prefix_chunks=1, prefix=prefix[:, :4]), "prefix has shape")]:
        with pytest.raises(ValueError, match=match):
            sampler.generate(jax.random.key(0), sem, frames=8, config=cfg, **kwargs)
    with pytest.raises(ValueError, match="num_chunks"):
        sampler.generate(jax.random.key(0), sem, frames=6, config=cfg)
    with pytest.raises(ValueError, match="num_steps"):
        sampler.generate(jax.random.key(0), sem, frames=8, config=DiffusionSamplerConfig(num_steps=0))


def test_dpd_learns_an_unbalanced_two_mode_mixture_and_its_condition():
    """Train a tiny DPD on x0 = s * mu (all frames) + 0.05 noise with P(s=+1) = 0.3, P(s=-1) = 0.7,
    the semantic token telling the mode (1: +mu, 0: -mu), dropped to the null with p = 0.5 (the
    null rows learn the mixture's weights, so they get half the batch). The DPD cross-attends to
    the token (the default conditioning). Null-conditioned samples must land on the modes (not
    between them) in the 0.3 / 0.7 proportion; token-conditioned samples on their own mode. An
    untrained or wrongly-sampled model gives neither.

    Tolerance: the fraction of +mode null samples was 0.320, 0.318, 0.306 for model seeds 0, 1, 2
    (2000 samples: sampling error 0.01); with a constant learning rate and dropout 0.3 it spread
    over 0.23-0.47, hence the cosine decay here."""
    cfg = DPDConfig(latent_dim=2, dim=32, num_heads=2, ffn_dim=64, num_blocks=1, segment_length=2,
                    semantic_vocab=2, num_chunks=2, cond_dropout=0.5)
    T, mu = 4, jnp.array([1.0, -0.5])
    model = DPD(cfg, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(optax.cosine_decay_schedule(3e-3, 400)), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))

    def data(key, n):
        k1, k2 = jax.random.split(key)
        pos = jax.random.bernoulli(k1, 0.3, (n,))
        s = jnp.where(pos, 1.0, -1.0)[:, None, None]
        return s * mu + 0.05 * jax.random.normal(k2, (n, T, 2)), pos.astype(jnp.int32)[:, None]

    @jax.jit
    def train_step(state, key):
        m, o = nnx.merge(graphdef, state)
        k1, k2 = jax.random.split(key)
        x0, semantic = data(k1, 256)
        loss, grads = nnx.value_and_grad(lambda mm: velocity_loss(mm, k2, x0, semantic))(m)
        o.update(m, grads)
        return nnx.state((m, o)), loss

    start = time.perf_counter()
    key = jax.random.key(42)
    for i in range(400):
        key, sub = jax.random.split(key)
        state, loss = train_step(state, sub)
    sampler = DiffusionSampler(nnx.merge(graphdef, state)[0])

    def sample(token):        # token 2 = semantic_vocab: the null condition
        x = sampler.generate(jax.random.key(9), jnp.full((2000, 1), token, jnp.int32), frames=T,
                             config=DiffusionSamplerConfig(num_steps=20, cfg_scale=1.0, chunkwise=False))
        proj = (np.asarray(x) @ np.asarray(mu)) / float(mu @ mu)        # +1 / -1 at the modes
        return proj, float((proj.mean(1) > 0).mean()), float((np.abs(np.abs(proj) - 1.0) < 0.25).mean())

    proj, frac_pos, near = sample(2)
    _, frac_1, near_1 = sample(1)
    _, frac_0, near_0 = sample(0)
    print(f"loss {float(loss):.4f} null: frac(+mode) {frac_pos:.3f} near-mode frames {near:.3f}; "
          f"token 1: {frac_1:.3f}; token 0: {frac_0:.3f}; {time.perf_counter() - start:.1f}s")
    assert abs(frac_pos - 0.3) < 0.05
    assert near > 0.95 and near_1 > 0.95 and near_0 > 0.95
    # frames of one sample agree on the mode (the model ties the sequence together)
    assert float((np.sign(proj) == np.sign(proj[:, :1])).all(1).mean()) > 0.95
    assert frac_1 > 0.98 and frac_0 < 0.02
