"""Sampler latency, ours against audiocraft's MagnetLMModel.generate, same random weights, one run.

Shapes (issue 2): dim 512, 8 heads, 8 layers, card 2048, T = 480, batch 1, decoding steps
[20, 10, 10, 10], CFG on (a 1-token LUT text condition on the reference side; the same projected
condition on ours), default sampling (temperature 3 annealed, top-p 0.9). Prints JSON and writes
bench/results/sampler_<device>.json. FLOP formula: magnet_jax/lm/flops.py.

    python bench/bench_sampler.py [--layers 8] [--dim 512] [--repeats 2] [--batch 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MAGNET_JAX_REQUIRE_REFERENCE", "1")


def matmul_peak_jax(repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp
    best = 0.0
    for (m, k, n) in [(960, 512, 2048), (2048, 2048, 2048)]:
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32)
        f = jax.jit(lambda x, y: x @ y)
        f(a, b).block_until_ready()
        t = min(_timed(lambda: f(a, b).block_until_ready()) for _ in range(repeats))
        best = max(best, 2 * m * k * n / t)
    return best


def matmul_peak_torch(repeats: int = 5) -> float:
    import torch
    best = 0.0
    for (m, k, n) in [(960, 512, 2048), (2048, 2048, 2048)]:
        a, b = torch.ones(m, k), torch.ones(k, n)
        a @ b
        t = min(_timed(lambda: a @ b) for _ in range(repeats))
        best = max(best, 2 * m * k * n / t)
    return best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--card", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", default="20,10,10,10")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()

    import jax
    import numpy as np
    import torch
    from lm_reference import RefLMShape, build_reference_lm, export_state_dict, reference_condition
    from magnet_jax.lm.convert import load_audiocraft_lm
    from magnet_jax.lm.flops import sampler_flops
    from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig

    steps = [int(s) for s in args.steps.split(",")]
    shape = RefLMShape(dim=args.dim, num_heads=args.heads, num_layers=args.layers, card=args.card,
                       frame_rate=48, segment_duration=10)
    ref = build_reference_lm(shape, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, ours, _ = load_audiocraft_lm(export_state_dict(ref, shape, Path(tmp) / "state_dict.bin", half=False))
    texts = [f"prompt {i}" for i in range(args.batch)]
    attrs, _, cond = reference_condition(ref, texts)
    S = cond.shape[1]
    sampler = MagnetSampler(ours)
    scfg = SamplerConfig(decoding_steps=tuple(steps))

    t0 = time.perf_counter()
    sampler.generate(jax.random.key(0), cond=cond, config=scfg).block_until_ready()
    first = time.perf_counter() - t0
    ours_times = [_timed(lambda i=i: sampler.generate(jax.random.key(i + 1), cond=cond, config=scfg)
                         .block_until_ready()) for i in range(args.repeats)]
    ours_s = min(ours_times)

    ref_s = None
    if not args.skip_reference:
        def run_ref():
            with torch.no_grad():
                ref.generate(conditions=attrs, max_gen_len=shape.T, use_sampling=True, temp=3.0, top_k=0,
                             top_p=0.9, decoding_steps=steps)
        ref_s = min(_timed(run_ref) for _ in range(args.repeats))

    peak_jax, peak_torch = matmul_peak_jax(), matmul_peak_torch()
    ours_flops = sampler_flops(cfg, args.batch, shape.T, S, steps)
    ref_flops = sampler_flops(cfg, args.batch, shape.T, S, steps, as_reference=True)
    device = jax.devices()[0]
    result = {
        "benchmark": "sampler_latency",
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "shape": {"dim": args.dim, "heads": args.heads, "layers": args.layers, "card": args.card,
                  "T": shape.T, "batch": args.batch, "decoding_steps": steps, "cfg": True, "text_tokens": S},
        "ours_compile_plus_first_run_s": round(first, 3),
        "ours_s": round(ours_s, 3),
        "reference_s": None if ref_s is None else round(ref_s, 3),
        "ratio_ours_over_reference": None if ref_s is None else round(ours_s / ref_s, 3),
        "flops_ours_executes": ours_flops,
        "flops_reference_executes": ref_flops,
        "matmul_peak_gflops_jax": round(peak_jax / 1e9, 1),
        "matmul_peak_gflops_torch": round(peak_torch / 1e9, 1),
        "ours_achieved_gflops": round(ours_flops / ours_s / 1e9, 1),
        "ours_fraction_of_jax_peak": round(ours_flops / ours_s / peak_jax, 3),
        "reference_achieved_gflops": None if ref_s is None else round(ref_flops / ref_s / 1e9, 1),
        "reference_fraction_of_torch_peak": None if ref_s is None else round(ref_flops / ref_s / peak_torch, 3),
        "flop_formula": "magnet_jax/lm/flops.py",
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"sampler_{device.platform}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
