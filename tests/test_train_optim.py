"""The optimisation recipe against audiocraft's own torch code: schedules, DAdaptAdam, EMA."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

from magnet_jax.train.optim import (OptimConfig, cosine_schedule, dadapt_adam, ema_update,
                                    inverse_sqrt_schedule, make_optimizer)


def _torch_lrs(make_sched, steps: int, lr: float) -> list[float]:
    torch = reference.require("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])     # the lr the next optimizer.step() uses
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_matches_audiocraft():
    optim = reference.require("audiocraft.optim")
    want = _torch_lrs(lambda o: optim.CosineLRScheduler(o, total_steps=50, warmup_steps=10,
                                                        lr_min_ratio=0.1, cycle_length=1.0), 60, 1.0)
    got = [float(cosine_schedule(1.0, 10, 50, 0.1)(i)) for i in range(60)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[0] == 0.0 and got[10] == pytest.approx(1.0)


def test_inverse_sqrt_schedule_matches_audiocraft():
    optim = reference.require("audiocraft.optim")
    want = _torch_lrs(lambda o: optim.InverseSquareRootLRScheduler(o, warmup_steps=8, warmup_init_lr=0.0),
                      40, 5e-4)
    got = [float(inverse_sqrt_schedule(5e-4, 8, 0.0)(i)) for i in range(40)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)


def test_dadapt_adam_matches_audiocraft_step_for_step():
    """Same params, same gradient sequence, same cosine schedule: same trajectory (incl. the
    no-op first warmup step at lr 0, decoupled weight decay, the D estimate)."""
    torch = reference.require("torch")
    optim = reference.require("audiocraft.optim")
    rng = np.random.default_rng(0)
    p0 = {"w": rng.normal(size=(6, 5)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    target = {k: rng.normal(size=v.shape).astype(np.float32) * 3 for k, v in p0.items()}
    tw, tb = (torch.nn.Parameter(torch.tensor(p0[k])) for k in ("w", "b"))
    topt = optim.DAdaptAdam([tw, tb], lr=1.0, betas=(0.9, 0.95), weight_decay=0.1)
    sched = optim.CosineLRScheduler(topt, total_steps=20, warmup_steps=4)
    tx = dadapt_adam(cosine_schedule(1.0, 4, 20), (0.9, 0.95), 1e-8, 0.1)
    params = jax.tree.map(jnp.asarray, p0)
    state = tx.init(params)
    update = jax.jit(tx.update)
    with jax.default_matmul_precision("highest"):
        for _ in range(15):   # gradients of |p - target|^2 at the current point: D has to grow
            g = {k: 2 * (np.asarray(params[k]) - target[k]) for k in params}
            tw.grad, tb.grad = torch.tensor(g["w"]), torch.tensor(g["b"])
            topt.step()
            sched.step()
            u, state = update(jax.tree.map(jnp.asarray, g), state, params)
            params = jax.tree.map(lambda p, d: p + d, params, u)
            np.testing.assert_allclose(np.asarray(params["w"]), tw.detach().numpy(), rtol=2e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(params["b"]), tb.detach().numpy(), rtol=2e-5, atol=1e-6)
    assert float(state.d) == pytest.approx(topt.param_groups[0]["d"], rel=1e-4)
    assert float(state.d) > 1e-6                        # D actually adapted


def test_adamw_and_clipping_match_torch():
    torch = reference.require("torch")
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=p0.shape).astype(np.float32) * 5 for _ in range(6)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    tx, _ = make_optimizer(OptimConfig(optimizer="adamw", lr=1e-2, schedule="constant", max_norm=1.0), 10)
    params, state = jnp.asarray(p0), None
    state = tx.init(params)
    for g in grads:
        tp.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([tp], 1.0)
        topt.step()
        u, state = tx.update(jnp.asarray(g), state, params)
        params = params + u
    np.testing.assert_allclose(np.asarray(params), tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_ema_matches_module_dict_ema():
    torch = reference.require("torch")
    optim = reference.require("audiocraft.optim")
    lin = torch.nn.Linear(3, 2)
    ema_ref = optim.ModuleDictEMA(torch.nn.ModuleDict({"m": lin}), decay=0.9, device="cpu")
    ema = {"weight": jnp.asarray(lin.weight.detach().numpy()), "bias": jnp.asarray(lin.bias.detach().numpy())}
    count = jnp.zeros([], jnp.float32)
    for i in range(5):
        with torch.no_grad():
            lin.weight.add_(float(i + 1))
            lin.bias.mul_(-1.5)
        ema_ref.step()
        params = {"weight": jnp.asarray(lin.weight.detach().numpy()), "bias": jnp.asarray(lin.bias.detach().numpy())}
        ema, count = ema_update(ema, params, count, 0.9)
    np.testing.assert_allclose(np.asarray(ema["weight"]), ema_ref.state["m"]["weight"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ema["bias"]), ema_ref.state["m"]["bias"].numpy(), rtol=1e-6)
    assert float(count) == pytest.approx(ema_ref.count)


def test_optim_config_errors():
    with pytest.raises(ValueError, match="optim.optimizer 'sgd'"):
        OptimConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="must exceed warmup"):
        make_optimizer(OptimConfig(schedule="cosine", warmup=100), total_steps=50)
