"""``bench/device_suite.sh --smoke``: the accelerator script runs end to end on CPU with tiny
shapes, so the first GPU slot is not spent finding its bugs. The figures it collects are checked
against the shapes it was asked for (set in the script) and against each other."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the script's own budget: benchmarks that would start past it are skipped. 100 s was enough for
# a test process alone, not beside the other test worker and the script's own background `plan`
# (the train benchmark then timed out at 80 s), so the smoke run gets 220 s
BUDGET_S = 220


def test_smoke_run_writes_every_figure_with_the_device_name(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}      # one CPU device, as a GPU has one
    proc = subprocess.run(["bash", "bench/device_suite.sh", "--smoke", "--out", str(tmp_path),
                           "--budget", str(BUDGET_S)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=BUDGET_S + 90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "device_suite_cpu_smoke.json").read_text())
    assert summary["device"] == "cpu" and summary["smoke"] is True
    results = summary["results"]
    for name in ("train_small_bfloat16", "sampler_small_bfloat16", "plan_small"):
        assert results[name]["status"] == "ok", (name, results[name], proc.stderr[-2000:])
    # a benchmark is either done or skipped for a stated reason, never silently missing
    latency = results["latency_small_bfloat16_batch2"]
    assert latency["status"] == "ok" or latency["detail"].startswith("budget"), latency

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
