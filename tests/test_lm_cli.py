"""magnet-jax sample / convert-lm end to end, and the orbax round trip without torch."""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np

from lm_reference import RefLMShape, build_reference_lm, export_state_dict
from magnet_jax.cli import main
from magnet_jax.lm.checkpoint import load_lm
from magnet_jax.lm.convert import load_audiocraft_lm

SMALL = ["lm.dim=32", "lm.num_heads=2", "lm.num_layers=1", "lm.ffn_dim=64", "lm.card=32",
         "lm.segment_duration=1.0", "sampler.decoding_steps=2,1,1,1"]


def test_sample_writes_tokens_report_and_plot(tmp_path):
    assert main(["sample", "--config", "configs/bench_lm.py", "--out", str(tmp_path), *SMALL,
                 "num_samples=3", "batch_size=2"]) == 0
    codes = np.load(tmp_path / "tokens.npy")
    assert codes.shape == (3, 4, 48) and codes.max() < 32 and codes.min() >= 0
    report = json.loads((tmp_path / "sample.json").read_text())
    assert report["sampler"]["decoding_steps"] == [2, 1, 1, 1] and report["lm"]["dim"] == 32
    assert (tmp_path / "tokens.png").stat().st_size > 1000


def test_bad_override_and_bad_steps_are_one_line_errors(tmp_path, capsys):
    assert main(["sample", "--config", "configs/bench_lm.py", "--out", str(tmp_path), "lm.nope=1"]) == 2
    assert "no field 'nope'" in capsys.readouterr().err
    assert main(["sample", "--config", "configs/bench_lm.py", "--out", str(tmp_path), *SMALL,
                 "sampler.decoding_steps=2,1,1"]) == 2
    assert "decoding_steps [2, 1, 1] has 3 entries" in capsys.readouterr().err


def test_convert_then_load_without_torch(tmp_path):
    shape = RefLMShape(dim=32, num_heads=2, num_layers=2, card=32)
    path = export_state_dict(build_reference_lm(shape), shape, tmp_path / "state_dict.bin")
    assert main(["convert-lm", "--checkpoint", str(path), "--out", str(tmp_path / "conv")]) == 0
    _, direct, _ = load_audiocraft_lm(path)
    loaded = load_lm(tmp_path / "conv")
    codes = np.random.default_rng(0).integers(0, 32, (2, 4, shape.T))
    np.testing.assert_array_equal(np.asarray(loaded(codes, 1)), np.asarray(direct(codes, 1)))
    # a fresh interpreter loads the converted copy without importing torch
    probe = ("import sys; from magnet_jax.lm.checkpoint import load_lm; "
             f"m = load_lm({str(tmp_path / 'conv')!r}); assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**__import__('os').environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
