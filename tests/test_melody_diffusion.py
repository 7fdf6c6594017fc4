"""MeLoDy's diffusion maths against closed forms (magnet_jax.melody.diffusion)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.melody import diffusion


@pytest.mark.parametrize("T", [1, 2, 5, 20, 100])
def test_step_angles_sum_to_half_pi_and_match_formula(T):
    omega = diffusion.step_angles(T)
    assert omega.shape == (T,)
    np.testing.assert_allclose(omega.sum(), math.pi / 2, rtol=0, atol=1e-12)
    for t in range(1, T + 1):
        assert omega[t - 1] == pytest.approx(math.pi / (6 * T) + 2 * math.pi * t / (3 * T * (T + 1)), abs=1e-15)
    assert np.all(np.diff(omega) > 0)          # larger steps at high noise (t near T)


def test_step_angles_hand_computed_T2():
    # omega_1 = pi/12 + 2pi/18 = 7pi/36, omega_2 = pi/12 + 4pi/18 = 11pi/36
    np.testing.assert_allclose(diffusion.step_angles(2), [7 * math.pi / 36, 11 * math.pi / 36], atol=1e-15)
    np.testing.assert_allclose(diffusion.angle_path(2), [0.0, 7 * math.pi / 36, math.pi / 2], atol=1e-15)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_step_angles_bad_input(bad):
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.step_angles(bad)


def _pair(shape, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, shape), jax.random.normal(k2, shape)


def test_velocity_identities_recover_x0_and_eps():
    x0, eps = _pair((3, 8, 5))
    for delta in [jnp.float32(0.3), jnp.array([0.0, 0.7, math.pi / 2]),
                  jax.random.uniform(jax.random.key(3), (3, 8), maxval=math.pi / 2)]:
        x_t = diffusion.diffuse(x0, eps, delta)
        v = diffusion.velocity(x0, eps, delta)
        np.testing.assert_allclose(diffusion.predict_x0(x_t, v, delta), x0, atol=2e-6)
        np.testing.assert_allclose(diffusion.predict_eps(x_t, v, delta), eps, atol=2e-6)
    # the endpoints: delta = 0 is data, pi/2 is noise; v at 0 is eps, at pi/2 is -x0
    np.testing.assert_allclose(diffusion.diffuse(x0, eps, 0.0), x0, atol=0)
    np.testing.assert_allclose(diffusion.diffuse(x0, eps, math.pi / 2), eps, atol=1e-6)
    np.testing.assert_allclose(diffusion.velocity(x0, eps, 0.0), eps, atol=0)
    np.testing.assert_allclose(diffusion.velocity(x0, eps, math.pi / 2), -x0, atol=1e-6)


def test_velocity_is_derivative_of_x_delta():
    x0, eps = _pair((2, 4, 3), seed=1)
    d, h = 0.6, 1e-3
    fd = (diffusion.diffuse(x0, eps, d + h) - diffusion.diffuse(x0, eps, d - h)) / (2 * h)
    np.testing.assert_allclose(fd, diffusion.velocity(x0, eps, d), atol=2e-3)


def test_angular_step_with_exact_velocity_walks_the_path_to_x0():
    x0, eps = _pair((2, 6, 3), seed=2)
    path, omegas = diffusion.angle_path(7), diffusion.step_angles(7)
    x = diffusion.diffuse(x0, eps, path[-1])
    for t in range(7, 0, -1):
        v = diffusion.velocity(x0, eps, path[t])
        x = diffusion.angular_step(x, v, omegas[t - 1])
        np.testing.assert_allclose(x, diffusion.diffuse(x0, eps, path[t - 1]), atol=1e-5)
    np.testing.assert_allclose(x, x0, atol=1e-5)


def test_guided_velocity():
    vc, vn = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
    np.testing.assert_allclose(diffusion.guided_velocity(vc, vn, 1.0), vc)
    np.testing.assert_allclose(diffusion.guided_velocity(vc, vn, 0.0), vn)
    np.testing.assert_allclose(diffusion.guided_velocity(vc, vn, 2.5), [0.5 + 2.5 * 0.5, -1.0 + 2.5 * 3.0])


def test_chunk_index_and_bad_lengths():
    np.testing.assert_array_equal(diffusion.chunk_index(8, 4), [0, 0, 1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="not divisible by num_chunks"):
        diffusion.chunk_index(10, 4)
    with pytest.raises(ValueError, match="num_chunks"):
        diffusion.chunk_index(8, 0)


def test_multichunk_noising_draws_independent_angles_per_chunk():
    B, T, C, M = 4000, 8, 2, 4
    x0 = jax.random.normal(jax.random.key(5), (B, T, C))
    x_t, v, delta = diffusion.multichunk_noising(jax.random.key(6), x0, M)
    delta = np.asarray(delta)
    chunks = delta.reshape(B, M, T // M)
    assert np.all(chunks == chunks[..., :1])                    # one angle per chunk
    per_chunk = chunks[..., 0]                                   # [B, M]
    assert per_chunk.min() >= 0 and per_chunk.max() <= math.pi / 2
    assert np.all(per_chunk[:, 0] != per_chunk[:, 1])           # chunks differ within a sample
    # independent U(0, pi/2): mean pi/4, variance (pi/2)^2/12, pairwise correlations ~0
    np.testing.assert_allclose(per_chunk.mean(0), math.pi / 4, atol=0.03)
    np.testing.assert_allclose(per_chunk.var(0), (math.pi / 2) ** 2 / 12, rtol=0.08)
    corr = np.corrcoef(per_chunk.T)
    assert np.abs(corr[np.triu_indices(M, 1)]).max() < 0.06     # 4 sigma at n=4000
    # and the example is self-consistent: x0 comes back from (x_t, v_target, delta)
    np.testing.assert_allclose(diffusion.predict_x0(x_t, v, delta), x0, atol=2e-5)


def test_multichunk_noising_bad_shape():
    with pytest.raises(ValueError, match=r"\[batch, frames, channels\]"):
        diffusion.multichunk_noising(jax.random.key(0), jnp.zeros((4, 8)), 4)
