"""Multi-host for real: ``magnet-jax tokenize`` and ``magnet-jax train`` as two CPU processes
joined by ``jax.distributed`` (coordinator on 127.0.0.1, gloo collectives), not simulated
process indices.

One pipeline runs once per module (about a minute on two cores): the two processes tokenize a
synthetic corpus (each writes its own shards, process 0 finalizes after a barrier), train 2
steps with the parameters split over both processes (mesh fsdp=4: each process holds half of
every weight, so each saves and restores its own half), then resume to step 3 from that
checkpoint. The checks compare against independent single-process computations: the same
corpus tokenized in one process, and the same model trained in one process on the global
batches formed from what each process's loader slice reads.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_data_common import synth_corpus, tokenize_cmd, tokenized_synth
from xla_flags import xla_flags

from data_pipelines import records
from magnet_jax.config_loader import load_config
from magnet_jax.train.loop import build_trainer, host, initial_state

REPO = Path(__file__).resolve().parents[1]
T = 24                      # frames of a training crop (0.48 s at 50 Hz)
BATCH, DEVICES_PER_PROCESS = 8, 2
TIMEOUT_S = 240             # per two-process command; a hung collective fails the test, not CI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(argv: list[str], logs: Path, cache: Path) -> list[str]:
    """Run ``argv`` as processes 0 and 1 of one jax.distributed job; their outputs. Output goes
    to files, not pipes: a full pipe would stall one process mid-collective."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               XLA_FLAGS=xla_flags(devices=DEVICES_PER_PROCESS),
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    logs.mkdir(parents=True, exist_ok=True)
    paths = [logs / f"process_{i}.log" for i in range(2)]
    procs = []
    for i, path in enumerate(paths):
        with open(path, "w") as log:
            procs.append(subprocess.Popen(
                [*argv, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = [path.read_text() for path in paths]
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} of {argv[2:4]} exited {p.returncode}:\n{out[-3000:]}"
    return outs


def last_json(text: str) -> dict:
    """The JSON summary a verb prints last (tokenize indents it; train prints one line)."""
    start = text.rindex("\n{") + 1 if "\n{" in text else text.index("{")
    return json.loads(text[start:])


def train_overrides(data: Path, steps: int) -> list[str]:
    return ["lm.dim=32", "lm.num_heads=4", "lm.num_layers=1", "lm.ffn_dim=64", f"lm.segment_duration={T / 50}",
            f"train.batch_size={BATCH}", "train.progress=false", "train.log_every=1", "train.eval_every=0",
            f"train.steps={steps}", "train.checkpoint_every=2", "train.jit_init=true", "optim.optimizer=adamw", "optim.warmup=1",
            "optim.total_steps=1000", "mesh.data=1", "mesh.fsdp=4", "data.prefetch=2", f"data.dir={data}"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("multihost")
    cache, tokens, run = root / "jax_cache", root / "tokens" / "magnet_tokens" / "1.0.0", root / "run"
    tok = run_two_processes(tokenize_cmd(synth_corpus(), tokens, "--clips-per-shard", "2"), root / "tokenize", cache)
    train = [sys.executable, "-m", "magnet_jax.train.cli", "train", "--config", "configs/tiny_lm.py:unconditional",
             "--workdir", str(run)]
    first = run_two_processes([*train, *train_overrides(tokens, 2)], root / "train", cache)
    resumed = run_two_processes([*train, *train_overrides(tokens, 3)], root / "resume", cache)
    return {"tokens": tokens, "run": run, "tokenize": [last_json(o) for o in tok],
            "first": last_json(first[0]), "resumed": last_json(resumed[0]), "resumed_log_1": resumed[1]}


def test_each_process_writes_its_own_shards_and_together_they_are_one_process_output(pipeline):
    lead, other = pipeline["tokenize"]
    # 6 clips, 2 per shard: process 0 takes shards 0 and 2, process 1 shard 1; process 0 finalizes
    assert lead["this_run"]["process_index"] == 0 and lead["this_run"]["shards_written"] == 2
    assert other["this_run"]["process_index"] == 1 and other["this_run"]["shards_written"] == 1
    assert lead["finished"] and not other["finished"] and lead["records"] == 12
    ref, ref_summary = tokenized_synth(6, 2)       # the same job in this one process
    names = sorted(p.name for p in records.shard_paths(ref, "train"))
    assert names == sorted(p.name for p in records.shard_paths(pipeline["tokens"], "train")) and len(names) == 3
    for name in names:
        assert (ref / name).read_bytes() == (pipeline["tokens"] / name).read_bytes(), name
    assert json.loads((pipeline["tokens"] / "dataset_info.json").read_text()) == \
        json.loads((ref / "dataset_info.json").read_text())


def test_both_processes_train_on_their_slices_and_resume_from_one_checkpoint(pipeline):
    first, resumed = pipeline["first"], pipeline["resumed"]
    assert first["processes"] == 2 and first["devices"] == 4 and first["mesh"]["fsdp"] == 4
    assert first["resumed_from"] is None and resumed["resumed_from"] == 2 and resumed["step"] == 3
    # each process checkpointed its own data iterator next to the (split) model state
    data_files = sorted(f for f in os.listdir(pipeline["run"] / "checkpoints" / "2" / "data") if f.endswith(".json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
    rows = [json.loads(line) for line in (pipeline["run"] / "metrics.jsonl").read_text().splitlines()]
    got = [r["loss"] for r in rows if r["split"] == "train"]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]

    # one process, four devices, the same fsdp=4 mesh; each global batch = what process 0's loader
    # slice reads, then process 1's: equal losses mean each process read its slice, and step 3
    # (after the restore) equal means both restored their halves of the step-2 checkpoint
    from data_pipelines.loader import LoaderConfig, make_train_loader
    cfg = load_config("configs/tiny_lm.py:unconditional",
                      train_overrides(pipeline["tokens"], 3) + ["mesh.devices=4"])
    trainer = build_trainer(cfg)
    state = initial_state(trainer)
    loaders = [make_train_loader(pipeline["tokens"], LoaderConfig(batch_size=BATCH, frames=T, seed=0), "train",
                                 process_index=i, process_count=2) for i in range(2)]
    want = []
    with jax.set_mesh(trainer.mesh):
        for _ in range(3):
            halves = [next(it) for it in loaders]
            assert halves[0]["codes"].shape == (BATCH // 2, 4, T)
            batch = {k: np.concatenate([h[k] for h in halves]) for k in ("codes", "padding_mask")}
            state, metrics = trainer.train_step(state, batch, np.float32(0))
            want.append(float(host(metrics["loss"]).mean()))
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert want[-1] != want[0]
