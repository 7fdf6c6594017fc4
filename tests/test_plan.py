"""``magnet-jax plan``: per-device memory equals the closed-form byte counts, fsdp divides it,
an oversized config is refused with the axis to grow, and the HLO walk counts hand-computed
FLOPs and collective bytes (loops multiplied by their trip counts)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from magnet_jax.config_loader import load_config
from magnet_jax.train import hlo, sharding
from magnet_jax.train.plan import advise, plan

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/tiny_lm.py:unconditional"


def _tiny(*overrides: str) -> dict:
    return load_config(str(REPO / "configs/tiny_lm.py") + ":unconditional", ["optim.optimizer=adamw", *overrides])


def lm_parameter_counts(dim: int, ffn: int, layers: int, n_q: int, card: int) -> tuple[int, int]:
    """(parameters split by 'embed' over fsdp, LayerNorm parameters kept whole) of an
    unconditional MAGNeT LM, counted by hand from the architecture: n_q tables of card + 1 rows,
    n_q heads of dim x card, per layer q|k|v (3 D^2) + out (D^2) + FFN (2 D F), no biases; a
    LayerNorm (scale + bias) before attention, before the FFN, and at the output."""
    split = n_q * (card + 1) * dim + n_q * dim * card + layers * (4 * dim * dim + 2 * dim * ffn)
    whole = (2 * layers + 1) * 2 * dim
    return split, whole


@pytest.fixture(scope="module")
def tiny_counts() -> tuple[int, int]:
    lm = _tiny()["lm"]
    return lm_parameter_counts(lm.dim, lm.ffn_dim, lm.num_layers, lm.n_q, lm.card)


def test_tiny_parameter_and_optimizer_bytes_equal_the_closed_form(tiny_counts):
    split, whole = tiny_counts
    report = plan(_tiny(), devices=4, device_kind="h100", mesh={"data": 4, "fsdp": 1, "tensor": 1}, sampler=False)
    mem = report["train"]["memory"]
    params = 4 * (split + whole)                     # float32, replicated over data
    assert mem["parameters"] == params
    # AdamW: mu and nu like the parameters, plus two int32 step counts (adam's and the schedule's)
    assert mem["optimizer_state"] == 2 * params + 2 * 4
    assert mem["ema"] == params + 4                  # the EMA copy and its float32 count
    # every input shard accounted for: their sum is XLA's own argument size
    groups = ("parameters", "optimizer_state", "ema", "other_state", "batch")
    assert sum(mem[g] for g in groups) == mem["arguments"]
    assert report["train"]["fits"] and report["train"]["per_device_batch"] == 2


def test_fsdp_four_divides_the_sharded_state_by_four(tiny_counts):
    split, whole = tiny_counts
    report = plan(_tiny(), devices=4, device_kind="h100", mesh={"data": 1, "fsdp": 4, "tensor": 1}, sampler=False)
    mem = report["train"]["memory"]
    params = 4 * (split // 4 + whole)                # LayerNorm scales and biases stay whole
    assert split % 4 == 0
    assert mem["parameters"] == params
    assert mem["optimizer_state"] == 2 * params + 2 * 4
    # fsdp all-gathers the weights it split and reduces their gradients
    kinds = report["train"]["time"]["collectives"]
    assert kinds["all-gather"]["largest_group"] == 4 and "all-reduce" in kinds


def test_oversized_config_does_not_fit_and_names_fsdp_which_then_fits():
    big = _tiny("lm.dim=256", "lm.ffn_dim=1024")
    split, whole = lm_parameter_counts(256, 1024, 2, 4, 2048)
    budget_gib = 4 * 4 * (split / 2 + whole) * 1.6 / 2**30      # under the unsplit state (16 bytes/param)
    report = plan(big, devices=4, device_kind="v5e", mesh={"data": 4, "fsdp": 1, "tensor": 1},
                  memory_budget_gib=budget_gib, sampler=False)
    train = report["train"]
    assert not train["fits"] and train["need_bytes"] > budget_gib * 2**30
    assert train["grow"]["axis"] == "fsdp" and "mesh.fsdp" in train["advice"]
    new_mesh = train["grow"]["mesh"]
    assert new_mesh["fsdp"] > 1 and new_mesh["data"] * new_mesh["fsdp"] == 4
    again = plan(big, devices=4, device_kind="v5e", mesh=new_mesh, memory_budget_gib=budget_gib, sampler=False)
    assert again["train"]["fits"], again["train"]["need_bytes"]


def test_activations_beyond_the_budget_ask_for_more_devices():
    """The decision when no mesh of these devices fits: every fsdp size up to data's devices is
    tried, then remat, then more devices are asked for (the compiles are replaced by a table of
    peaks here; the test above compiles for real)."""
    tried = []

    def peak_for(mesh, remat):
        tried.append((mesh["fsdp"], remat))
        return 9 * 2**30
    out = advise(10 * 2**30, 4 * 2**30, {"data": 4, "fsdp": 1, "tensor": 1}, False, 64, peak_for)
    assert tried == [(2, False), (4, False), (4, True)]
    assert not out["fits"] and out["grow"] == {"axis": "data", "factor": 4}
    assert "train.remat=true" in out["advice"] and "train.grad_accum=4" in out["advice"]
    fits_with_remat = advise(10 * 2**30, 4 * 2**30, {"data": 2, "fsdp": 1, "tensor": 1}, False, 64,
                             lambda mesh, remat: 2**30 if remat else 9 * 2**30)
    assert fits_with_remat["grow"] == {"axis": "fsdp", "mesh": {"data": 1, "fsdp": 2, "tensor": 1}, "remat": True}


# ---------------------------------------------------------------- the HLO walk, by hand

def test_hlo_flops_multiply_loop_bodies_and_collective_bytes_are_counted():
    mesh = sharding.make_mesh(4, 1, 1, devices=jax.devices()[:4])
    rows = NamedSharding(mesh, PartitionSpec("data"))
    whole = NamedSharding(mesh, PartitionSpec())
    L, B, D, F = 3, 8, 64, 128

    def f(w, x):
        def body(h, wl):
            return jnp.tanh(h @ wl[:, :D]), None
        h, _ = jax.lax.scan(body, x, w)
        return jax.lax.with_sharding_constraint(h, whole), jnp.sum(jnp.square(x))

    w = jax.ShapeDtypeStruct((L, D, F), jnp.float32, sharding=whole)
    x = jax.ShapeDtypeStruct((B, D), jnp.float32, sharding=rows)
    compiled = jax.jit(f, out_shardings=(whole, whole)).lower(w, x).compile()
    program = hlo.analyse(compiled.as_text(), 4)
    assert program.flops == L * 2 * (B // 4) * D * D       # per device: 2 rows, L scanned matmuls
    assert program.unknown_trip_counts == 0
    gathers = [c for c in program.collectives if c.kind == "all-gather"]
    assert sum(c.output_bytes * c.count for c in gathers) == B * D * 4
    assert sum(c.wire_bytes() * c.count for c in gathers) == pytest.approx(3 / 4 * B * D * 4)
    reduces = [c for c in program.collectives if c.kind == "all-reduce"]   # the sum's 4 partial sums
    assert [(c.operand_bytes, c.group_size, c.count) for c in reduces] == [(4, 4, 1)]


@pytest.mark.parametrize("attrs, groups", [
    ("replica_groups={{0,1},{2,3}}, dimensions={0}", ((0, 1), (2, 3))),
    ("replica_groups=[2,2]<=[4], dimensions={0}", ((0, 1), (2, 3))),
    ("replica_groups=[2,2]<=[2,2]T(1,0), dimensions={0}", ((0, 2), (1, 3))),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_0'}, dimensions={0}", ((0, 2), (1, 3))),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_1'}, dimensions={0}", ((0, 1), (2, 3))),
    ("replica_groups={}, dimensions={0}", ((0, 1, 2, 3),)),
    ("source_target_pairs={{0,1},{1,2},{2,3}}", ((0, 1), (1, 2), (2, 3))),
])
def test_replica_groups_in_each_spelling(attrs, groups):
    assert hlo.replica_groups(attrs, 4) == groups


def test_ring_wire_bytes():
    def one(kind, operand, output, g):
        return hlo.Collective("c", kind, operand, output, (tuple(range(g)),), 1).wire_bytes()
    assert one("all-reduce", 800, 800, 4) == 2 * 3 / 4 * 800
    assert one("all-gather", 200, 800, 4) == 3 / 4 * 800
    assert one("reduce-scatter", 800, 200, 4) == 3 / 4 * 800
    assert one("all-to-all", 800, 800, 2) == 400
    assert one("all-reduce", 800, 800, 1) == 0


# ---------------------------------------------------------------- the command

def test_plan_command_in_a_subprocess_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, "-m", "magnet_jax.cli", "plan", "--config", TINY, "--devices", "2",
                           "--mesh", "data=2", "--device-kind", "v5e", "--sampler-batch", "2", "--out", str(out),
                           "optim.optimizer=adamw"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train step: fits" in proc.stdout and "TPU v5e" in proc.stdout
    report = json.loads(out.read_text())
    assert report["devices"] == 2 and report["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
    sampler = report["sampler"]
    assert sampler["batch"] == 2 and sampler["memory"]["parameters"] == report["train"]["memory"]["parameters"]
    # the sampler's matmuls as counted in its HLO against lm/flops.py's closed form
    assert sampler["flops"]["hlo_over_closed_form"] == pytest.approx(1.0, abs=0.05)
    assert all(math.isfinite(report["train"]["time"][k]) for k in ("step_low_s", "step_high_s"))


@pytest.mark.parametrize("args, words", [
    (["--mesh", "data=2,pipeline=2"], "--mesh"),
    (["--devices", "0"], "--devices"),
    (["--mesh", "data=3"], "mesh"),
])
def test_plan_bad_input_is_one_line_exit_2(args, words):
    argv = ["plan", "--config", TINY, "--devices", "2", *args]
    if args[0] == "--devices":
        argv = ["plan", "--config", TINY, *args]
    proc = subprocess.run([sys.executable, "-m", "magnet_jax.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
