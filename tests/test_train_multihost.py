"""Two CPU processes (coordinator on 127.0.0.1) train with the same losses as one process over
the same global batch: each process reads its half of the data, the halves form one global
array, and the jitted step runs over both processes' devices."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.train.loop import build_trainer, host, initial_state
from test_train import T, data_dir, tiny  # noqa: F401  (module fixture reused)

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_over_the_same_global_batch(data_dir, tmp_path):  # noqa: F811
    overrides = ["lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", "lm.card=64",
                 f"lm.segment_duration={T / 50}", "train.batch_size=8", "train.progress=false",
                 "train.log_every=1", "train.eval_every=0", "train.steps=3", "train.checkpoint_every=3",
                 "optim.warmup=1", "optim.total_steps=1000", "data.prefetch=2", f"data.dir={data_dir}"]
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    logs = [tmp_path / f"process_{i}.log" for i in range(2)]   # files, not pipes: a full pipe
    procs = []                                                  # would stall one process mid-collective
    for i in range(2):
        with open(logs[i], "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "magnet_jax.train.cli", "train", "--config",
                 "configs/tiny_lm.py:unconditional", "--workdir", str(tmp_path / "run"),
                 "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                 *overrides], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=400)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [log.read_text() for log in logs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    summary = json.loads([line for line in outs[0].splitlines() if line.startswith("{")][-1])
    assert summary["processes"] == 2 and summary["devices"] == 4 and summary["mesh"]["data"] == 4
    got = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    data_files = sorted(f for f in os.listdir(tmp_path / "run" / "checkpoints" / "3" / "data") if f.endswith(".json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]

    # one process, one device, the global batch = process 0's half then process 1's half
    from data_pipelines.loader import LoaderConfig, make_train_loader
    cfg = tiny(data_dir, "train.steps=3", "optim.total_steps=1000")
    tr = build_trainer(cfg)
    state = initial_state(tr)
    loaders = [make_train_loader(Path(data_dir), LoaderConfig(batch_size=8, frames=T, seed=0), "train",
                                 process_index=i, process_count=2) for i in range(2)]
    want = []
    with jax.set_mesh(tr.mesh):
        for _ in range(3):
            halves = [next(it) for it in loaders]
            batch = {k: jnp.asarray(np.concatenate([h[k] for h in halves])) for k in ("codes", "padding_mask")}
            state, m = tr.train_step(state, batch, np.float32(0))
            want.append(float(host(m["loss"]).mean()))
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert want[-1] != want[0]
