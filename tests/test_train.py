"""The training loop: learning, mesh equivalence, exact resume, NaN skipping, mesh-changing restore,
fine-tuning with frozen layers, the span ablation, metrics files and bad-input errors.

Tiny model (dim 32, 1-2 layers, T = 24-32, card 64) on a fixed synthetic token set written in the
loader's format (repeating motifs: learnable, so the loss has somewhere to go).
"""
from __future__ import annotations

import json
import os
import signal
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.config_loader import load_config
from magnet_jax.train import sharding
from magnet_jax.train.checkpointing import CheckpointMismatch, Checkpoints
from magnet_jax.train.data import Batches, pattern_codes, write_token_dataset
from magnet_jax.train.loop import (NonFiniteError, abstract_with_shardings, build_trainer, host,
                                   initial_state, make_loss_fn, train)

T = 24                      # frames: 0.48 s at 50 Hz


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("tokens") / "magnet_tokens" / "1.0.0"
    return str(write_token_dataset(out, {"train": pattern_codes(rng, 32, 4, 40, 64),
                                         "valid": pattern_codes(rng, 8, 4, 40, 64)}, card=64))


@pytest.fixture(scope="module")
def minilm():
    from magnet_jax.text.encoder import TextEncoder
    return TextEncoder.minilm()


def tiny(data_dir: str, *overrides: str, text: bool = False) -> dict:
    base = ["lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", "lm.card=64",
            f"lm.segment_duration={T / 50}", "train.batch_size=8", "train.progress=false",
            "train.log_every=1", "train.eval_every=0", "train.eval_batches=1", "train.steps=6",
            "train.checkpoint_every=100", "optim.warmup=1",
            "optim.total_steps=1000", "mesh.devices=1", "data.prefetch=2",
            f"data.dir={data_dir}"]
    if text:
        base += ["text.max_tokens=16", "text.word_dropout=0.3", "text.cfg_dropout=0.3"]
    return load_config("configs/tiny_lm.py" + ("" if text else ":unconditional"), base + list(overrides))


def rows(workdir, split="train"):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if f'"split": "{split}"' in line]


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(host(x), host(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---------------------------------------------------------------- learning + metrics files

def _tb_scalars(path: str) -> dict[str, list[float]]:
    """Read a TensorBoard event file (TFRecord framing + Event protos from tensorboardX)."""
    from tensorboardX.proto import event_pb2
    out: dict[str, list[float]] = {}
    with open(path, "rb") as f:
        while header := f.read(12):
            (n,) = struct.unpack("<Q", header[:8])
            event = event_pb2.Event.FromString(f.read(n))
            f.read(4)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append(v.simple_value)
    return out


def test_tiny_model_loss_falls_well_below_its_start(data_dir, tmp_path):
    cfg = tiny(data_dir, "lm.num_layers=2", "train.steps=200", "train.log_every=20", "train.eval_every=100",
               "optim.lr=3e-3", "optim.warmup=10", "optim.total_steps=0")
    summary = train(cfg, tmp_path)
    losses = [r["loss"] for r in rows(tmp_path)]
    assert len(losses) == 10 and summary["step"] == 200
    # from ~ln(64) = 4.2 nats; a model that learned the motifs is far below
    assert losses[0] > 3.5 and losses[-1] < 0.6 * losses[0], losses
    valid = rows(tmp_path, "valid")
    assert [r["step"] for r in valid] == [100, 200]
    assert valid[-1]["ce"] < valid[0]["ce"] and valid[-1]["weights"] == "ema"
    last = rows(tmp_path)[-1]
    for key in ("lr", "grad_norm", "tokens_per_s", "accuracy", *[f"loss_stage{s}" for s in range(4)]):
        assert key in last
    assert last["tokens_per_s"] > 0
    events = [f for f in os.listdir(tmp_path / "tensorboard") if f.startswith("events.out.tfevents")]
    scalars = _tb_scalars(str(tmp_path / "tensorboard" / events[0]))
    np.testing.assert_allclose(scalars["train/loss"], losses, rtol=1e-6)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["100", "200"]


# ---------------------------------------------------------------- meshes

MESHES = [(8, 1, 1), (2, 2, 2), (1, 2, 4)]


@pytest.fixture(scope="module")
def one_device(data_dir):
    cfg = tiny(data_dir, "optim.optimizer=dadam", "optim.lr=1.0")
    tr = build_trainer(cfg)
    state = initial_state(tr)
    batches = Batches(cfg["data"], cfg["text"], None, tr.mesh, batch_size=8, frames=T, seed=0,
                      split="train", train=True)
    batch = {k: np.asarray(v) for k, v in batches.host_batch(0).items() if k != "descriptions"}
    host_state = jax.tree.map(host, state)
    loss_grads = jax.jit(jax.value_and_grad(make_loss_fn(tr.graphdef, cfg, False), has_aux=True))
    with jax.default_matmul_precision("highest"), jax.set_mesh(tr.mesh):
        (loss, _), grads = loss_grads(host_state["params"], batch, jax.random.key(5), 0.0)
        new, metrics = tr.train_step(state, jax.tree.map(jnp.asarray, batch), np.float32(0))
    return cfg, host_state, batch, float(loss), grads, jax.tree.map(host, new), jax.tree.map(host, metrics)


def _on_mesh(cfg, shape):
    cfg = dict(cfg, mesh=cfg["mesh"].__class__(*shape, devices=0))
    tr = build_trainer(cfg)
    return cfg, tr


def _place_batch(tr, batch):
    return {k: jax.device_put(v, sharding.logical_sharding(tr.mesh, "batch", *([None] * (v.ndim - 1))))
            for k, v in batch.items()}


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_loss_and_grads_on_meshes_equal_one_device(one_device, shape):
    cfg, host_state, batch, want_loss, want_grads, _, _ = one_device
    cfg, tr = _on_mesh(cfg, shape)
    params = jax.device_put(host_state["params"], tr.param_sh)
    w1 = params["lm"]["transformer"]["layers"]["ffn"]["linear1"]
    assert w1.sharding.shard_shape(w1.shape) == (1, 32 // shape[1], 64 // shape[2])   # really split
    loss_grads = jax.jit(jax.value_and_grad(make_loss_fn(tr.graphdef, cfg, False), has_aux=True),
                         in_shardings=(tr.param_sh, None, None, None), out_shardings=(None, tr.param_sh))
    with jax.default_matmul_precision("highest"), jax.set_mesh(tr.mesh):
        (loss, _), grads = loss_grads(params, _place_batch(tr, batch), jax.random.key(5), 0.0)
    assert abs(float(loss) - want_loss) <= 1e-5 * abs(want_loss)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(host(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_train_step_on_a_2x2x2_mesh_equals_one_device(one_device):
    """The whole step (D-Adapt Adam, clipping, EMA) with FSDP + tensor parallelism."""
    cfg, host_state, batch, _, _, want_state, want_m = one_device
    cfg, tr = _on_mesh(cfg, (2, 2, 2))
    with jax.default_matmul_precision("highest"), jax.set_mesh(tr.mesh):
        new, m = tr.train_step(jax.device_put(host_state, tr.state_sh), _place_batch(tr, batch), np.float32(0))
    np.testing.assert_allclose(host(m["loss"]), want_m["loss"], rtol=1e-5)
    np.testing.assert_allclose(host(m["grad_norm"]), want_m["grad_norm"], rtol=1e-4)
    for got, want in zip(jax.tree.leaves(new), jax.tree.leaves(want_state)):
        np.testing.assert_allclose(host(got), want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"axis 3 of size 4 cannot be split 8 ways"):
        _on_mesh(cfg, (1, 1, 8))


def test_gradient_accumulation_averages_micro_batches(one_device):
    cfg, host_state, batch, *_ = one_device
    cfg = dict(cfg, train=cfg["train"].__class__(**{**vars(cfg["train"]), "grad_accum": 2}))
    tr = build_trainer(cfg)
    loss_grads = jax.jit(jax.value_and_grad(make_loss_fn(tr.graphdef, cfg, False), has_aux=True))
    key = jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(host_state["rng"])), 0)
    keys = jax.random.split(key, 2)
    with jax.set_mesh(tr.mesh):
        _, m = tr.train_step(jax.device_put(host_state, tr.state_sh), jax.tree.map(jnp.asarray, batch), np.float32(0))
        micro = [loss_grads(host_state["params"], {k: v[j::2] for k, v in batch.items()}, keys[j], 0.0)
                 for j in range(2)]
    np.testing.assert_allclose(host(m["loss"]), [float(x[0][0]) for x in micro], rtol=1e-5)
    mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, micro[0][1], micro[1][1])
    np.testing.assert_allclose(host(m["grad_norm"]), float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(mean_grads)))),
                               rtol=1e-4)


def test_mesh_that_cannot_divide_the_batch_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the mesh's data-parallel size 8"):
        build_trainer(tiny(data_dir, "train.batch_size=6", "mesh.devices=0"))


# ---------------------------------------------------------------- resume, preemption, other mesh

def test_interrupted_and_resumed_run_is_bit_identical(data_dir, tmp_path, minilm):
    over = ("train.steps=8", "train.checkpoint_every=3", "train.keep_checkpoints=2", "optim.optimizer=dadam",
            "optim.lr=1.0")
    straight = train(tiny(data_dir, *over, text=True), tmp_path / "a", encoder=minilm)

    def preempt(step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
    first = train(tiny(data_dir, *over, text=True), tmp_path / "b", encoder=minilm, on_step=preempt)
    assert first["stopped"].startswith("signal") and first["step"] == 5
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["3", "5"]     # keep last 2
    resumed = train(tiny(data_dir, *over, text=True), tmp_path / "b", encoder=minilm)
    assert resumed["resumed_from"] == 5 and resumed["step"] == 8
    assert leaves_equal(straight["state"], resumed["state"])
    assert [r["loss"] for r in rows(tmp_path / "a")] == [r["loss"] for r in rows(tmp_path / "b")]
    assert [r["step"] for r in rows(tmp_path / "b")] == list(range(1, 9))
    # the text projection is trained jointly with the LM
    text0 = jax.tree.map(host, initial_state(build_trainer(tiny(data_dir, text=True), minilm))["params"]["text"])
    assert not leaves_equal(text0, straight["state"]["params"]["text"])


def test_restore_onto_another_mesh(data_dir, tmp_path):
    cfg = tiny(data_dir, "train.steps=3", "optim.optimizer=adamw", "optim.lr=1e-3")
    done = train(cfg, tmp_path)
    other = dict(cfg, mesh=cfg["mesh"].__class__(2, 2, 2, devices=0))
    tr = build_trainer(other)
    state = Checkpoints(tmp_path / "checkpoints", 2).restore(3, abstract_with_shardings(tr))
    assert leaves_equal(state, done["state"])
    emb = state["params"]["lm"]["emb"]
    assert emb.sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
    assert emb.sharding.shard_shape(emb.shape) == (4, 65, 16)       # embed split over fsdp
    # and training continues on the new mesh from the restored step
    summary = train(dict(other, train=cfg["train"].__class__(**{**vars(cfg["train"]), "steps": 4})), tmp_path)
    assert summary["resumed_from"] == 3 and summary["step"] == 4


def test_checkpoint_of_another_shape_is_a_clear_error(data_dir, tmp_path):
    train(tiny(data_dir, "train.steps=2"), tmp_path)
    wider = build_trainer(tiny(data_dir, "lm.dim=48"))
    with pytest.raises(CheckpointMismatch, match=r"ema/lm/emb: checkpoint \(4, 65, 32\), expected \(4, 65, 48\)"):
        Checkpoints(tmp_path / "checkpoints", 2).restore(2, abstract_with_shardings(wider))
    with pytest.raises(ValueError, match="different lm config .*dim: 32 -> 48"):
        train(tiny(data_dir, "lm.dim=48", "train.steps=2"), tmp_path)


# ---------------------------------------------------------------- stability

def test_injected_nan_step_is_skipped_and_counted(data_dir, tmp_path):
    two = train(tiny(data_dir, "train.steps=2"), tmp_path / "two")
    three = train(tiny(data_dir, "train.steps=3", "train.inject_nan_steps=3"), tmp_path / "three")
    assert three["nonfinite_total"] == 1 and int(three["state"]["step"]) == 3
    for part in ("params", "opt_state", "ema", "ema_count"):     # the poisoned update left no trace
        assert leaves_equal(two["state"][part], three["state"][part])
    last = rows(tmp_path / "three")[-1]
    assert last["step"] == 3 and last["skipped"] == 1 and last["loss"] is None
    with pytest.raises(NonFiniteError, match="stopped at step 3: 2 non-finite steps in a row"):
        train(tiny(data_dir, "train.steps=6", "train.inject_nan_steps=2,3,4", "train.max_nonfinite=2"),
              tmp_path / "bad")


# ---------------------------------------------------------------- fine-tuning

def test_finetune_from_converted_checkpoint_with_frozen_layers(data_dir, tmp_path):
    from flax import nnx

    from magnet_jax.lm.checkpoint import save_lm
    from magnet_jax.lm.model import MagnetLM
    cfg = tiny(data_dir, "lm.num_layers=2", "train.steps=3", "optim.optimizer=adamw", "optim.lr=1e-2",
               f"finetune.init_from={tmp_path / 'released'}", "finetune.freeze=emb,layers:0")
    released = MagnetLM(cfg["lm"], rngs=nnx.Rngs(123))
    save_lm(released, tmp_path / "released")
    want = nnx.to_pure_dict(nnx.state(released, nnx.Param))
    got = train(cfg, tmp_path / "run")["state"]["params"]["lm"]
    assert np.array_equal(host(got["emb"]), np.asarray(want["emb"]))                # frozen
    for name in ("in_proj", "out_proj"):
        g = host(got["transformer"]["layers"]["self_attn"][name])
        w = np.asarray(want["transformer"]["layers"]["self_attn"][name])
        assert np.array_equal(g[0], w[0]) and not np.array_equal(g[1], w[1])   # layer 0 frozen, 1 trained
    assert not np.array_equal(host(got["linears"]), np.asarray(want["linears"]))
    bad = tiny(data_dir, "lm.num_layers=3", f"finetune.init_from={tmp_path / 'released'}")
    with pytest.raises(ValueError, match="num_layers: checkpoint 2, config 3"):
        build_trainer(bad)
    with pytest.raises(ValueError, match="unknown part 'layer:0'"):
        build_trainer(tiny(data_dir, "finetune.freeze=layer:0"))


def test_finetune_from_audiocraft_export_loads_lm_and_text_projection(tmp_path):
    import lm_reference

    from magnet_jax.lm.convert import load_audiocraft_lm
    from magnet_jax.train.finetune import load_pretrained
    shape = lm_reference.RefLMShape()
    ref = lm_reference.build_reference_lm(shape)
    path = lm_reference.export_state_dict(ref, shape, tmp_path / "state_dict.bin", half=False)
    cfg, model, _ = load_audiocraft_lm(path)
    params, info = load_pretrained(str(path), cfg.replace(compute_dtype="bfloat16"), shape.text_dim)
    from flax import nnx
    want = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert leaves_equal(params["lm"], want)
    proj = ref.condition_provider.conditioners["description"].output_proj
    np.testing.assert_array_equal(params["text"]["output_proj"]["kernel"], proj.weight.detach().numpy().T)
    np.testing.assert_array_equal(params["text"]["output_proj"]["bias"], proj.bias.detach().numpy())
    assert "loaded from condition_provider.conditioners.description" in info["text_proj"]


# ---------------------------------------------------------------- the span ablation + CLI

def test_span_ablation_writes_a_table(data_dir, tmp_path):
    from magnet_jax.train.ablation import ablate_span
    cfg = tiny(data_dir, "train.steps=4", "train.eval_every=4")
    table = ablate_span(cfg, tmp_path, [1, 3])
    assert [r["span_len"] for r in table["rows"]] == [1, 3]
    assert all(np.isfinite(r[f"ce_stage{s}"]) for r in table["rows"] for s in range(4))
    md = (tmp_path / "span_table.md").read_text()
    assert md.startswith("| span_len | CE stage 0") and md.count("\n") == 4
    assert json.loads((tmp_path / "span_table.json").read_text())["rows"] == table["rows"]
    assert (tmp_path / "span_table.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "span_1" / "config.json").read_text())["lm"]["span_len"] == 1


def test_cli_reports_bad_input_as_one_line(data_dir, tmp_path, capsys):
    from magnet_jax.train.cli import main
    base = ["train", "--config", "configs/tiny_lm.py:unconditional", "--workdir", str(tmp_path)]
    assert main(base + ["train.nope=1"]) == 2
    assert "train has no field 'nope'" in capsys.readouterr().err
    assert main(base + [f"data.dir={data_dir}", "train.batch_size=6"]) == 2
    assert "not divisible by the mesh's data-parallel size 8" in capsys.readouterr().err
    assert main(base + ["data.dir=/nonexistent"]) == 2
    assert "not a tokenized dataset" in capsys.readouterr().err
    assert main(["ablate-span", "--config", "configs/tiny_lm.py:unconditional", "--workdir", str(tmp_path),
                 "--span-lens", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_prefetched_batches_equal_direct_reads_in_order(data_dir):
    """data.prefetch > 0 (a thread reads and places batches on the devices ahead of the step)
    yields the same batches, in the same order, with the same checkpoint positions, as reading
    each batch when it is needed."""
    cfg = tiny(data_dir)
    tr = build_trainer(cfg)
    direct, ahead = (Batches(cfg["data"], cfg["text"], None, tr.mesh, batch_size=8, frames=T, seed=0,
                             split="train", train=True, prefetch=p) for p in (0, 2))
    try:
        for step in range(6):
            a, b = direct.next(step), ahead.next(step)
            assert set(a) == set(b) and all(isinstance(v, jax.Array) for v in b.values())
            assert all(np.array_equal(host(a[k]), host(b[k])) for k in a)
            assert direct.consumed_state == ahead.consumed_state
    finally:
        direct.close()
        ahead.close()
