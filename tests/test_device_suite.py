"""``bench/device_suite.sh --smoke``: the accelerator script runs end to end on CPU with tiny
shapes, so the first GPU slot is not spent finding its bugs. The figures it collects are checked
against the shapes it was asked for (set in the script) and against each other."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from xla_flags import xla_flags

REPO = Path(__file__).resolve().parents[1]
# the script's own budget: benchmarks that would start past it are skipped. The smoke run has no
# optional benchmark to fill it (latency at batch 1 is the sampler benchmark), so it ends when its
# three benchmarks do, and a generous budget costs nothing on a quiet machine. 100 s and 220 s
# were both too little on a loaded one (beside the other test worker and background jobs the
# tiny train benchmark alone took 168 s, most of it compiling the four stages' programs); the
# budget's skip path has its own test below.
BUDGET_S = 600


def test_smoke_run_writes_every_figure_with_the_device_name(tmp_path):
    env = {**os.environ, "XLA_FLAGS": xla_flags()}      # one CPU device, as a GPU has one
    proc = subprocess.run(["bash", "bench/device_suite.sh", "--smoke", "--out", str(tmp_path),
                           "--budget", str(BUDGET_S)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=BUDGET_S + 90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "device_suite_cpu_smoke.json").read_text())
    assert summary["device"] == "cpu" and summary["smoke"] is True
    results = summary["results"]
    for name in ("train_small_bfloat16", "sampler_small_bfloat16", "plan_small"):
        assert results[name]["status"] == "ok", (name, results[name], proc.stderr[-2000:])

    train = results["train_small_bfloat16"]["figures"]
    assert train["shape"] == {"dim": 64, "heads": 4, "layers": 2, "card": 2048, "T": 480, "batch": 1,
                              "text_tokens": 8, "dtype": "bfloat16"}
    assert train["device"] == "cpu" and train["step_s"] > 0
    assert abs(train["tokens_per_s"] - 1 * 4 * 480 / train["step_s"]) < 1e-3 * train["tokens_per_s"] + 0.1

    sampler = results["sampler_small_bfloat16"]["figures"]
    # 1 s at 50 Hz = 50 frames, cut to whole 3-frame spans: 48; the smoke schedule
    assert sampler["shape"]["frames"] == 48 and sampler["shape"]["decoding_steps"] == [2, 1, 1, 1]
    assert sampler["shape"]["dim"] == 64 and sampler["shape"]["dtype"] == "bfloat16"
    assert 0 < sampler["call_s"] <= sampler["compile_plus_first_call_s"]

    plan = results["plan_small"]["figures"]
    low, high = plan["predicted_step_s"]
    assert plan["device_kind"] == "NVIDIA H100 SXM" and 0 < low <= high
    compared = summary["measured_vs_predicted_train_step"]
    assert compared["measured_step_s"] == train["step_s"] and compared["predicted_step_s"] == [low, high]
    raw = tmp_path / "device_suite_cpu_smoke"
    assert (raw / "train_small_bfloat16.json").is_file() and (raw / "sampler_small_bfloat16" / "sample.json").is_file()


def test_a_budget_too_small_skips_every_benchmark_and_says_why(tmp_path):
    """A benchmark that would start past the budget is recorded as skipped with the reason, never
    silently missing, and the summary is still written."""
    env = {**os.environ, "XLA_FLAGS": xla_flags()}
    proc = subprocess.run(["bash", "bench/device_suite.sh", "--smoke", "--out", str(tmp_path), "--budget", "5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "device_suite_cpu_smoke.json").read_text())["results"]
    assert set(results) == {"train_small_bfloat16", "sampler_small_bfloat16"}, results     # plan needs 60 s
    for name, row in results.items():
        assert row["status"] == "skipped" and row["detail"].startswith("budget: "), (name, row)
        assert row["figures"] is None
