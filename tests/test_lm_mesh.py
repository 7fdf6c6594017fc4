"""The loss and the sampler on (data, fsdp, tensor) meshes give the single-device numbers."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.objective import magnet_loss, span_count_lut
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig
from magnet_jax.train import sharding

CFG = LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=256, card=64, frame_rate=24, segment_duration=2)
MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]
B = 8


@pytest.fixture(scope="module")
def setup():
    model = MagnetLM(CFG, rngs=nnx.Rngs(7))
    rng = np.random.default_rng(0)
    codes = jnp.asarray(rng.integers(0, CFG.card, (B, CFG.n_q, CFG.sequence_len)), jnp.int32)
    cond = jnp.asarray(rng.normal(size=(B, 5, CFG.dim)), jnp.float32)
    return model, codes, cond


def _loss_fn(graphdef, lut):
    def loss(state, codes, cond, key):
        out = magnet_loss(nnx.merge(graphdef, state), codes, cond, key, lut=lut, cfg_dropout=0.0)
        return out.loss
    return jax.value_and_grad(loss)


@pytest.fixture(scope="module")
def single_device(setup):
    model, codes, cond = setup
    graphdef, state = nnx.split(model)
    lut = jnp.asarray(span_count_lut(CFG.sequence_len, CFG.span_len))
    with jax.default_matmul_precision("highest"):
        loss, grads = jax.jit(_loss_fn(graphdef, lut))(state, codes, cond, jax.random.key(3))
        tokens = MagnetSampler(model).generate(jax.random.key(0), cond=cond, config=SamplerConfig(
            decoding_steps=(3, 2, 2, 2), use_sampling=False))
    return float(loss), grads, np.asarray(tokens)


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_loss_and_grads_on_mesh_equal_single_device(setup, single_device, shape):
    model, codes, cond = setup
    mesh = sharding.make_mesh(*shape)
    graphdef, state = nnx.split(model)
    state_sh = sharding.state_shardings(state, mesh)
    batch_sh = sharding.logical_sharding(mesh, "batch", None, None)
    lut = jnp.asarray(span_count_lut(CFG.sequence_len, CFG.span_len))
    fn = jax.jit(_loss_fn(graphdef, lut), in_shardings=(state_sh, batch_sh, batch_sh, None),
                 out_shardings=(None, state_sh))
    with jax.default_matmul_precision("highest"), jax.set_mesh(mesh):
        loss, grads = fn(jax.device_put(state, state_sh), jax.device_put(codes, batch_sh),
                         jax.device_put(cond, batch_sh), jax.random.key(3))
    want_loss, want_grads, _ = single_device
    assert abs(float(loss) - want_loss) <= 1e-5 * abs(want_loss)
    # parameters really are split: the FFN's mlp axis over 'tensor', embed over 'fsdp'
    w1 = jax.device_put(state, state_sh)["transformer"]["layers"]["ffn"]["linear1"][...]
    assert w1.sharding.shard_shape(w1.shape) == (CFG.num_layers, CFG.dim // shape[1], CFG.ffn_dim // shape[2])
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_greedy_tokens_on_mesh_equal_single_device(setup, single_device, shape):
    model, _, cond = setup
    sampler = MagnetSampler(model, mesh=sharding.make_mesh(*shape))
    with jax.default_matmul_precision("highest"):
        tokens = sampler.generate(jax.random.key(0), cond=cond, config=SamplerConfig(
            decoding_steps=(3, 2, 2, 2), use_sampling=False))
    np.testing.assert_array_equal(np.asarray(tokens), single_device[2])


def test_batch_the_mesh_cannot_divide_is_a_clear_error(setup):
    model, _, cond = setup
    sampler = MagnetSampler(model, mesh=sharding.make_mesh(4, 2, 1))
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the mesh's data-parallel size 8"):
        sampler.generate(jax.random.key(0), cond=cond[:6])


def test_mesh_sizes_are_checked():
    with pytest.raises(ValueError, match="needs 12 devices"):
        sharding.make_mesh(3, 2, 2)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        sharding.make_mesh(-1, -1, 2)
    assert dict(sharding.make_mesh(-1, 2, 2).shape) == {"data": 2, "fsdp": 2, "tensor": 2}


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_musicgen_greedy_tokens_on_mesh_equal_single_device(setup, shape):
    """MusicGen's KV-cache sampler (weights sliced per layer once, a cache buffer per layer) on
    each mesh: the parameters split over fsdp / tensor, the batch over data; tokens as on one device."""
    from magnet_jax.lm.ar_sampler import ARSamplerConfig, MusicGenSampler
    from magnet_jax.lm.musicgen import MusicGenConfig, MusicGenLM
    _, _, cond = setup
    mg = MusicGenLM(MusicGenConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=256, card=64, frame_rate=24,
                                   segment_duration=2), rngs=nnx.Rngs(5))
    greedy = ARSamplerConfig(use_sampling=False)
    prompt = jnp.asarray(np.random.default_rng(1).integers(0, 64, (B, 4, 3)), jnp.int32)
    with jax.default_matmul_precision("highest"):
        want = MusicGenSampler(mg).generate(jax.random.key(0), frames=12, cond=cond, prompt=prompt, config=greedy)
        got = MusicGenSampler(mg, mesh=sharding.make_mesh(*shape)).generate(
            jax.random.key(0), frames=12, cond=cond, prompt=prompt, config=greedy)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert len(set(np.asarray(want)[:, 0, 3:].ravel().tolist())) > 1      # not one repeated token
